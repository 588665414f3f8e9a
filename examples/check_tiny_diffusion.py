"""The learned check of a model from ``train_tiny_diffusion.py``: has it learned, and does img2img flicker?

(a) On held-out DAVIS frames: the VAE's reconstruction error and the UNet's denoising loss at several timesteps,
    each against the same architecture with random weights.
(b) img2img (DDIM, ``--steps`` steps) of ``--frames`` consecutive frames of a held-out clip at each ``--strengths``,
    every frame with its own seed, written as a strip PNG to ``--out`` (rows: source, then one per strength;
    the random-weight UNet's outputs are measured too). For each strength it prints the mean frame-to-frame L1 of
    the outputs against the source's (a real model invents texture that differs frame to frame, so the outputs
    should change more than the source does) and how much the outputs resemble the source (L1, and L1 after an
    8x8 blur, which keeps the layout and drops the texture). Usage:

    OMP_NUM_THREADS=1 python examples/check_tiny_diffusion.py --out learned-check.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from tqdm.auto import tqdm
from train_tiny_diffusion import (
    CARD_BEGIN,
    CARD_END,
    DEFAULT_DATA,
    REPO,
    center_crops,
    format_learned_check,
    learned_check,
    load_davis_frames,
    random_copy,
)

from walkreg.pipelines.tiny_diffusion import load_tiny_diffusion
from walkreg.video import read_video


DEFAULT_MODEL = REPO / "pipelines" / "assets" / "tiny-diffusion"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the trained Diffusers directory")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (held-out DAVIS frames)")
    p.add_argument("--out", type=Path, required=True, help="where to write the strip PNG")
    p.add_argument("--clip", type=Path, default=None, help="held-out clip for the strip (default: DAVIS blackswan)")
    p.add_argument("--start", type=int, default=0, help="first frame of the strip")
    p.add_argument("--frames", type=int, default=4, help="consecutive frames in the strip")
    p.add_argument("--size", type=int, nargs=2, default=(64, 112), metavar=("H", "W"), help="frame size (x16)")
    p.add_argument("--strengths", type=float, nargs="+", default=(0.4, 0.55, 0.7), help="img2img strengths")
    p.add_argument("--steps", type=int, default=20, help="DDIM inference steps")
    p.add_argument("--seed", type=int, default=0, help="frame i uses seed + i")
    p.add_argument("--scale", type=int, default=3, help="nearest-neighbour upscaling of the strip PNG")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--card", action="store_true", help="write the numbers into the model's README.md")
    args = p.parse_args(argv)
    if args.clip is None:
        args.clip = args.data / "davis" / "JPEGImages" / "480p" / "blackswan"
    for name, value, ok, rule in (
        ("--size", args.size, all(s >= 16 and s % 16 == 0 for s in args.size), "two multiples of 16"),
        ("--frames", args.frames, args.frames >= 2, ">= 2"),
        ("--start", args.start, args.start >= 0, ">= 0"),
        ("--strengths", args.strengths, all(0 < s <= 1 for s in args.strengths), "in (0, 1]"),
        ("--steps", args.steps, args.steps >= 1, ">= 1"),
        ("--scale", args.scale, args.scale >= 1, ">= 1"),
        ("--threads", args.threads, args.threads >= 1, ">= 1"),
    ):
        if not ok:
            raise SystemExit(f"error: `{name}` must be {rule}, but is {value}.")
    if not (args.model / "model_index.json").is_file():
        raise SystemExit(
            f"error: `--model` must be a Diffusers directory, but {str(args.model)!r} has no model_index.json."
        )
    return args


def img2img(pipe, frames: torch.Tensor, embeds: torch.Tensor, strength: float, steps: int, seed: int) -> torch.Tensor:
    """Edit ``frames`` ``(F, 3, H, W)`` in [0, 1], frame i with seed ``seed + i``, no guidance: ``(F, 3, H, W)``."""
    n = len(frames)
    return pipe(
        image=frames,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=1.0,
        generator=[torch.Generator().manual_seed(seed + i) for i in range(n)],
        output_type="pt",
        prompt_embeds=embeds.expand(n, -1, -1),
        negative_prompt_embeds=embeds.expand(n, -1, -1),
    ).images.float()


def frame_to_frame(frames: torch.Tensor) -> float:
    """Mean absolute difference between consecutive frames of ``(F, 3, H, W)``."""
    return (frames[1:] - frames[:-1]).abs().mean().item()


def resemblance(out: torch.Tensor, source: torch.Tensor) -> dict:
    """L1 of ``out`` to ``source`` (both ``(F, 3, H, W)`` in [0, 1]) at full resolution and after an 8x8 blur."""
    return {
        "l1": (out - source).abs().mean().item(),
        "l1_blur8": (F.avg_pool2d(out, 8) - F.avg_pool2d(source, 8)).abs().mean().item(),
    }


@torch.no_grad()
def flicker_check(pipe, random_unet, embeds: torch.Tensor, frames: torch.Tensor, args) -> tuple[dict, list]:
    """Run img2img at every strength with the trained and the random-weight UNet; return the numbers and the
    strip rows (``(F, 3, H, W)`` tensors: source, VAE round trip, then the trained outputs per strength)."""
    latents = pipe.vae.encode(frames * 2 - 1).latent_dist.mean
    roundtrip = (pipe.vae.decode(latents).sample / 2 + 0.5).clamp(0, 1)
    numbers = {
        "source_frame_to_frame": frame_to_frame(frames),
        "vae_roundtrip_frame_to_frame": frame_to_frame(roundtrip),
        "vae_roundtrip": resemblance(roundtrip, frames),
        "strengths": {},
    }
    rows = [frames, roundtrip]
    trained_unet = pipe.unet
    for strength in tqdm(args.strengths, desc="img2img", unit="strength"):
        entry = {}
        for name, unet in (("trained", trained_unet), ("random", random_unet)):
            pipe.unet = unet
            out = img2img(pipe, frames, embeds, strength, args.steps, args.seed)
            entry[name] = {"frame_to_frame": frame_to_frame(out), **resemblance(out, frames)}
            if name == "trained":
                rows.append(out)
        numbers["strengths"][strength] = entry
    pipe.unet = trained_unet
    return numbers, rows


def write_strip(path: Path, rows: list[torch.Tensor], labels: list[str], scale: int) -> None:
    """A PNG grid: one row per ``(F, 3, H, W)`` tensor in [0, 1], frames left to right, a label column on the left."""
    grid = torch.cat([torch.cat(list(row), dim=2) for row in rows], dim=1)  # (3, R*H, F*W)
    image = Image.fromarray((grid.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    margin, row_height = 90, image.height // len(rows)
    canvas = Image.new("RGB", (image.width + margin, image.height), "white")
    canvas.paste(image, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(labels):
        draw.text((4, i * row_height + row_height // 2 - 6), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def format_flicker(numbers: dict, clip: str, args) -> str:
    """Markdown table of :func:`flicker_check`'s numbers."""
    lines = [
        f"img2img of {args.frames} consecutive frames of `{clip}` at {args.size[0]}x{args.size[1]}, DDIM "
        f"{args.steps} steps, frame i with seed {args.seed} + i, no guidance. Frame-to-frame = mean |frame t - "
        f"frame t-1| (pixels in [0, 1]); source: {numbers['source_frame_to_frame']:.4f}, VAE round trip: "
        f"{numbers['vae_roundtrip_frame_to_frame']:.4f} (round-trip L1 to source "
        f"{numbers['vae_roundtrip']['l1']:.4f}).",
        "",
        "| strength | frame-to-frame (x source) | L1 to source | L1 to source, 8x8 blur | random UNet: frame-to-frame"
        " / L1 / blurred L1 |",
        "|---|---|---|---|---|",
    ]
    src = numbers["source_frame_to_frame"]
    for strength, entry in numbers["strengths"].items():
        t, r = entry["trained"], entry["random"]
        lines.append(
            f"| {strength} | {t['frame_to_frame']:.4f} ({t['frame_to_frame'] / src:.2f}x) | {t['l1']:.4f} | "
            f"{t['l1_blur8']:.4f} | {r['frame_to_frame']:.4f} / {r['l1']:.4f} / {r['l1_blur8']:.4f} |"
        )
    return "\n".join(lines)


