"""Temporal-consistency scores of an edited clip from CRW walks, streaming, with an optional source clip.

Every score is given per frame pair ``(t, t+1)`` and overall (the mean over pairs). All lie in ``[0, 1]`` and
**higher means more consistent**:

- ``walk_back`` (edited clip only): palindrome walks ``t -> t+1 -> ... -> t+k -> ... -> t`` for ``k < window``
  over the edited clip's own transitions; the score is the probability mass that comes home (within
  ``home_radius`` feature cells). Each step is *leaky*: a walker stepping between cells whose mean colours differ
  by ``d`` (mean absolute difference, colours in [0, 1]) survives with probability ``exp(-d / colour_scale)``.
  Without the leak a softmax walk is blind to global colour or brightness flicker (every affinity of a row moves
  together and the softmax cancels it).
- ``fidelity`` (needs the source): the edited frame ``t`` is carried along the *source* transitions onto frame
  ``t+1`` and compared with the edited frame ``t+1``, relative to the source carried the same way: what is
  carried is the edit's residual ``edited - source`` (values: ``sub_cells x sub_cells`` colours of every 8x8
  cell, by default every pixel, so a per-pixel texture flicker counts in full), so an unedited clip scores
  exactly 1 however it moves and the resampling blur of the walk cancels.
  ``fidelity = exp(-error / colour_scale)`` with ``error`` the confidence-weighted mean absolute difference
  (also reported as ``fidelity_error``, [0, 1], lower is better). The confidence of a source cell is its
  forward-backward cycle consistency: the mass of the source walk ``t+1 -> t -> t+1`` that comes home, so
  occluded and disoccluded cells count little.
- ``agreement`` (needs the source): the walk goes ``t+1 -> t`` on the edited clip and back ``t -> t+1`` on the
  source; the home-coming mass divided by the source's own round trip (clipped to [0, 1]). It drops when the
  edit's correspondences disagree with the source motion (frozen, shuffled or re-textured content).
- ``consistency``: the headline score, ``fidelity`` with a source and ``walk_back`` without one.

A static clip cannot game the scores with a source: a frozen edit of a moving source is carried along the
source motion and no longer matches (low ``fidelity``) and its walks disagree with the source's (low
``agreement``); a static source makes the carried frame a plain copy, so any flicker shows in ``fidelity``.
Without a source, ``walk_back`` can only say that the edit is stable, not that it follows any motion.

Beside the CRW scores, ``flow_warp_error`` (``include_flow=True``, needs OpenCV) is the classical baseline of
Lai et al. (2018): DIS optical flow on the source (or on the edit when no source is given), edited frame ``t``
warped onto ``t+1``, forward-backward occlusion check, mean absolute error in [0, 1] (**lower** is better).
"""

from __future__ import annotations

import heapq
import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from walkreg.cells import cell_colours, cell_values
from walkreg.flow import flow_warp_error
from walkreg.progress import progress
from walkreg.video import check_clip_pair, iter_frames, probe_video
from walkreg.walks import WalkConfig, home_mass, leaky


SCHEMA = "walkreg.score/1"
BATCH_SCHEMA = "walkreg.score-batch/1"


@dataclass
class ScoreConfig:
    """Hyper-parameters of :func:`score_clip`.

    Attributes:
        window: frames per palindrome window for ``walk_back`` (``>= 2``; 3 walks ``t->t+1->t`` and ``t->t+2->t``);
            the work per cell grows as ``top_k ** (window - 1)``.
        temperature: softmax temperature on cosine affinities.
        radius: a step may reach cells strictly closer than this, in feature cells.
        top_k: transitions kept per cell.
        home_radius: a walk is home when it ends strictly closer than this to its start, in cells.
        colour_scale: colour difference (mean absolute, [0, 1] scale) that costs a factor ``e`` of score.
        sub_cells: colour blocks per cell side carried for ``fidelity`` (1, 2, 4 or 8; 8 is every pixel: coarser
            blocks average away part of a per-pixel texture flicker).
        include_flow: also compute the DIS ``flow_warp_error`` baseline (needs OpenCV).
        num_worst: worst frame pairs kept with thumbnails and heat maps for the report (0: none).
        preview_frames: at most this many frames kept (evenly spaced) for the report's heat-map animation.
        preview_width: thumbnail width in pixels.
    """

    window: int = 3
    temperature: float = 0.05
    radius: float = 6.0
    top_k: int = 8
    home_radius: float = 1.5
    colour_scale: float = 0.05
    sub_cells: int = 8
    include_flow: bool = False
    num_worst: int = 0
    preview_frames: int = 0
    preview_width: int = 240

    def __post_init__(self):
        if self.window < 2:
            raise ValueError(f"`window` must be >= 2 frames, but is {self.window}.")
        if not self.colour_scale > 0:
            raise ValueError(f"`colour_scale` must be > 0, but is {self.colour_scale}.")
        if self.sub_cells not in (1, 2, 4, 8):
            raise ValueError(f"`sub_cells` must be 1, 2, 4 or 8, but is {self.sub_cells}.")
        WalkConfig(self.temperature, self.radius, self.top_k, self.home_radius)  # checks them

    @property
    def walk(self) -> WalkConfig:
        """The step and home-coming hyper-parameters of the scoring walks."""
        return WalkConfig(self.temperature, self.radius, self.top_k, self.home_radius)


