"""The demo: the main job end to end on the bundled clip, offline (``walkreg demo``).

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

import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from walkreg import atomic
from walkreg.features import create_features
from walkreg.progress import progress
from walkreg.scoring import SCHEMA, ScoreConfig, ScoreOutput, score_clip
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


@dataclass
class DemoResult:
    """What :func:`run_demo` made: ``(T, 3, H, W)`` clips in [0, 1], and the scores of both edits with their config."""

    source: torch.Tensor
    edited: torch.Tensor
    stabilised: torch.Tensor
    scores: dict[str, ScoreOutput]
    config: ScoreConfig


def run_demo(
    clip: str | os.PathLike, encoder_name: str = "default", frames: int | None = None, seed: int = 0
) -> DemoResult:
    """Edit ``clip`` frame by frame (:func:`flickering_edit`), stabilise the edit along the source's correspondences
    and score both edits against the source (with the flow baseline when OpenCV is installed)."""
    source = read_video(clip, max_frames=frames)
    if source.shape[0] < 2:
        raise ValueError(f"`clip` {str(clip)!r} needs at least 2 frames, but has {source.shape[0]}.")
    encoder = create_features(encoder_name)
    edited = flickering_edit(source, seed=seed)
    stabilised = torch.stack(
        list(progress(stabilize(source, edited, encoder, StabilizeConfig()), desc="stabilize", total=len(source)))
    )
    config = ScoreConfig(
        include_flow=importlib.util.find_spec("cv2") is not None, num_worst=6, preview_frames=len(source)
    )
    scores = {
        name: score_clip(video, encoder, source, config, num_frames=len(source), progress_desc=f"score {name}")
        for name, video in (("per_frame_edit", edited), ("walkreg", stabilised))
    }
    return DemoResult(source, edited, stabilised, scores, config)


def write_demo(out: str | os.PathLike, result: DemoResult, clip: str | os.PathLike, encoder_name: str) -> None:
    """Write the demo's videos, ``scores.json`` and (with matplotlib) its reports into ``out``, all or none."""
    out = Path(out)
    fps = probe_video(clip).fps or 15.0
    bodies = {
        name: {
            "schema": SCHEMA,
            "edited": f"{name}.mp4",
            "source": str(clip),
            "encoder": encoder_name,
            "fps": fps,
            "config": asdict(result.config),
            **score.to_dict(),
        }
        for name, score in result.scores.items()
    }
    side_by_side = torch.cat([result.source, result.edited, result.stabilised], dim=-1)
    with atomic.output_set() as outputs:
        outputs.write(out / "per_frame_edit.mp4", lambda tmp: write_video(tmp, result.edited, fps=fps))
        outputs.write(out / "walkreg.mp4", lambda tmp: write_video(tmp, result.stabilised, fps=fps))
        outputs.write(out / "side_by_side.mp4", lambda tmp: write_video(tmp, side_by_side, fps=fps))
        outputs.write_text(out / "scores.json", json.dumps(bodies, indent=2) + "\n")
        if importlib.util.find_spec("matplotlib") is not None:
            from walkreg.report import render_report

            outputs.write_text(out / "report.html", render_report(bodies["walkreg"], result.scores["walkreg"]))
            outputs.write_text(
                out / "report_per_frame_edit.html",
                render_report(bodies["per_frame_edit"], result.scores["per_frame_edit"]),
            )
