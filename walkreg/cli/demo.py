"""``walkreg demo``: the main job end to end on the bundled clip, offline."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from walkreg.cli.common import add_encoder_argument
from walkreg.demo import DEMO_CLIP, run_demo


DESCRIPTION = (
    "Edit a real clip frame by frame (a per-frame k-means palette and colour cast, which flickers), stabilise the "
    "edit with walkreg along the source's CRW correspondences, score both against the source, and write "
    "side_by_side.mp4 (source | per-frame edit | walkreg), source.mp4, per_frame_edit.mp4, walkreg.mp4, scores.json "
    "and HTML reports into --out. The scores are those walkreg score gives on the written files. The outputs are "
    "written together or not at all, and replace existing files of the same names. With --diffusion the per-frame "
    "edit is a real diffusion edit instead (SDEdit by the small model trained in this repository; needs "
    "walkreg[diffusers]) and walkreg's version is the same edit with latent propagation."
)
KEYS = ("consistency", "walk_back", "agreement", "flow_warp_error")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="walkreg-demo", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--clip", default=str(DEMO_CLIP), help="a video to use instead of the bundled clip (default: the bundled clip)"
    )
    add_encoder_argument(parser)
    parser.add_argument(
        "--frames", type=int, default=None, help="use only the first N frames of the clip (default: all)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the per-frame edit's palettes and colour casts, or of frame 0's noise with --diffusion "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--diffusion",
        action="store_true",
        help="edit with the bundled small diffusion model (img2img per frame), then with walkreg attached to it "
        "(default: the stylisation)",
    )


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    demo = run_demo
    if args.diffusion:
        try:
            demo = importlib.import_module("walkreg.pipelines.demo").run_diffusion_demo
        except ImportError as err:
            raise ValueError(f"`--diffusion` needs diffusers: pip install 'walkreg[diffusers]' ({err}).") from err
    result = demo(out, args.clip, args.encoder, args.frames, args.seed)
    keys = [k for k in KEYS if k in result.scores["walkreg"].overall]
    lines = [f"{'':<16}" + "".join(f"{k:>17}" for k in keys)]
    for name, score in result.scores.items():
        lines.append(f"{name:<16}" + "".join(f"{score.overall[k]:>17.4f}" for k in keys))
    lines.append(
        f"wrote {out / 'side_by_side.mp4'} (source | per-frame edit | walkreg), the clips, reports and scores.json"
    )
    lines.append(f"score them yourself: walkreg score {out / 'walkreg.mp4'} --source {out / 'source.mp4'}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
