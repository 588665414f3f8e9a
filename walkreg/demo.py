"""``walkreg demo``: the main job end to end on the bundled clip, offline, in about a minute on a CPU.

1. A real clip (``walkreg/assets/demo.mp4``) gets a real per-frame edit that flickers: each frame is posterised to
   its own k-means palette (seeded per frame, as an image editor or a per-frame diffusion pass would) with a small
   per-frame colour cast.
2. walkreg stabilises the edit along the source clip's CRW correspondences (:func:`walkreg.stabilize.stabilize`).
3. Both versions are scored against the source (:func:`walkreg.scoring.score_clip`, plus the OpenCV flow baseline
   when OpenCV is installed).
4. Outputs in ``--out``: ``side_by_side.mp4`` (source | per-frame edit | walkreg), ``per_frame_edit.mp4``,
   ``walkreg.mp4``, ``scores.json`` and the HTML reports ``report.html`` (walkreg) and ``report_per_frame_edit.html``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from walkreg.atomic import write_text_atomic
from walkreg.progress import progress
from walkreg.scoring import SCHEMA, ScoreConfig, load_encoder, score_clip
from walkreg.stabilize import StabilizeConfig, stabilize
from walkreg.video import probe_video, read_video, write_video


DEMO_CLIP = Path(__file__).parent / "assets" / "demo.mp4"


def posterize(frame: torch.Tensor, colours: int, generator: torch.Generator, iterations: int = 8) -> torch.Tensor:
    """Replace every pixel of ``(3, H, W)`` by the nearest of ``colours`` k-means colours of this frame alone.

    The palette starts from pixels drawn with ``generator``, so each frame lands on its own palette: a real
    stylisation that is faithful per frame and flickers over time.
    """
    pixels = frame.flatten(1).t()  # (H*W, 3)
    sample = pixels[torch.randint(0, pixels.shape[0], (4096,), generator=generator)]
    palette = sample[torch.randperm(sample.shape[0], generator=generator)[:colours]].clone()
    for _ in range(iterations):
        nearest = torch.cdist(sample, palette).argmin(1)
        for c in range(colours):
            members = sample[nearest == c]
            if len(members):
                palette[c] = members.mean(0)
    return palette[torch.cdist(pixels, palette).argmin(1)].t().reshape(frame.shape)


def flickering_edit(frames: torch.Tensor, colours: int = 6, cast: float = 0.06, seed: int = 0) -> torch.Tensor:
    """``(T, 3, H, W)`` -> the same frames posterised per frame with a random per-frame colour cast of ``cast``."""
    generator = torch.Generator().manual_seed(seed)
    edited = []
    for frame in progress(frames, desc="per-frame edit"):
        gain = 1 + cast * (2 * torch.rand(3, 1, 1, generator=generator) - 1)
        edited.append((posterize(frame, colours, generator) * gain).clamp(0, 1))
    return torch.stack(edited)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    source = read_video(args.clip, max_frames=args.frames)
    if source.shape[0] < 2:
        raise ValueError(f"`--clip` {str(args.clip)!r} needs at least 2 frames, but has {source.shape[0]}.")
    fps = probe_video(args.clip).fps or 15.0
    encoder = load_encoder(args.encoder)
    edited = flickering_edit(source, seed=args.seed)
    stabilised = torch.stack(list(progress(stabilize(source, edited, encoder, StabilizeConfig()), desc="stabilize", total=len(source))))

    include_flow = importlib.util.find_spec("cv2") is not None
    config = ScoreConfig(include_flow=include_flow, num_worst=6, preview_frames=len(source))
    scores = {name: score_clip(clip, encoder, source, config, num_frames=len(source), progress_desc=f"score {name}")
              for name, clip in (("per_frame_edit", edited), ("walkreg", stabilised))}

    out.mkdir(parents=True, exist_ok=True)
    write_video(out / "per_frame_edit.mp4", edited, fps=fps)
    write_video(out / "walkreg.mp4", stabilised, fps=fps)
    write_video(out / "side_by_side.mp4", torch.cat([source, edited, stabilised], dim=-1), fps=fps)
    bodies = {name: {"schema": SCHEMA, "edited": f"{name}.mp4", "source": str(args.clip), "encoder": str(args.encoder),
                     "fps": fps, "config": asdict(config), **score.to_dict()} for name, score in scores.items()}
    write_text_atomic(out / "scores.json", json.dumps(bodies, indent=2) + "\n")
    if importlib.util.find_spec("matplotlib") is not None:
        from walkreg.report import write_report

        write_report(out / "report.html", bodies["walkreg"], scores["walkreg"])
        write_report(out / "report_per_frame_edit.html", bodies["per_frame_edit"], scores["per_frame_edit"])

    keys = [k for k in ("consistency", "walk_back", "agreement", "flow_warp_error") if k in scores["walkreg"].overall]
    lines = [f"{'':<16}" + "".join(f"{k:>17}" for k in keys)]
    for name, score in scores.items():
        lines.append(f"{name:<16}" + "".join(f"{score.overall[k]:>17.4f}" for k in keys))
    lines.append(f"wrote {out / 'side_by_side.mp4'} (source | per-frame edit | walkreg), reports and scores.json in {out}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="edit the bundled clip frame by frame, stabilise it with walkreg, score and report both",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--out", default="walkreg-demo", help="output folder (default: ./walkreg-demo)")
    parser.add_argument("--clip", default=str(DEMO_CLIP), help="a video to use instead of the bundled clip")
    parser.add_argument("--encoder", default="default", help="encoder directory, 'default' (bundled), 'random' or 'pixels'")
    parser.add_argument("--frames", type=int, default=None, help="use only the first N frames")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-frame edit")
    parser.set_defaults(func=run)
