"""The demo: the main job end to end on the bundled clip, offline (``walkreg demo``, :func:`run_demo`).

A real clip (``walkreg/assets/demo.mp4``) gets a real per-frame edit that flickers: each frame is posterised to its
own k-means palette (seeded per frame, as an image editor or a per-frame diffusion pass would) with a small
per-frame colour cast. walkreg stabilises the edit along the source clip's CRW correspondences
(:func:`walkreg.stabilize.stabilize`), and both versions are scored against the source.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from walkreg import atomic
from walkreg.features import CachedFeatures, create_features
from walkreg.flow import DIS_MIN_SIZE
from walkreg.progress import progress
from walkreg.report import render_report
from walkreg.scoring import PREVIEW_FRAMES, SCHEMA, WORST_PAIRS, ScoreConfig, ScoreOutput, score_clips
from walkreg.stabilize import StabilizeConfig, stabilize
from walkreg.video import check_frame_size, probe_video, read_video, write_video


DEMO_CLIP = Path(__file__).parent / "assets" / "demo.mp4"
DEMO_OUTPUTS = ("source.mp4", "per_frame_edit.mp4", "walkreg.mp4", "side_by_side.mp4", "scores.json", "report.html",
                "report_per_frame_edit.html")  # fmt: skip


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
    """What :func:`run_demo` made: ``(T, 3, H, W)`` clips in [0, 1] as decoded from the files it wrote, the scores of
    both edits against the source, and the score config (what ``walkreg score`` gives on the same files)."""

    source: torch.Tensor
    edited: torch.Tensor
    stabilised: torch.Tensor
    scores: dict[str, ScoreOutput]
    config: ScoreConfig


def run_demo(
    out: str | os.PathLike,
    clip: str | os.PathLike = DEMO_CLIP,
    encoder_name: str = "default",
    frames: int | None = None,
    seed: int = 0,
) -> DemoResult:
    """The demo end to end, written into the folder ``out`` all or none (see :func:`produce_demo`): the per-frame
    edit is :func:`flickering_edit`, and walkreg's version is that edit stabilised along the source's
    correspondences (:func:`walkreg.stabilize.stabilize`)."""
    encoder = CachedFeatures(create_features(encoder_name))  # the source is stabilised, then scored

    def stabilised(source: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
        steps = stabilize(source, edited, encoder, StabilizeConfig())
        return torch.stack(list(progress(steps, desc="stabilize", total=len(source))))

    def edit(source: torch.Tensor) -> torch.Tensor:
        return flickering_edit(source, seed=seed)

    return produce_demo(out, clip, encoder, encoder_name, edit, stabilised, frames)


def produce_demo(
    out: str | os.PathLike,
    clip: str | os.PathLike,
    encoder,
    encoder_name: str,
    edit: Callable[[torch.Tensor], torch.Tensor],
    walkreg_edit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    frames: int | None = None,
    size: tuple[int, int] | None = None,
) -> DemoResult:
    """A demo's files, written into the folder ``out`` all or none.

    1. The first ``frames`` frames of ``clip`` (resized to ``size``) are written as ``source.mp4`` and
       ``edit(source)`` as ``per_frame_edit.mp4``.
    2. ``walkreg_edit(source, per_frame_edit)`` is written as ``walkreg.mp4``, and both edits are scored against the
       source with one shared source pass (:func:`walkreg.scoring.score_clips`, with the DIS-flow baseline when
       OpenCV is installed). Everything is computed from the files as written and decoded again, so ``walkreg score
       walkreg.mp4 --source source.mp4`` gives the same scores.
    3. ``side_by_side.mp4`` (source | per-frame edit | walkreg), ``scores.json`` and the HTML reports
       ``report.html`` (walkreg) and ``report_per_frame_edit.html``.

    Args:
        encoder: the features that score both edits (``(T, 3, H, W)`` clips in [0, 1] in, as for
            :func:`walkreg.scoring.score_clips`).
        edit: ``(T, 3, H, W)`` source -> the per-frame edit, same shape, in [0, 1].
        walkreg_edit: ``(source, per-frame edit)`` -> walkreg's version of the edit, same shape, in [0, 1].
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"`out` must be a folder, but {str(out)!r} is a file.")
    atomic.check_outputs_differ({f"out/{name}": out / name for name in DEMO_OUTPUTS}, {"clip": clip})
    info = probe_video(clip)
    check_frame_size("`clip`", clip, info)
    clip_frames = read_video(clip, max_frames=frames, size=size)
    if clip_frames.shape[0] < 2:
        raise ValueError(f"`clip` {str(clip)!r} needs at least 2 frames, but has {clip_frames.shape[0]}.")
    fps = info.fps or 15.0
    with_flow = importlib.util.find_spec("cv2") is not None and max(clip_frames.shape[-2:]) >= DIS_MIN_SIZE
    config = ScoreConfig(include_flow=with_flow, num_worst=WORST_PAIRS, preview_frames=PREVIEW_FRAMES)
    with atomic.output_set() as outputs:

        def written(name: str, video: torch.Tensor) -> torch.Tensor:
            return read_video(outputs.write(out / name, lambda tmp: write_video(tmp, video, fps=fps)))

        source = written("source.mp4", clip_frames)
        edited = written("per_frame_edit.mp4", edit(source))
        stabilised = written("walkreg.mp4", walkreg_edit(source, edited))
        scores = score_clips(
            {"per_frame_edit": edited, "walkreg": stabilised}, encoder, source, config, len(source), "score both edits"
        )
        side_by_side = torch.cat([source, edited, stabilised], dim=-1)
        outputs.write(out / "side_by_side.mp4", lambda tmp: write_video(tmp, side_by_side, fps=fps))
        bodies = {
            name: {
                "schema": SCHEMA,
                "edited": f"{name}.mp4",
                "source": "source.mp4",
                "clip": str(clip),
                "encoder": encoder_name,
                "fps": fps,
                "config": asdict(config),
                **score.to_dict(),
            }
            for name, score in scores.items()
        }
        outputs.write_text(out / "scores.json", json.dumps(bodies, indent=2) + "\n")
        outputs.write_text(out / "report.html", render_report(bodies["walkreg"], scores["walkreg"]))
        outputs.write_text(
            out / "report_per_frame_edit.html", render_report(bodies["per_frame_edit"], scores["per_frame_edit"])
        )
    return DemoResult(source, edited, stabilised, scores, config)
