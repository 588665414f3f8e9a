"""``walkreg edit``: edit a video with a local Stable Diffusion directory, held together by CRW correspondences."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from walkreg.atomic import write_text_atomic
from walkreg.video import probe_video, read_video, write_video


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "edit",
        help="edit a video with Stable Diffusion img2img + walkreg propagation, and score its consistency",
        description=(
            "Edit SOURCE frame by frame with a local Stable Diffusion 1.x-style model directory, propagating the "
            "denoised latents along the source video's CRW correspondences; writes OUT and prints its consistency "
            "score (walkreg score's headline, higher is more consistent)."
        ),
    )
    parser.add_argument("source", help="source video file or frame folder")
    parser.add_argument("--model", required=True, help="local diffusers model directory (model_index.json, unet/, vae/, ...)")
    parser.add_argument("--prompt", required=True, help="text prompt for every frame")
    parser.add_argument("--out", required=True, help="edited video to write (.mp4)")
    parser.add_argument("--encoder", default=None, help="CRW encoder directory (default: MODEL/crw_encoder if present, else the bundled encoder), or 'default', 'random', 'random-small'")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--strength", type=float, default=0.6, help="img2img strength in (0, 1] (default 0.6)")
    parser.add_argument("--steps", type=int, default=30, help="denoising steps before strength (default 30)")
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--walkreg-weight", type=float, default=0.5, help="latent propagation weight in [0, 1]; 0 = plain img2img")
    parser.add_argument("--guidance-weight", type=float, default=0.0, help="walk-back guidance step (costly; 0 = off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default=None, help="resize frames to HxW (multiples of 8), e.g. 512x512")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--fps", type=float, default=None, help="output frame rate (default: the source's)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--json", default=None, help="also write the scores to this JSON file")
    parser.set_defaults(func=run)


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"`--size` must look like HxW (e.g. 512x512), but is {text!r}.") from None
    if height <= 0 or width <= 0 or height % 8 or width % 8:
        raise ValueError(f"`--size` must be positive multiples of 8, but is {text!r}.")
    return height, width


def _load_encoder(spec: str | None, model: Path):
    from walkreg.encoder import CRWEncoder
    from walkreg.scoring import load_encoder

    from .pipeline_walkreg_video_edit import ENCODER_FOLDER

    if spec is None:
        spec = str(model / ENCODER_FOLDER) if (model / ENCODER_FOLDER).is_dir() else "default"
    encoder = load_encoder(spec)
    if not isinstance(encoder, CRWEncoder):
        raise ValueError(f"`--encoder` must be a CRW encoder directory, 'default', 'random' or 'random-small', but is {spec!r}.")
    return encoder


def run(args: argparse.Namespace) -> int:
    import torch

    from walkreg.progress import progress

    from .pipeline_walkreg_video_edit import WalkRegVideoEditPipeline

    model, out = Path(args.model), Path(args.out)
    if not (model / "model_index.json").is_file():
        raise ValueError(f"`--model` must be a local diffusers directory with model_index.json, but {str(model)!r} is not.")
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"`--out` must end in .mp4, but is {str(out)!r}.")
    if args.steps < 1:
        raise ValueError(f"`--steps` must be >= 1, but is {args.steps}.")
    size = _parse_size(args.size)
    info = probe_video(args.source)
    frames = read_video(args.source, stride=args.stride, max_frames=args.max_frames, size=size)
    if size is None and (frames.shape[-2] % 8 or frames.shape[-1] % 8):
        raise ValueError(f"Frames of {args.source!r} are {tuple(frames.shape[-2:])}; pass `--size HxW` with multiples of 8.")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder = _load_encoder(args.encoder, model)
    pipe = WalkRegVideoEditPipeline.from_pretrained(model, crw_encoder=encoder).to(device)
    pipe.set_progress_bar_config(disable=os.environ.get("WALKREG_NO_PROGRESS", "") not in ("", "0"), desc="denoising", leave=False)
    generator = [torch.Generator(device="cpu").manual_seed(args.seed + i) for i in range(frames.shape[0])]
    result = pipe(
        video=frames, prompt=args.prompt, negative_prompt=args.negative_prompt, strength=args.strength,
        num_inference_steps=args.steps, guidance_scale=args.guidance_scale, generator=generator,
        walkreg_weight=args.walkreg_weight, guidance_weight=args.guidance_weight,
    )
    fps = args.fps or (info.fps / args.stride if info.fps else 24.0)
    write_video(out, progress(result.frames, desc="writing", total=len(result.frames)), fps=fps)
    scores = {"source": str(args.source), "out": str(out), "num_frames": len(result.frames), "seed": args.seed,
              "strength": args.strength, "walkreg_weight": args.walkreg_weight, **result.consistency}
    if args.json:
        write_text_atomic(args.json, json.dumps(scores, indent=2) + "\n")
    sys.stdout.write(f"{out}: {len(result.frames)} frames, consistency {result.consistency['consistency']:.4f}\n")
    return 0
