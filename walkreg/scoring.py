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
  (also reported as ``fidelity_error``, [0, 1], lower is better). The confidence of a source cell is its forward-backward
  cycle consistency: the mass of the source walk ``t+1 -> t -> t+1`` that comes home, so occluded and
  disoccluded cells count little.
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

import argparse
import functools
import heapq
import json
import math
import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from walkreg.atomic import write_text_atomic
from walkreg.encoder import CRWEncoder
from walkreg.progress import progress
from walkreg.video import VIDEO_SUFFIXES, iter_frames, probe_video
from walkreg.walk import SparseTransitions, local_transitions
from walkreg.windows import LocalWindows, gather_rows


SCHEMA = "walkreg.score/1"
BATCH_SCHEMA = "walkreg.score-batch/1"
ENCODER_KEYWORDS = ("default", "random", "random-small", "pixels")
STRIDE = 8  # pixels per feature cell


# -- features ---------------------------------------------------------------------------------------------------

class PixelFeatures:
    """Encoder-free features: each 8x8 cell's RGB pixels, mean-centred per cell and L2-normalised.

    ``iter_features`` matches :meth:`CRWEncoder.iter_features`: ``(3, H, W)`` frames in [0, 1] in,
    ``(1, 192, ceil(H/8), ceil(W/8))`` features out.
    """

    stride = STRIDE

    def iter_features(self, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for frame in frames:
            cells = F.pixel_unshuffle(pad_to_cells(frame[None]), STRIDE)
            yield F.normalize(cells - cells.mean(1, keepdim=True), dim=1)


def load_encoder(spec: str | os.PathLike) -> CRWEncoder | PixelFeatures:
    """``--encoder``: a ``save_pretrained`` directory, ``default`` (the encoder bundled with walkreg), ``random`` /
    ``random-small`` (random-init ResNet-18, full or quarter width, seed 0) or ``pixels`` (:class:`PixelFeatures`)."""
    spec = str(spec)
    if spec == "default":
        return CRWEncoder.from_pretrained()
    if spec == "pixels":
        return PixelFeatures()
    if spec in ("random", "random-small"):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            return CRWEncoder(arch="resnet18" if spec == "random" else "resnet18-small").eval()
    if not Path(spec).is_dir():
        raise ValueError(f"`--encoder` must be an encoder directory or one of {ENCODER_KEYWORDS}, but is {spec!r}.")
    return CRWEncoder.from_pretrained(spec)


def pad_to_cells(frames: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` -> replicate-padded to multiples of 8 (the encoder's ``ceil(H/8)`` grid)."""
    h, w = frames.shape[-2:]
    return F.pad(frames, (0, -w % STRIDE, 0, -h % STRIDE), mode="replicate")


def cell_values(frame: torch.Tensor, sub_cells: int) -> torch.Tensor:
    """``(3, H, W)`` -> ``(1, 3 * sub_cells**2, h, w)``: the mean colours of ``sub_cells x sub_cells`` blocks per cell."""
    padded = pad_to_cells(frame[None])
    return F.pixel_unshuffle(padded if sub_cells == STRIDE else F.avg_pool2d(padded, STRIDE // sub_cells), sub_cells)


def cell_colours(values: torch.Tensor) -> torch.Tensor:
    """``(1, 3 * s * s, h, w)`` cell values -> ``(1, 3, h, w)`` mean colour per cell."""
    return values.unflatten(1, (3, -1)).mean(2)


# -- sparse walks -----------------------------------------------------------------------------------------------

def walk_step(query: torch.Tensor, key: torch.Tensor, config: ScoreConfig, query_colours=None, key_colours=None) -> SparseTransitions:
    """``top_k`` transitions per cell from the cells of ``query`` to those of ``key`` (both ``(1, C, h, w)``).

    With colours (``(1, 3, h, w)`` each), the step is :func:`leaky`.
    """
    step = local_transitions(query, key, config.temperature, config.radius, config.top_k)
    return step if query_colours is None else leaky(step, query_colours, key_colours, config.colour_scale)


def leaky(step: SparseTransitions, query_colours: torch.Tensor, key_colours: torch.Tensor, colour_scale: float) -> SparseTransitions:
    """Scale every entry of a batch-1 ``step`` by ``exp(-|colour difference| / colour_scale)`` (colours
    ``(1, 3, h, w)`` of the query and key cells, mean absolute difference), so rows sum to at most 1 and the
    missing mass is the walker that leaked out."""
    target = gather_rows(LocalWindows.pad(key_colours), step.indices[0])  # (1, N, K, 3)
    diff = (query_colours.flatten(2).transpose(1, 2)[:, :, None] - target).abs().mean(-1)  # (1, N, K)
    return SparseTransitions(step.indices, step.weights * torch.exp(-diff / colour_scale), step.num_keys)


def carry(step: SparseTransitions, values: torch.Tensor) -> torch.Tensor:
    """Pull the key frame's ``(1, L, h, w)`` values onto the query cells along a batch-1 ``step``: ``(1, L, N)``.

    The same as :meth:`SparseTransitions.apply`, through cell-major row gathers (faster for many channels).
    """
    return torch.einsum("bnkl,bnk->bln", gather_rows(LocalWindows.pad(values), step.indices[0]), step.weights)


def expand_paths(steps: list[SparseTransitions]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every walk of ``len(steps)`` steps from each start node, one column per path (``K ** len(steps)`` columns).

    ``steps`` are batch-1 transitions in walking order. Returns ``(ends, weights)``, both ``(N, P)``: the node each
    path ends on and the path's probability (the product of its steps' weights).
    """
    ends, weights = steps[0].indices[0], steps[0].weights[0]
    for step in steps[1:]:
        k = step.indices.shape[-1]
        flat = ends.flatten()
        weights = (weights[..., None] * step.weights[0].index_select(0, flat).view(*ends.shape, k)).flatten(1)
        ends = step.indices[0].index_select(0, flat).view(*ends.shape, k).flatten(1)
    return ends, weights


@functools.lru_cache(maxsize=8)
def _home_offsets(home_radius: float) -> torch.Tensor:
    """``(2, D)`` integer offsets ``(dy, dx)`` strictly closer than ``home_radius`` to ``(0, 0)``."""
    reach = math.ceil(home_radius) - 1
    ys, xs = torch.meshgrid(torch.arange(-reach, reach + 1), torch.arange(-reach, reach + 1), indexing="ij")
    near = ys.square() + xs.square() < home_radius**2
    return torch.stack([ys[near], xs[near]])


@functools.lru_cache(maxsize=8)
def _cell_coordinates(num_cells: int, width: int) -> torch.Tensor:
    """``(2, N)`` row and column of every cell of a row-major grid."""
    cells = torch.arange(num_cells)
    return torch.stack([cells.div(width, rounding_mode="floor"), cells % width])


def home_mass(outward: list[SparseTransitions], inward: list[SparseTransitions], width: int, home_radius: float) -> torch.Tensor:
    """``(N,)`` mass of the walk ``outward[0] ... outward[-1] inward[0] ... inward[-1]`` that ends strictly closer
    than ``home_radius`` cells to its start node (cells of a row-major grid ``width`` cells wide).

    ``outward`` are the steps away from the start frame, ``inward`` the steps back, in walking order (batch-1
    :class:`SparseTransitions`). Meet in the middle: the inward walks from every turn node are merged
    (``scatter_add``) into a local window of offsets around it, and every outward path sums that window over the
    home disk around its own start: ``O(N * K ** depth)`` work, no ``N x N`` matrix.
    """
    turns, away = expand_paths(outward)  # (N, P) turn nodes of the paths from each start node
    ends, back = expand_paths(inward)  # (N, Q) end nodes of the paths from each turn node
    num_cells = turns.shape[0]
    coords = _cell_coordinates(num_cells, width).to(turns.device)

    def at(cells: torch.Tensor) -> torch.Tensor:
        return coords.index_select(1, cells.flatten()).view(2, *cells.shape)

    # (2, N, P) offsets as seen from the turn node, 0 on paths without mass (their cells may be padding)
    here = coords[:, :, None]
    inner = (at(ends) - here) * (back > 0)  # where each inward path ends
    outer = (here - at(turns)) * (away > 0)  # where each outward path started
    home = _home_offsets(home_radius).to(turns.device)
    half = int(max(inner.abs().max(), outer.abs().max())) + int(home.max())
    side = 2 * half + 1
    landed = back.new_zeros(num_cells, side * side)
    landed.scatter_add_(1, (inner[0] + half) * side + inner[1] + half, back)
    start = turns * side * side + (outer[0] + half) * side + outer[1] + half  # (N, P) the start in the turn's window
    near = landed.flatten().index_select(0, (start[..., None] + home[0] * side + home[1]).flatten())
    near = near.view(*start.shape, -1).sum(-1)  # (N, P) the inward mass landing near each path's start
    return (away * near).sum(1)


# -- classical flow baseline ------------------------------------------------------------------------------------

def _cv2():
    try:
        import cv2
    except ImportError as err:
        raise ImportError("The optical-flow baseline needs OpenCV: `pip install 'walkreg[report]'`.") from err
    return cv2


def _grey(frame: torch.Tensor) -> np.ndarray:
    rgb = (frame.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(_cv2().cvtColor(rgb, _cv2().COLOR_RGB2GRAY))


def dis_flow(frame_a: torch.Tensor, frame_b: torch.Tensor) -> torch.Tensor:
    """OpenCV DIS flow (medium preset) from ``frame_a`` to ``frame_b`` (``(3, H, W)``): ``(2, H, W)`` with
    ``frame_a[y, x] ~ frame_b[y + flow[1], x + flow[0]]``."""
    cv2 = _cv2()
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(_grey(frame_a), _grey(frame_b), None)
    return torch.from_numpy(flow).permute(2, 0, 1)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` ``(C, H, W)`` at ``x + flow(x)`` (``flow`` ``(2, H, W)`` in pixels), bilinear, border clamp."""
    _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=flow.dtype), torch.arange(w, dtype=flow.dtype), indexing="ij")
    grid = torch.stack([(xs + flow[0]) / max(w - 1, 1), (ys + flow[1]) / max(h - 1, 1)], dim=-1) * 2 - 1
    return F.grid_sample(image[None], grid[None], mode="bilinear", padding_mode="border", align_corners=True)[0]


def flow_visibility(backward: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` bool: pixels of frame ``t+1`` passing the forward-backward check (Sundaram et al. 2010).

    ``backward``: flow ``t+1 -> t``; ``forward``: flow ``t -> t+1``.
    """
    there = warp(forward, backward)
    mismatch = (backward + there).square().sum(0)
    return mismatch < 0.01 * (backward.square().sum(0) + there.square().sum(0)) + 0.5


def guide_flow(frame_t: torch.Tensor, frame_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DIS flow of a guide pair (``(3, H, W)`` each) for :func:`flow_warp_error`: the ``(2, H, W)`` backward flow
    ``t+1 -> t`` and the ``(H, W)`` bool mask of the pixels of ``t+1`` that pass the forward-backward check."""
    backward, forward = dis_flow(frame_next, frame_t), dis_flow(frame_t, frame_next)
    return backward, flow_visibility(backward, forward)


def warp_error(flow: tuple[torch.Tensor, torch.Tensor], edited: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Mean absolute difference (in [0, 1]) between edited frame ``t+1`` and edited frame ``t`` (``(3, H, W)``
    each) warped onto it along ``flow`` (from :func:`guide_flow`), over the visible pixels; lower is more consistent."""
    backward, visible = flow
    error = (warp(edited[0], backward) - edited[1]).abs().mean(0)
    return float(error[visible].mean()) if visible.any() else float(error.mean())


def flow_warp_error(guide: tuple[torch.Tensor, torch.Tensor], edited: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Warp error of an edited frame pair along the DIS flow of the ``guide`` pair (both ``(3, H, W)`` pairs, t then
    t+1): :func:`warp_error` of :func:`guide_flow`."""
    return warp_error(guide_flow(*guide), edited)


# -- scoring ----------------------------------------------------------------------------------------------------

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
        for name in ("temperature", "radius", "colour_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be > 0, but is {getattr(self, name)}.")
        if not self.home_radius > 1:
            raise ValueError(f"`home_radius` must be > 1 cell (the start cell itself is at distance 0 < 1), but is {self.home_radius}.")
        if self.top_k < 1:
            raise ValueError(f"`top_k` must be >= 1, but is {self.top_k}.")
        if self.sub_cells not in (1, 2, 4, 8):
            raise ValueError(f"`sub_cells` must be 1, 2, 4 or 8, but is {self.sub_cells}.")


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
        return {"num_frames": self.num_frames, "has_source": self.has_source, "overall": self.overall,
                "worst_pairs": order[:10], "pairs": self.pairs}


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
        encoder: anything with ``iter_features`` (a :class:`CRWEncoder` or :class:`PixelFeatures`).
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
            raise ValueError(f"`source` ended after {t} frames, but `edited` has more; both must have the same length.")
        if src is not None and src[0].shape != frame.shape:
            raise ValueError(f"`source` frame {t} is {tuple(src[0].shape)}, but the edited frame is {tuple(frame.shape)}.")
        current = (frame, feats, values, cell_colours(values), src)
        if prev is not None:
            pair, heat = _score_pair(prev, current, steps, returns, cfg, t - 1)
            pairs.append(pair)
            view_score = pair["consistency"]
            if cfg.num_worst and (len(worst) < cfg.num_worst or -worst[0][0] > view_score):
                view = PairView(t - 1, view_score, torch.stack([_thumbnail(prev[0], cfg.preview_width), _thumbnail(frame, cfg.preview_width)]),
                                _thumbnail(heat[None], cfg.preview_width)[0])
                heapq.heappush(worst, (-view_score, t - 1, view))
                if len(worst) > cfg.num_worst:
                    heapq.heappop(worst)
            if preview_every and (t - 1) % preview_every == 0:
                preview.append(PairView(t - 1, view_score, _thumbnail(prev[0], cfg.preview_width)[None], _thumbnail(heat[None], cfg.preview_width)[0]))
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
    return ScoreOutput(t + 1, source is not None, overall, pairs,
                       [v for _, _, v in sorted(worst, key=lambda item: -item[0])], preview)


def _score_pair(prev, current, steps, returns, cfg: ScoreConfig, index: int) -> tuple[dict[str, float], torch.Tensor]:
    """Scores of pair ``index`` and its ``(h, w)`` inconsistency heat map (in [0, 1], 1 = inconsistent)."""
    _, f0, v0, c0, src0 = prev
    _, f1, v1, c1, src1 = current
    h, w = f1.shape[-2:]
    backward = walk_step(f1, f0, cfg)  # plain: reused by `agreement`
    steps.append((walk_step(f0, f1, cfg, c0, c1), leaky(backward, c1, c0, cfg.colour_scale)))
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
        back = walk_step(s_f1, s_f0, cfg)  # source t+1 -> t: carries frame t onto frame t+1
        there = walk_step(s_f0, s_f1, cfg)
        confidence = home_mass([back], [there], w, cfg.home_radius)
        # the edit's residual over the source, carried t -> t+1: zero for an unedited clip, whatever the motion
        residual0, residual1 = v0 - src0[2], (v1 - src1[2]).flatten(2)  # (1, L, h, w), (1, L, N)
        error_map = (carry(back, residual0) - residual1).abs().mean(1)[0]
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


# -- command line -----------------------------------------------------------------------------------------------

def check_pair(edited: str | os.PathLike, source: str | os.PathLike | None) -> int | None:
    """Probe both clips and raise ``ValueError`` unless their frame counts, sizes and frame rates agree.

    Returns the frame count the containers declare (``None`` where one does not say).
    """
    info = probe_video(edited)
    if source is None:
        return info.num_frames or None
    src = probe_video(source)
    if (src.height, src.width) != (info.height, info.width):
        raise ValueError(f"`--source` is {src.width}x{src.height} but `edited` is {info.width}x{info.height}; both must have the same size.")
    if src.num_frames and info.num_frames and src.num_frames != info.num_frames:
        raise ValueError(f"`--source` has {src.num_frames} frames but `edited` has {info.num_frames}; both must have the same length.")
    if src.fps and info.fps and abs(src.fps - info.fps) > 1e-3 * src.fps:
        raise ValueError(f"`--source` runs at {src.fps:g} fps but `edited` at {info.fps:g} fps; both must have the same frame rate.")
    return info.num_frames or src.num_frames or None


def _clip_result(edited: Path, source: Path | None, encoder, args: argparse.Namespace, config: ScoreConfig) -> tuple[dict, ScoreOutput]:
    num_frames = check_pair(edited, source)
    if num_frames == 1:
        raise ValueError(f"`edited` {str(edited)!r} has 1 frame; scoring needs at least 2.")
    frames = iter_frames(edited)
    src_frames = iter_frames(source) if source is not None else None
    out = score_clip(frames, encoder, src_frames, config, num_frames=num_frames, progress_desc=f"score {edited.name}")
    body = {"schema": SCHEMA, "edited": str(edited), "source": str(source) if source else None, "encoder": str(args.encoder),
            "fps": probe_video(edited).fps, "config": asdict(config), **out.to_dict()}
    return body, out


def _batch_clips(folder: Path, sources: Path | None) -> list[tuple[Path, Path | None]]:
    """Video files and frame folders directly inside ``folder``, each paired with the same name in ``sources``."""
    clips = sorted(p for p in folder.iterdir() if p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES)
    if not clips:
        raise ValueError(f"`EDITED` folder {str(folder)!r} holds no videos ({', '.join(VIDEO_SUFFIXES)}) or frame folders.")
    pairs = []
    for clip in clips:
        src = sources / clip.name if sources is not None else None
        if src is not None and not src.exists():
            raise ValueError(f"`--source` folder {str(sources)!r} has no {clip.name!r} to pair with {str(clip)!r}.")
        pairs.append((clip, src))
    return pairs


def run(args: argparse.Namespace) -> int:
    config = ScoreConfig(window=args.window, temperature=args.temperature, radius=args.radius, top_k=args.top_k,
                         colour_scale=args.colour_scale, include_flow=args.flow_baseline,
                         num_worst=8 if args.report else 0, preview_frames=120 if args.report else 0)
    edited = Path(args.edited)
    source = Path(args.source) if args.source else None
    if args.batch:
        if not edited.is_dir() or (source is not None and not source.is_dir()):
            raise ValueError("`--batch` needs `EDITED` (and `--source`, if given) to be folders of clips.")
        if args.report:
            raise ValueError("`--report` writes one clip's page; it cannot be combined with `--batch`.")
        encoder = load_encoder(args.encoder)
        results = []
        for clip, src in progress(_batch_clips(edited, source), desc="clips", unit="clip"):
            results.append(_clip_result(clip, src, encoder, args, config)[0])
        body = {"schema": BATCH_SCHEMA, "clips": results}
        summary = "\n".join(f"{r['edited']}: consistency {r['overall']['consistency']:.4f}" for r in results)
    else:
        encoder = load_encoder(args.encoder)
        body, out = _clip_result(edited, source, encoder, args, config)
        summary = " ".join(f"{k}={v:.4f}" for k, v in out.overall.items())
        if args.report:
            from walkreg.report import write_report

            write_report(args.report, body, out)
    if args.json:
        write_text_atomic(args.json, json.dumps(body, indent=2) + "\n")
    sys.stdout.write(summary + "\n")
    return 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "score", help="temporal-consistency scores of an edited clip (CRW walks, optional source)",
        description="Score how temporally consistent EDITED is: walk-back consistency of its own CRW walks and, with "
        "--source, fidelity to the source motion and agreement of the walks. All scores are in [0, 1], higher is more "
        "consistent; the DIS optical-flow warp error (lower is better) can be reported beside them.",
    )
    parser.add_argument("edited", metavar="EDITED", help="edited video file or frame folder (with --batch: a folder of them)")
    parser.add_argument("--source", help="the unedited clip (same length, size and frame rate); with --batch a folder")
    parser.add_argument("--encoder", default="default", help="encoder directory (save_pretrained), or 'default' (bundled), 'random', 'random-small', 'pixels' (default: default)")
    parser.add_argument("--json", help="write the scores as JSON (schema walkreg.score/1, batch: walkreg.score-batch/1)")
    parser.add_argument("--report", help="write a self-contained HTML report (needs matplotlib)")
    parser.add_argument("--batch", action="store_true", help="score every clip in the EDITED folder")
    parser.add_argument("--flow-baseline", action="store_true", help="also report the DIS optical-flow warp error (needs OpenCV)")
    defaults = ScoreConfig()
    parser.add_argument("--window", type=int, default=defaults.window, help="frames per palindrome window")
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--radius", type=float, default=defaults.radius, help="step radius in feature cells")
    parser.add_argument("--top-k", type=int, default=defaults.top_k)
    parser.add_argument("--colour-scale", type=float, default=defaults.colour_scale)
    parser.set_defaults(func=run)