def update_card(model: Path, text: str) -> None:
    """Replace the learned-check section of ``model/README.md`` (between its markers) with ``text``."""
    card_path = model / "README.md"
    card = card_path.read_text()
    if CARD_BEGIN not in card or CARD_END not in card:
        raise SystemExit(f"error: `--card` needs {card_path} to contain {CARD_BEGIN} and {CARD_END}, but it does not.")
    head, rest = card.split(CARD_BEGIN, 1)
    card_path.write_text(f"{head}{CARD_BEGIN}\n{text}\n{CARD_END}{rest.split(CARD_END, 1)[1]}")


def main(argv: list[str] | None = None) -> None:
    """Run both checks, print them, write the strip and, with ``--card``, the model card section."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe, kwargs = load_tiny_diffusion(path=args.model)
    embeds = kwargs["prompt_embeds"]  # (1, 1, D)
    held_out = center_crops(load_davis_frames(args.data, 64, stride=8), 64) if (args.data / "davis").is_dir() else None
    sections = []
    if held_out is not None:
        check = learned_check(pipe.vae, pipe.unet, pipe.scheduler, held_out)
        sections.append(format_learned_check(check))
    frames = read_video(args.clip, max_frames=args.start + args.frames, size=tuple(args.size))[args.start :]
    if len(frames) < args.frames:
        raise SystemExit(f"error: `--clip` must have >= {args.start + args.frames} frames, but {args.clip} has fewer.")
    numbers, rows = flicker_check(pipe, random_copy(pipe.unet), embeds, frames, args)
    clip = args.clip.relative_to(args.data).as_posix() if args.clip.is_relative_to(args.data) else args.clip.name
    sections.append(format_flicker(numbers, clip, args))
    labels = ["source", "VAE round trip"] + [f"strength {s}" for s in args.strengths]
    write_strip(args.out, rows, labels, args.scale)
    text = "\n\n".join(sections)
    print(text)
    print(json.dumps(numbers, indent=1))
    print(f"strip: {args.out}")
    if args.card:
        write_strip(args.model / "learned-check.png", rows, labels, 2)  # small: it is a fixture
        update_card(args.model, f"{text}\n\n![img2img strip](learned-check.png)\n\nRows: {', '.join(labels)}.")


if __name__ == "__main__":
    main()
