"""``walkreg edit``: edit a video with a local Stable Diffusion directory, held together by CRW correspondences."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from walkreg import atomic
from walkreg.cli.common import (
    add_device_argument,
    add_overwrite_argument,
    finite_float,
    positive_float,
    resolve_device,
)
from walkreg.video import probe_video, read_video, write_video


DESCRIPTION = (
    "Edit SOURCE frame by frame with a local Stable Diffusion 1.x-style model directory (img2img, or InstructPix2Pix "
    "with the prompt as the instruction), propagating the denoised latents along the source video's CRW "
    "correspondences; writes OUT and prints its consistency score (walkreg score's headline, higher is more "
    "consistent). --out and --json may not be an input and replace existing files only with --overwrite."
)
PIPELINES = ("img2img", "instruct-pix2pix", "auto")
# model_index.json `_class_name`s that `--pipeline auto` reads as InstructPix2Pix (anything else is img2img)
INSTRUCT_CLASSES = ("StableDiffusionInstructPix2PixPipeline", "WalkRegInstructPix2PixPipeline")
DEFAULT_STRENGTH = 0.6
DEFAULT_IMAGE_GUIDANCE_SCALE = 1.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="the source video file or frame folder")
    parser.add_argument(
        "--model",
        required=True,
        help="a local diffusers model directory (model_index.json, unet/, vae/, ...) (required)",
    )
    parser.add_argument(
        "--pipeline",
        choices=PIPELINES,
        default="auto",
        help="how MODEL edits a frame: 'img2img' (noise the frame by --strength, then denoise), 'instruct-pix2pix' "
        "(start from noise conditioned on the frame; --prompt is the instruction) or 'auto': instruct-pix2pix when "
        "MODEL/model_index.json names StableDiffusionInstructPix2PixPipeline, else img2img (default: %(default)s)",
    )
    parser.add_argument(
        "--prompt",
        required=True,
        help="the text prompt for every frame; for instruct-pix2pix the edit instruction (required)",
    )
    parser.add_argument("--out", required=True, help="the edited video to write, an .mp4 file (required)")
    parser.add_argument(
        "--encoder",
        default=None,
        metavar="NAME_OR_DIR",
        help="the CRW encoder: a directory, 'default' (bundled), 'random-resnet18' or 'random-resnet18-small' "
        "(default: MODEL/crw_encoder if present, else the bundled encoder)",
    )
    parser.add_argument(
        "--negative-prompt", default=None, help="what the edit should not show, for every frame (default: none)"
    )
    parser.add_argument(
        "--strength",
        type=finite_float,
        default=None,
        help=f"img2img strength in (0, 1]: how much of each frame is re-synthesised (default: {DEFAULT_STRENGTH}); "
        "refused for instruct-pix2pix, which does not noise the frame but starts from noise conditioned on it",
    )
    parser.add_argument(
        "--image-guidance-scale",
        type=finite_float,
        default=None,
        help="instruct-pix2pix only: how closely each edited frame keeps to its source frame; below 1 turns "
        f"classifier-free guidance (text too) off (default: {DEFAULT_IMAGE_GUIDANCE_SCALE})",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=30,
        help="denoising steps of the full schedule, before img2img's strength cuts it (default: %(default)s)",
    )
    parser.add_argument(
        "--guidance-scale",
        type=finite_float,
        default=7.5,
        help="classifier-free guidance scale (default: %(default)s)",
    )
    parser.add_argument(
        "--walkreg-weight",
        type=finite_float,
        default=0.5,
        help="latent propagation weight in [0, 1]; 0 is the plain pipeline (default: %(default)s)",
    )
    parser.add_argument(
        "--guidance-weight",
        type=finite_float,
        default=0.0,
        help="step size of the walk-back guidance (latent features, cheap); 0 turns it off, 0.2 is its usual weight "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of frame 0's noise; frame i uses seed + i (default: %(default)s)"
    )
    parser.add_argument(
        "--size", default=None, help="resize frames to HxW, multiples of 8, e.g. 512x512 (default: the source size)"
    )
    parser.add_argument("--max-frames", type=int, default=None, help="edit at most this many frames (default: all)")
    parser.add_argument("--stride", type=int, default=1, help="use every N-th source frame (default: %(default)s)")
    parser.add_argument(
        "--fps",
        type=positive_float,
        default=None,
        help="frame rate of the output (default: the source's, divided by --stride)",
    )
    add_device_argument(parser)
    add_overwrite_argument(parser)
    parser.add_argument("--json", default=None, help="also write the scores to this JSON file (default: none)")


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
    from walkreg.features import create_features

    from .pipeline_walkreg_video_edit import ENCODER_FOLDER

    if spec is None:
        spec = str(model / ENCODER_FOLDER) if (model / ENCODER_FOLDER).is_dir() else "default"
    encoder = create_features(spec)
    if not isinstance(encoder, CRWEncoder):
        raise ValueError(
            f"`--encoder` must be an encoder directory, 'default' or a 'random-resnet18*' encoder, but is {spec!r}."
        )
    return encoder


def resolve_pipeline(choice: str, model: Path) -> str:
    """``--pipeline``: 'img2img' or 'instruct-pix2pix'; 'auto' reads ``_class_name`` in MODEL/model_index.json."""
    if choice != "auto":
        return choice
    try:
        index = json.loads((model / "model_index.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"`--model` {str(model)!r} is not a loadable diffusers directory: its model_index.json is not JSON "
            f"({err})."
        ) from None
    name = index.get("_class_name") if isinstance(index, dict) else None
    return "instruct-pix2pix" if name in INSTRUCT_CLASSES else "img2img"


def pipeline_settings(args: argparse.Namespace, kind: str) -> dict:
    """The call arguments that only one pipeline kind takes, checked: ``strength`` (img2img) or
    ``image_guidance_scale`` (instruct-pix2pix)."""
    if kind == "instruct-pix2pix":
        if args.strength is not None:
            raise ValueError(
                "`--strength` does not apply to --pipeline instruct-pix2pix (it starts from noise conditioned on "
                f"each frame instead of noising the frame), but is {args.strength}; leave it out."
            )
        scale = DEFAULT_IMAGE_GUIDANCE_SCALE if args.image_guidance_scale is None else args.image_guidance_scale
        return {"image_guidance_scale": scale}
    if args.image_guidance_scale is not None:
        raise ValueError(
            "`--image-guidance-scale` applies to --pipeline instruct-pix2pix only, but is "
            f"{args.image_guidance_scale} with img2img; leave it out."
        )
    strength = DEFAULT_STRENGTH if args.strength is None else args.strength
    if not 0 < strength <= 1:
        raise ValueError(f"`--strength` must be in (0, 1], but is {strength}.")
    return {"strength": strength}


def load_pipeline(kind: str, model: Path, encoder, device):
    """The walkreg pipeline of ``kind`` from the local directory ``model`` (imports Diffusers)."""
    if kind == "instruct-pix2pix":
        from .pipeline_walkreg_instruct_pix2pix import WalkRegInstructPix2PixPipeline as pipeline_class
    else:
        from .pipeline_walkreg_video_edit import WalkRegVideoEditPipeline as pipeline_class
    try:
        return pipeline_class.from_pretrained(model, crw_encoder=encoder).to(device)
    except (KeyError, AttributeError, TypeError, json.JSONDecodeError) as err:  # diffusers' errors on broken folders
        raise ValueError(
            f"`--model` {str(model)!r} is not a loadable diffusers directory: {type(err).__name__}: {err}"
        ) from err


def run(args: argparse.Namespace) -> int:
    import torch

    from walkreg.progress import progress

    model, out = Path(args.model), Path(args.out)
    if not (model / "model_index.json").is_file():
        raise ValueError(
            f"`--model` must be a local diffusers directory with model_index.json, but {str(model)!r} is not."
        )
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"`--out` must end in .mp4, but is {str(out)!r}.")
    atomic.check_outputs_differ({"--out": out, "--json": args.json}, {"SOURCE": args.source})
    atomic.check_outputs_new({"--out": out, "--json": args.json}, args.overwrite)
    if args.steps < 1:
        raise ValueError(f"`--steps` must be >= 1, but is {args.steps}.")
    kind = resolve_pipeline(args.pipeline, model)
    settings = pipeline_settings(args, kind)
    if args.guidance_weight < 0:
        raise ValueError(f"`--guidance-weight` must be >= 0, but is {args.guidance_weight}.")
    size = _parse_size(args.size)
    info = probe_video(args.source)
    frames = read_video(args.source, stride=args.stride, max_frames=args.max_frames, size=size)
    if size is None and (frames.shape[-2] % 8 or frames.shape[-1] % 8):
        raise ValueError(
            f"Frames of {args.source!r} are {tuple(frames.shape[-2:])}; pass `--size HxW` with multiples of 8."
        )
    device = resolve_device(args.device)
    encoder = _load_encoder(args.encoder, model)
    pipe = load_pipeline(kind, model, encoder, device)
    pipe.set_progress_bar_config(
        disable=os.environ.get("WALKREG_NO_PROGRESS", "") not in ("", "0"), desc="denoising", leave=False
    )
    generator = [torch.Generator(device="cpu").manual_seed(args.seed + i) for i in range(frames.shape[0])]
    result = pipe(
        video=frames,
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
        generator=generator,
        walkreg_weight=args.walkreg_weight,
        guidance_weight=args.guidance_weight,
        **settings,
    )
    fps = args.fps or (info.fps / args.stride if info.fps else 24.0)
    scores = {
        "source": str(args.source),
        "out": str(out),
        "num_frames": len(result.frames),
        "seed": args.seed,
        "pipeline": kind,
        **settings,
        "walkreg_weight": args.walkreg_weight,
        **result.consistency,
    }
    with atomic.output_set() as outputs:
        outputs.write(
            out,
            lambda tmp: write_video(tmp, progress(result.frames, desc="writing", total=len(result.frames)), fps=fps),
        )
        if args.json:
            outputs.write_text(args.json, json.dumps(scores, indent=2) + "\n")
    sys.stdout.write(f"{out}: {len(result.frames)} frames, consistency {result.consistency['consistency']:.4f}\n")
    return 0
