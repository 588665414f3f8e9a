"""``walkreg stabilize``: remove flicker from a frame-by-frame edit along the source clip's motion."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from walkreg import atomic
from walkreg.cli.common import add_encoder_argument, add_overwrite_argument, finite_float, positive_float
from walkreg.features import create_features
from walkreg.progress import progress
from walkreg.stabilize import METHODS, StabilizeConfig, stabilize
from walkreg.video import check_clip_pair, iter_frames, write_video


DESCRIPTION = (
    "Average the edit's difference to the source, every frequency band, along the source clip's motion, both ways "
    "in time (CRW walks refined to the pixel by default, with cycle-consistency confidence); fine detail is held "
    "only where the source itself holds still along the motion. Streams with a fixed look-ahead. --out is written "
    "atomically, may not be an input, and replaces an existing file only with --overwrite."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = StabilizeConfig()
    parser.add_argument("--source", required=True, help="the unedited clip, a video file or frame folder (required)")
    parser.add_argument(
        "--edited", required=True, help="the per-frame edit, same length, size and frame rate as --source (required)"
    )
    parser.add_argument("--out", required=True, help="the stabilised video to write, an .mp4 file (required)")
    add_encoder_argument(parser)
    parser.add_argument(
        "--method",
        choices=METHODS,
        default=defaults.method,
        help="what carries the edit from frame to frame: crw (the encoder's walks, refined on the source pixels; "
        "no OpenCV needed), or the baselines flow (DIS optical flow, needs walkreg[flow]) and ema (no motion) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--strength",
        type=finite_float,
        default=defaults.strength,
        help="weight of each carried frame where the correspondence is confident, in [0, 1): the filter reaches "
        "about 1/(1-strength) frames each way; higher is steadier, 0 returns the edit (default: %(default)s)",
    )
    parser.add_argument(
        "--fps",
        type=positive_float,
        default=24.0,
        help="frame rate of the output when the edit is a frame folder (default: %(default)s)",
    )
    add_overwrite_argument(parser)


def check_out_path(out: str) -> None:
    """Refuse an ``--out`` that cannot be written, before any work: not an .mp4 name, an existing folder, or a
    missing parent folder that cannot be created (a file in the way, or a folder without write permission)."""
    path = Path(out)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"`--out` must be an .mp4 file, but is {out!r}.")
    if path.is_dir():
        raise ValueError(f"`--out` must be an .mp4 file, but {out!r} is an existing folder.")
    ancestor = path.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"`--out` {out!r} cannot be created: {str(ancestor)!r} is a file, not a folder.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"`--out` {out!r} cannot be created: the folder {str(ancestor)!r} is not writable.")


def run(args: argparse.Namespace) -> int:
    config = StabilizeConfig(method=args.method, strength=args.strength)
    check_out_path(args.out)
    atomic.check_outputs_differ({"--out": args.out}, {"--source": args.source, "--edited": args.edited})
    atomic.check_outputs_new({"--out": args.out}, args.overwrite)
    info = check_clip_pair(args.edited, args.source)
    num_frames = info.num_frames or None
    if num_frames == 1:
        raise ValueError(f"`--edited` {args.edited!r} has 1 frame; stabilising needs at least 2.")
    encoder = create_features(args.encoder) if config.method == "crw" else None
    fps = info.fps or args.fps
    frames = stabilize(iter_frames(args.source), iter_frames(args.edited), encoder, config)
    write_video(args.out, progress(frames, desc=f"stabilize ({config.method})", total=num_frames), fps=fps)
    sys.stdout.write(f"wrote {args.out}\n")
    return 0
