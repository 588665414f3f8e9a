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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from walkreg.cells import cell_colours, cell_values
from walkreg.flow import guide_flow, warp_error
from walkreg.progress import progress
from walkreg.video import check_clip_pair, iter_frames
from walkreg.walks import SparseTransitions, WalkConfig, home_mass, leaky


SCHEMA = "walkreg.score/1"
BATCH_SCHEMA = "walkreg.score-batch/1"
WORST_PAIRS = 10  # the worst frame pairs listed in the JSON and shown in the report
PREVIEW_FRAMES = 48  # at most this many frames in the report's heat-map animation


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
        worst = [view.index for view in self.worst] or order[:WORST_PAIRS]
        return {
            "num_frames": self.num_frames,
            "has_source": self.has_source,
            "overall": self.overall,
            "worst_pairs": worst,
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


@dataclass
class _SourcePair:
    """The source's own walks between frames ``t`` and ``t+1``, computed once and shared by every edit scored
    against it: ``back`` (``t+1 -> t``, carries frame ``t`` onto frame ``t+1``), ``there`` (``t -> t+1``), the
    ``(N,)`` round-trip ``confidence`` of each cell of ``t+1``, and the DIS ``flow`` of the pair (``include_flow``)."""

    back: SparseTransitions
    there: SparseTransitions
    confidence: torch.Tensor
    flow: tuple[torch.Tensor, torch.Tensor] | None


def _source_pair(prev, current, cfg: ScoreConfig) -> _SourcePair:
    (frame0, f0, _), (frame1, f1, _) = prev, current
    back, there = cfg.walk.steps_both_ways(f1, f0)
    confidence = home_mass([back], [there], f1.shape[-1], cfg.home_radius)
    return _SourcePair(back, there, confidence, guide_flow(frame0, frame1) if cfg.include_flow else None)


class _ClipScorer:
    """The scores of one edited clip, fed frame by frame (with its source frame and the source pair's walks)."""

    def __init__(self, cfg: ScoreConfig, num_frames: int | None, has_source: bool):
        self.cfg, self.has_source = cfg, has_source
        self.preview_every = max(1, math.ceil((num_frames or 1) / cfg.preview_frames)) if cfg.preview_frames else 0
        self.steps: deque = deque(maxlen=cfg.window - 1)  # (forward, backward) leaky steps of the latest pairs
        self.returns: dict[int, list[float]] = {}  # start frame -> home-coming masses of its palindromes
        self.pairs: list[dict[str, float]] = []
        self.pending: deque[PairView] = deque()  # thumbnails of pairs whose score is not final yet
        self.worst: list = []  # heap of (-score, index, PairView)
        self.preview: list[PairView] = []
        self.prev = None

    def add(self, frame: torch.Tensor, feats: torch.Tensor, values: torch.Tensor, src, source_pair) -> None:
        """One more frame: ``(3, H, W)``, its ``(1, C, h, w)`` features and ``(1, L, h, w)`` cell values; ``src`` is
        the source's ``(frame, features, values)`` and ``source_pair`` the :class:`_SourcePair` ending at it."""
        current = (frame, feats, values, cell_colours(values), src)
        if self.prev is not None:
            self._add_pair(self.prev, current, source_pair)
        self.prev = current

    def _add_pair(self, prev, current, source_pair: _SourcePair | None) -> None:
        cfg, index = self.cfg, len(self.pairs)
        pair, heat = _score_pair(prev, current, source_pair, self.steps, self.returns, cfg, index)
        self.pairs.append(pair)
        if cfg.num_worst or (self.preview_every and index % self.preview_every == 0):
            thumbnails = torch.stack([_thumbnail(frame[0], cfg.preview_width) for frame in (prev, current)])
            self.pending.append(PairView(index, math.nan, thumbnails, _thumbnail(heat[None], cfg.preview_width)[0]))
        # without a source a pair's score (walk_back) is final once every palindrome from it has come home
        self._settle(index if self.has_source else index - (cfg.window - 2))

    def _score(self, index: int) -> float:
        return self.pairs[index]["consistency"] if self.has_source else float(np.mean(self.returns[index]))

    def _settle(self, up_to: float) -> None:
        """Give the pending pairs up to ``up_to`` their final score; keep the worst and the preview frames."""
        while self.pending and self.pending[0].index <= up_to:
            view = self.pending.popleft()
            view.score = self._score(view.index)
            if self.preview_every and view.index % self.preview_every == 0:
                self.preview.append(PairView(view.index, view.score, view.frames[:1], view.heat))
            if self.cfg.num_worst and (len(self.worst) < self.cfg.num_worst or -self.worst[0][0] > view.score):
                heapq.heappush(self.worst, (-view.score, view.index, view))
                if len(self.worst) > self.cfg.num_worst:
                    heapq.heappop(self.worst)

    def result(self, num_frames: int) -> ScoreOutput:
        self._settle(math.inf)
        pairs = self.pairs
        for start, masses in self.returns.items():
            pairs[start]["walk_back"] = float(np.mean(masses))
            if not self.has_source:
                pairs[start]["consistency"] = pairs[start]["walk_back"]
        overall = {key: float(np.mean([p[key] for p in pairs])) for key in pairs[0]}
        worst = [v for _, _, v in sorted(self.worst, key=lambda item: (-item[0], item[1]))]
        return ScoreOutput(num_frames, self.has_source, overall, pairs, worst, self.preview)


@torch.no_grad()
def score_clips(
    edited: Mapping[str, Iterable[torch.Tensor]],
    encoder,
    source: Iterable[torch.Tensor] | None = None,
    config: ScoreConfig | None = None,
    num_frames: int | None = None,
    progress_desc: str | None = None,
) -> dict[str, ScoreOutput]:
    """Score several edits of one source together, streaming frame by frame: the source's features, walks and flow
    are computed once and shared (the same scores as :func:`score_clip` of each edit).

    Args:
        edited: name -> ``(3, H, W)`` frames in [0, 1] (iterables, e.g. :func:`walkreg.video.iter_frames`, or
            ``(T, 3, H, W)`` tensors), all of the same length and size.
        encoder: anything with ``iter_features`` (see :func:`walkreg.features.create_features`).
        source: the unedited clip, same length and size, or ``None``.
        config: :class:`ScoreConfig`.
        num_frames: expected length (for the progress bar and the preview spacing), if known.

    Returns:
        name -> :class:`ScoreOutput`. Memory depends on ``window``, the frame size and the number of edits, not on
        the clip length.
    """
    cfg = config or ScoreConfig()
    if not edited:
        raise ValueError("`edited` holds no clips to score.")
    streams = {name: iter(_PairStream(clip, encoder, cfg)) for name, clip in edited.items()}
    source_stream = iter(_PairStream(source, encoder, cfg)) if source is not None else None
    scorers = {name: _ClipScorer(cfg, num_frames, source is not None) for name in edited}
    bar = progress(total=num_frames, desc=progress_desc or "score")
    t, prev_src = 0, None
    while True:
        items = {name: next(stream, None) for name, stream in streams.items()}
        ended = [name for name, item in items.items() if item is None]
        if len(ended) == len(items):
            break
        if ended:
            raise ValueError(f"The edited clips must have the same length, but {ended[0]!r} ended after {t} frames.")
        frame = next(iter(items.values()))[0]
        src = next(source_stream, None) if source_stream is not None else None
        if source_stream is not None and src is None:
            raise ValueError(
                f"`source` ended after {t} frames, but `edited` has more; both must have the same length."
            )
        if src is not None and src[0].shape != frame.shape:
            raise ValueError(
                f"`source` frame {t} is {tuple(src[0].shape)}, but the edited frame is {tuple(frame.shape)}."
            )
        source_pair = _source_pair(prev_src, src, cfg) if src is not None and prev_src is not None else None
        for name, (edit, feats, values) in items.items():
            if edit.shape != frame.shape:
                raise ValueError(f"Edited clip {name!r} frame {t} is {tuple(edit.shape)}, not {tuple(frame.shape)}.")
            scorers[name].add(edit, feats, values, src, source_pair)
        prev_src = src
        t += 1
        bar.update(1)
    bar.close()
    if source_stream is not None and next(source_stream, None) is not None:
        raise ValueError(f"`source` has more frames than `edited` ({t}); both must have the same length.")
    if t < 2:
        raise ValueError(f"`edited` must have at least 2 frames to score consistency, but has {t}.")
    return {name: scorer.result(t) for name, scorer in scorers.items()}


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
    return score_clips({"edited": edited}, encoder, source, config, num_frames, progress_desc)["edited"]


def _score_pair(
    prev, current, source_pair: _SourcePair | None, steps, returns, cfg: ScoreConfig, index: int
) -> tuple[dict[str, float], torch.Tensor]:
    """Scores of pair ``index`` and its ``(h, w)`` inconsistency heat map (in [0, 1], 1 = inconsistent)."""
    _, f0, v0, c0, src0 = prev
    _, f1, v1, c1, src1 = current
    h, w = f1.shape[-2:]
    walk = cfg.walk
    forward, backward = walk.steps_both_ways(f0, f1)  # the plain backward step is reused by `agreement`
    steps.append((leaky(forward, c0, c1, cfg.colour_scale), leaky(backward, c1, c0, cfg.colour_scale)))
    # palindromes that turn at this new frame: one per start frame still inside the window
    for depth in range(1, len(steps) + 1):
        chosen = list(steps)[-depth:]
        mass = home_mass([fwd for fwd, _ in chosen], [bwd for _, bwd in reversed(chosen)], w, cfg.home_radius)
        returns.setdefault(index + 1 - depth, []).append(float(mass.mean()))
        if depth == 1:
            heat = 1 - mass.view(h, w)
    pair = {"consistency": 0.0, "walk_back": 0.0}
    if source_pair is not None:
        confidence = source_pair.confidence
        # the edit's residual over the source, carried t -> t+1: zero for an unedited clip, whatever the motion
        residual0, residual1 = v0 - src0[2], (v1 - src1[2]).flatten(2)  # (1, L, h, w), (1, L, N)
        error_map = (source_pair.back.apply(residual0.flatten(2)) - residual1).abs().mean(1)[0]
        error = float((error_map * confidence).sum() / confidence.sum().clamp_min(1e-8))
        mixed = home_mass([backward], [source_pair.there], w, cfg.home_radius)
        agreement = float(mixed.mean() / confidence.mean().clamp_min(1e-8))
        pair.update(fidelity=math.exp(-error / cfg.colour_scale), fidelity_error=error, agreement=min(1.0, agreement))
        pair["consistency"] = pair["fidelity"]
        heat = 1 - torch.exp(-error_map / cfg.colour_scale).view(h, w)
    if cfg.include_flow:
        flow = source_pair.flow if source_pair is not None else guide_flow(prev[0], current[0])
        pair["flow_warp_error"] = warp_error(flow, (prev[0], current[0]))
    return pair, heat


def score_files(
    edited: str | os.PathLike, source: str | os.PathLike | None, encoder, config: ScoreConfig, encoder_name: str
) -> tuple[dict, ScoreOutput]:
    """:func:`score_clip` of a video file or frame folder (and its source), streamed from disk.

    Returns the JSON body (schema ``walkreg.score/1``: paths, encoder, fps, config and :meth:`ScoreOutput.to_dict`)
    and the :class:`ScoreOutput`.
    """
    info = check_clip_pair(edited, source)
    num_frames = info.num_frames or None
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
        "fps": info.fps,
        "config": asdict(config),
        **out.to_dict(),
    }
    return body, out