@dataclass
class PairView:
    """Thumbnails of one frame pair for the report: ``frames`` ``(2, 3, h, w)`` and ``heat`` ``(h, w)`` in [0, 1]."""

    index: int
    score: float
    frames: torch.Tensor
    heat: torch.Tensor


@dataclass
class ScoreOutput:
    """Result of :func:`score_clip`. ``pairs[t]`` scores frames ``(t, t+1)``; ``overall`` averages the pairs.

    Keys of ``overall`` and of every pair: ``consistency``, ``walk_back``, and with a source ``fidelity``,
    ``fidelity_error``, ``agreement``; with ``include_flow`` also ``flow_warp_error``.
    """

    num_frames: int
    has_source: bool
    overall: dict[str, float]
    pairs: list[dict[str, float]]
    worst: list[PairView] = field(default_factory=list)
    preview: list[PairView] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON body (see ``docs``: schema ``walkreg.score/1``) without thumbnails."""
        order = sorted(range(len(self.pairs)), key=lambda t: self.pairs[t]["consistency"])
        return {
            "num_frames": self.num_frames,
            "has_source": self.has_source,
            "overall": self.overall,
            "worst_pairs": order[:10],
            "pairs": self.pairs,
        }


class _PairStream:
    """Frames of one clip with their features and cell values; the encoder may read a few frames ahead, which
    wait in a small buffer (memory stays at the encoder's chunk size)."""

    def __init__(self, frames: Iterable[torch.Tensor], encoder, config: ScoreConfig):
        self.buffer: deque = deque()
        self.features = encoder.iter_features(self._fill(frames))
        self.config = config

    def _fill(self, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for frame in frames:
            self.buffer.append(frame)
            yield frame

    def __iter__(self):
        for feats in self.features:
            frame = self.buffer.popleft()
            yield frame, feats, cell_values(frame, self.config.sub_cells).to(feats.device)


def _thumbnail(image: torch.Tensor, width: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    size = (max(1, round(h * width / w)), width)
    return F.interpolate(image[None], size=size, mode="area")[0]


@torch.no_grad()
def score_clip(
    edited: Iterable[torch.Tensor],
    encoder,
    source: Iterable[torch.Tensor] | None = None,
    config: ScoreConfig | None = None,
    num_frames: int | None = None,
    progress_desc: str | None = None,
) -> ScoreOutput:
    """Score the temporal consistency of an edited clip, streaming frame by frame.

    Args:
        edited: ``(3, H, W)`` frames in [0, 1] (an iterable, e.g. :func:`walkreg.video.iter_frames`, or a
            ``(T, 3, H, W)`` tensor).
        encoder: anything with ``iter_features`` (see :func:`walkreg.features.create_features`).
        source: the unedited clip, same length and size, or ``None``.
        config: :class:`ScoreConfig`.
        num_frames: expected length (for the progress bar and the preview spacing), if known.

    Returns:
        :class:`ScoreOutput`. Memory depends on ``window`` and the frame size, not on the clip length.
    """
    cfg = config or ScoreConfig()
    edit_stream = iter(_PairStream(edited, encoder, cfg))
    source_stream = iter(_PairStream(source, encoder, cfg)) if source is not None else None
    preview_every = max(1, math.ceil((num_frames or 1) / cfg.preview_frames)) if cfg.preview_frames else 0
    steps: deque = deque(maxlen=cfg.window - 1)  # (forward, backward) leaky steps of the latest pairs
    returns: dict[int, list[float]] = {}
    pairs: list[dict[str, float]] = []
    worst: list = []  # heap of (-score, index, PairView)
    preview: list[PairView] = []
    prev = None
    bar = progress(total=num_frames, desc=progress_desc or "score")
    t = -1
    for t, (frame, feats, values) in enumerate(edit_stream):
        src = next(source_stream, None) if source_stream is not None else None
        if source_stream is not None and src is None:
            raise ValueError(
                f"`source` ended after {t} frames, but `edited` has more; both must have the same length."
            )
        if src is not None and src[0].shape != frame.shape:
            raise ValueError(
                f"`source` frame {t} is {tuple(src[0].shape)}, but the edited frame is {tuple(frame.shape)}."
            )
        current = (frame, feats, values, cell_colours(values), src)
        if prev is not None:
            pair, heat = _score_pair(prev, current, steps, returns, cfg, t - 1)
            pairs.append(pair)
            view_score = pair["consistency"]
            if cfg.num_worst and (len(worst) < cfg.num_worst or -worst[0][0] > view_score):
                view = PairView(
                    t - 1,
                    view_score,
                    torch.stack([_thumbnail(prev[0], cfg.preview_width), _thumbnail(frame, cfg.preview_width)]),
                    _thumbnail(heat[None], cfg.preview_width)[0],
                )
                heapq.heappush(worst, (-view_score, t - 1, view))
                if len(worst) > cfg.num_worst:
                    heapq.heappop(worst)
            if preview_every and (t - 1) % preview_every == 0:
                preview.append(
                    PairView(
                        t - 1,
                        view_score,
                        _thumbnail(prev[0], cfg.preview_width)[None],
                        _thumbnail(heat[None], cfg.preview_width)[0],
                    )
                )
        prev = current
        bar.update(1)
    bar.close()
    if source_stream is not None and next(source_stream, None) is not None:
        raise ValueError(f"`source` has more frames than `edited` ({t + 1}); both must have the same length.")
    if t + 1 < 2:
        raise ValueError(f"`edited` must have at least 2 frames to score consistency, but has {t + 1}.")
    for start, masses in returns.items():
        pairs[start]["walk_back"] = float(np.mean(masses))
        if source is None:
            pairs[start]["consistency"] = pairs[start]["walk_back"]
    overall = {key: float(np.mean([p[key] for p in pairs])) for key in pairs[0]}
    return ScoreOutput(
        t + 1, source is not None, overall, pairs, [v for _, _, v in sorted(worst, key=lambda item: -item[0])], preview
    )


def _score_pair(prev, current, steps, returns, cfg: ScoreConfig, index: int) -> tuple[dict[str, float], torch.Tensor]:
    """Scores of pair ``index`` and its ``(h, w)`` inconsistency heat map (in [0, 1], 1 = inconsistent)."""
    _, f0, v0, c0, src0 = prev
    _, f1, v1, c1, src1 = current
    h, w = f1.shape[-2:]
    walk = cfg.walk
    backward = walk.step(f1, f0)  # plain: reused by `agreement`
    steps.append((leaky(walk.step(f0, f1), c0, c1, cfg.colour_scale), leaky(backward, c1, c0, cfg.colour_scale)))
    # palindromes that turn at this new frame: one per start frame still inside the window
    for depth in range(1, len(steps) + 1):
        chosen = list(steps)[-depth:]
        mass = home_mass([fwd for fwd, _ in chosen], [bwd for _, bwd in reversed(chosen)], w, cfg.home_radius)
        returns.setdefault(index + 1 - depth, []).append(float(mass.mean()))
        if depth == 1:
            heat = 1 - mass.view(h, w)
    pair = {"consistency": 0.0, "walk_back": 0.0}
    if src0 is not None:
        s_f0, s_f1 = src0[1], src1[1]
        back = walk.step(s_f1, s_f0)  # source t+1 -> t: carries frame t onto frame t+1
        there = walk.step(s_f0, s_f1)
        confidence = home_mass([back], [there], w, cfg.home_radius)
        # the edit's residual over the source, carried t -> t+1: zero for an unedited clip, whatever the motion
        residual0, residual1 = v0 - src0[2], (v1 - src1[2]).flatten(2)  # (1, L, h, w), (1, L, N)
        error_map = (back.apply(residual0.flatten(2)) - residual1).abs().mean(1)[0]
        error = float((error_map * confidence).sum() / confidence.sum().clamp_min(1e-8))
        mixed = home_mass([backward], [there], w, cfg.home_radius)
        agreement = float(mixed.mean() / confidence.mean().clamp_min(1e-8))
        pair.update(fidelity=math.exp(-error / cfg.colour_scale), fidelity_error=error, agreement=min(1.0, agreement))
        pair["consistency"] = pair["fidelity"]
        heat = 1 - torch.exp(-error_map / cfg.colour_scale).view(h, w)
    if cfg.include_flow:
        guide = (src0[0], src1[0]) if src0 is not None else (prev[0], current[0])
        pair["flow_warp_error"] = flow_warp_error(guide, (prev[0], current[0]))
    return pair, heat


def score_files(
    edited: str | os.PathLike, source: str | os.PathLike | None, encoder, config: ScoreConfig, encoder_name: str
) -> tuple[dict, ScoreOutput]:
    """:func:`score_clip` of a video file or frame folder (and its source), streamed from disk.

    Returns the JSON body (schema ``walkreg.score/1``: paths, encoder, fps, config and :meth:`ScoreOutput.to_dict`)
    and the :class:`ScoreOutput`.
    """
    num_frames = check_clip_pair(edited, source)
    if num_frames == 1:
        raise ValueError(f"`edited` {str(edited)!r} has 1 frame; scoring needs at least 2.")
    src_frames = iter_frames(source) if source is not None else None
    out = score_clip(
        iter_frames(edited), encoder, src_frames, config, num_frames, progress_desc=f"score {Path(edited).name}"
    )
    body = {
        "schema": SCHEMA,
        "edited": str(edited),
        "source": str(source) if source else None,
        "encoder": encoder_name,
        "fps": probe_video(edited).fps,
        "config": asdict(config),
        **out.to_dict(),
    }
    return body, out
