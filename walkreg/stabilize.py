"""Post-hoc stabilisation of a frame-by-frame edit along the source clip's motion, in both directions, streaming.

The edit's residual over the source, ``D_t = edited_t - source_t``, is split into two bands: the low band, the
means of the 8x8 cells (:mod:`walkreg.cells`), and the high band, everything else (the fine detail a per-frame edit
re-invents every frame). Each band is averaged along the source's motion with an exponential kernel that runs both
ways in time, as a normalised sum::

    N_t = a_t * carry(N_{t-1}) + D_t,   W_t = a_t * carry(W_{t-1}) + 1        (forward, and the same backward)
    R_t = (N_t^fwd + N_t^bwd - D_t) / (W_t^fwd + W_t^bwd - 1)
    output_t = source_t + R_t^low + R_t^high

with ``a_t = strength * confidence_t`` per cell (low band) or per pixel (high band). No frame is special, the first
included, and errors do not accumulate along the clip. The backward pass reads at most ``2 * lookahead`` frames
ahead (blocks of ``lookahead`` frames, each with ``lookahead`` frames of run-in), so memory does not grow with the
clip. Working on the residual keeps real lighting changes of the source.

``carry`` warps along a pixel motion field of the source; the low band follows it on the cell grid. The confidence
of the low band is whether the correspondence exists (cycle consistency or occlusion check); the high band also
needs the source itself to be stable along the motion to the pixel (:func:`walkreg.motion.photometric_confidence`),
so fine detail is held where the source holds still and released where it changes. ``method`` decides the motion:

- ``"crw"`` (default): source CRW transitions between the 8x8 cells, turned into pixel motion by soft placement
  (the expected key position of each cell) and refined by Lucas-Kanade on the source frames
  (:mod:`walkreg.motion`); the cycle consistency of the walk ``t -> t-1 -> t`` is the low band's confidence.
  Needs no OpenCV.
- ``"flow"`` (baseline): OpenCV DIS optical flow with its forward-backward occlusion check.
- ``"ema"`` (baseline): no motion; the high band is still gated by the source's stability in place.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from walkreg.cells import STRIDE, cell_means, upsample_cells
from walkreg.flow import dis_flow, flow_visibility, warp
from walkreg.motion import photometric_confidence, pick_motion, refine_motion, soft_placement, upsample_motion
from walkreg.walks import SparseTransitions, WalkConfig, round_trip_confidence


METHODS = ("crw", "flow", "ema")


@dataclass
class StabilizeConfig:
    """Hyper-parameters of :func:`stabilize`.

    Attributes:
        method: ``"crw"``, ``"flow"`` or ``"ema"`` (see the module docstring).
        strength: weight of each carried frame where the correspondence is fully confident, in [0, 1); the
            kernel reaches about ``1 / (1 - strength)`` frames each way. 0 returns the edit unchanged.
        full_confidence: cycle-consistency mass (home-coming mass of ``t -> t-1 -> t``) at and above which a cell
            counts as fully visible; below it the confidence falls linearly to 0 (``"crw"``).
        tolerance: colour difference (mean absolute, in [0, 1]) of the source along the motion at which the high
            band's confidence has fallen to ``1/e``.
        lookahead: frames the backward pass reads ahead (at least ``lookahead``, at most ``2 * lookahead``);
            memory grows with it, not with the clip.
        refine: ``"crw"`` only: refine the walk's soft placement on the source pixels (Lucas-Kanade).
        walk: transition hyper-parameters of ``"crw"`` (temperature, radius, top_k, home_radius).
    """

    method: str = "crw"
    strength: float = 0.8
    full_confidence: float = 0.3
    tolerance: float = 0.05
    lookahead: int = 8
    refine: bool = True
    walk: WalkConfig = field(default_factory=lambda: WalkConfig(temperature=0.02, home_radius=2.5))

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, but is {self.method!r}.")
        if not 0 <= self.strength < 1:
            raise ValueError(f"`strength` must be in [0, 1), but is {self.strength}.")
        if not 0 < self.full_confidence <= 1:
            raise ValueError(f"`full_confidence` must be in (0, 1], but is {self.full_confidence}.")
        if not self.tolerance > 0:
            raise ValueError(f"`tolerance` must be > 0, but is {self.tolerance}.")
        if self.lookahead < 1:
            raise ValueError(f"`lookahead` must be >= 1 frame, but is {self.lookahead}.")


@dataclass
class PairMotion:
    """Source motion between consecutive frames ``t-1`` and ``t``, both ways.

    Attributes:
        backward: ``(2, H, W)`` pixel motion of frame ``t`` into frame ``t-1`` (``(dx, dy)``, :func:`warp` layout).
        forward: ``(2, H, W)`` pixel motion of frame ``t-1`` into frame ``t``.
        backward_confidence: ``(2, H, W)`` in [0, 1] on frame ``t``: channel 0 for the low band (the
            correspondence exists), channel 1 for the high band (it also holds to the pixel).
        forward_confidence: the same on frame ``t-1``.
    """

    backward: torch.Tensor
    forward: torch.Tensor
    backward_confidence: torch.Tensor
    forward_confidence: torch.Tensor


def _confidences(
    frame: torch.Tensor, target: torch.Tensor, motion: torch.Tensor, visible: torch.Tensor, tolerance: float
) -> torch.Tensor:
    """``(2, H, W)``: the low band's confidence ``visible`` ``(H, W)`` and the high band's, ``visible`` times the
    photometric check of ``frame`` against ``target`` along ``motion``."""
    return torch.stack([visible, visible * photometric_confidence(frame, target, motion, tolerance)])


def _pair_motion(
    previous: torch.Tensor,
    current: torch.Tensor,
    motions: tuple[torch.Tensor, torch.Tensor],
    visible: tuple[torch.Tensor, torch.Tensor],
    tolerance: float,
) -> PairMotion:
    """:class:`PairMotion` of the source frames ``previous`` and ``current`` from their ``(backward, forward)``
    motions and the ``(H, W)`` visibility of ``current`` and of ``previous``."""
    backward, forward = motions
    return PairMotion(
        backward,
        forward,
        _confidences(current, previous, backward, visible[0], tolerance),
        _confidences(previous, current, forward, visible[1], tolerance),
    )


class _CRWMotion:
    """CRW transitions both ways, soft placement, Lucas-Kanade refinement, cycle consistency as visibility."""

    def __init__(self, config: StabilizeConfig):
        self.config = config

    def _pixels(self, step: SparseTransitions, frame: torch.Tensor, target: torch.Tensor, grid) -> torch.Tensor:
        cells = soft_placement(step, *grid).to(frame.device)
        motion = upsample_motion(cells, frame.shape[-2:])
        if not self.config.refine:
            return motion
        return pick_motion(frame, target, [torch.zeros_like(motion), refine_motion(frame, target, motion)])

    def _visible(self, there: SparseTransitions, back: SparseTransitions, grid, size) -> torch.Tensor:
        walk = self.config.walk
        mass = round_trip_confidence(there, back, grid[1], walk.home_radius, self.config.full_confidence)
        return upsample_cells(mass.view(1, 1, *grid).float().cpu(), size)[0].clamp(0, 1)

    def __call__(self, previous: tuple, current: tuple) -> PairMotion:
        (src_prev, feats_prev), (src, feats) = previous, current
        grid, size = tuple(feats.shape[-2:]), src.shape[-2:]
        back, there = self.config.walk.steps_both_ways(feats, feats_prev)
        motions = self._pixels(back, src, src_prev, grid), self._pixels(there, src_prev, src, grid)
        visible = self._visible(back, there, grid, size), self._visible(there, back, grid, size)
        return _pair_motion(src_prev, src, motions, visible, self.config.tolerance)


class _FlowMotion:
    """DIS optical flow both ways and its forward-backward occlusion check."""

    def __init__(self, config: StabilizeConfig):
        self.tolerance = config.tolerance

    def __call__(self, previous: tuple, current: tuple) -> PairMotion:
        src_prev, src = previous[0], current[0]
        backward, forward = dis_flow(src, src_prev), dis_flow(src_prev, src)
        visible = flow_visibility(backward, forward).float(), flow_visibility(forward, backward).float()
        return _pair_motion(src_prev, src, (backward, forward), visible, self.tolerance)


class _NoMotion:
    """Zero motion, every pixel visible."""

    def __init__(self, config: StabilizeConfig):
        self.tolerance = config.tolerance

    def __call__(self, previous: tuple, current: tuple) -> PairMotion:
        src_prev, src = previous[0], current[0]
        still, ones = src.new_zeros(2, *src.shape[-2:]), src.new_ones(src.shape[-2:])
        return _pair_motion(src_prev, src, (still, still), (ones, ones), self.tolerance)


_MOTIONS = {"crw": _CRWMotion, "flow": _FlowMotion, "ema": _NoMotion}


@dataclass
class _Band:
    """One band of one frame in the filter: ``(C, h, w)`` tensors on the band's grid (pixels or cells).

    ``residual`` is ``D_t`` (3 channels); ``forward`` the forward pass's ``[N_t, W_t]`` (4 channels); ``motion``
    ``(2, h, w)`` and ``confidence`` ``(1, h, w)`` lead to the next frame (``None`` until it arrives)."""

    residual: torch.Tensor
    forward: torch.Tensor
    motion: torch.Tensor | None = None
    confidence: torch.Tensor | None = None


def _bands(residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(3, H, W)`` residual -> its ``(3, h, w)`` cell means and the ``(3, H, W)`` rest."""
    low = cell_means(residual)
    return low[0], residual - upsample_cells(low, residual.shape[-2:])


def _on_cells(motion: torch.Tensor, confidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel ``(2, H, W)`` motion and ``(H, W)`` confidence -> ``(2, h, w)`` motion in cells and ``(1, h, w)``."""
    return cell_means(motion)[0] / STRIDE, cell_means(confidence[None])[0]


def _start(residual: torch.Tensor) -> torch.Tensor:
    """``(3, h, w)`` residual -> the ``(4, h, w)`` state ``[residual, 1]`` of a pass that starts at this frame."""
    return torch.cat([residual, residual.new_ones(1, *residual.shape[1:])])


def _accumulate(state: torch.Tensor, motion: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor):
    """One step of the normalised exponential sum, ``weight * carry(state) + [residual, 1]``: ``state``
    ``(4, h, w)`` of the neighbouring frame, ``motion`` ``(2, h, w)`` into it, ``weight`` ``(1, h, w)``,
    ``residual`` ``(3, h, w)``."""
    return weight * warp(state, motion) + _start(residual)


def _combine(forward: torch.Tensor, backward: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Both passes' ``(4, h, w)`` states of a frame (each counts the frame itself once) -> the ``(3, h, w)``
    filtered residual."""
    total = forward + backward - _start(residual)
    return total[:3] / total[3:]


class _TwoWayFilter:
    """The streaming filter of the module docstring: :meth:`push` frames and their motion, get finished frames."""

    def __init__(self, strength: float, lookahead: int):
        self.strength, self.lookahead = strength, lookahead
        self.frames: deque = deque()  # (source, low _Band, high _Band) of the frames not yet given out

    def push(self, source: torch.Tensor, edited: torch.Tensor, motion: PairMotion | None) -> Iterator[torch.Tensor]:
        """Add frame ``t`` (``(3, H, W)`` source and edit) with the :class:`PairMotion` of ``(t-1, t)`` (``None``
        for the first frame); yields the frames that are now final."""
        low, high = _bands(edited - source)
        if motion is None:
            self.frames.append((source, _Band(low, _start(low)), _Band(high, _start(high))))
            return
        _, prev_low, prev_high = self.frames[-1]
        s = self.strength
        back_cells, back_cells_conf = _on_cells(motion.backward, motion.backward_confidence[0])
        prev_low.motion, prev_low.confidence = _on_cells(motion.forward, motion.forward_confidence[0])
        prev_high.motion, prev_high.confidence = motion.forward, motion.forward_confidence[1:]
        low_state = _accumulate(prev_low.forward, back_cells, s * back_cells_conf, low)
        high_state = _accumulate(prev_high.forward, motion.backward, s * motion.backward_confidence[1:], high)
        self.frames.append((source, _Band(low, low_state), _Band(high, high_state)))
        if len(self.frames) == 2 * self.lookahead:
            yield from self._release(self.lookahead)

    def finish(self) -> Iterator[torch.Tensor]:
        """Yield every frame still held (the end of the clip)."""
        yield from self._release(len(self.frames))

    def _release(self, count: int) -> Iterator[torch.Tensor]:
        """Run the backward pass from the last held frame down to the first; yield the first ``count`` frames."""
        held = list(self.frames)
        backward: list[tuple[torch.Tensor, torch.Tensor]] = [None] * len(held)
        _, low, high = held[-1]
        backward[-1] = _start(low.residual), _start(high.residual)
        for i in range(len(held) - 2, -1, -1):
            _, low, high = held[i]
            next_low, next_high = backward[i + 1]
            backward[i] = (
                _accumulate(next_low, low.motion, self.strength * low.confidence, low.residual),
                _accumulate(next_high, high.motion, self.strength * high.confidence, high.residual),
            )
        for i in range(count):
            source, low, high = self.frames.popleft()
            smooth_low = _combine(low.forward, backward[i][0], low.residual)
            smooth_high = _combine(high.forward, backward[i][1], high.residual)
            yield (source + upsample_cells(smooth_low[None], source.shape[-2:]) + smooth_high).clamp(0, 1)


def _with_features(pairs: Iterator, encoder) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """``(source, edited, features)`` per frame; the encoder reads a few source frames ahead into a small buffer."""
    if encoder is None:
        yield from ((src, edit, None) for src, edit in pairs)
        return
    buffer: deque = deque()

    def feed():
        for src, edit in pairs:
            buffer.append((src, edit))
            yield src

    for feats in encoder.iter_features(feed()):
        yield (*buffer.popleft(), feats)


def _pairs(
    source: Iterable[torch.Tensor], edited: Iterable[torch.Tensor]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    edited = iter(edited)
    t = 0
    for t, src in enumerate(source):
        edit = next(edited, None)
        if edit is None:
            raise ValueError(
                f"`edited` ended after {t} frames, but `source` has more; both must have the same length."
            )
        if edit.shape != src.shape:
            raise ValueError(f"`edited` frame {t} is {tuple(edit.shape)}, but the source frame is {tuple(src.shape)}.")
        yield src, edit
    if next(edited, None) is not None:
        raise ValueError(f"`edited` has more frames than `source` ({t + 1}); both must have the same length.")


def _check_encoder(config: StabilizeConfig, encoder) -> None:
    if config.method == "crw" and encoder is None:
        raise ValueError("`encoder` is required for `method='crw'`.")


@torch.no_grad()
def source_motion(
    source: Iterable[torch.Tensor], encoder=None, config: StabilizeConfig | None = None
) -> Iterator[PairMotion]:
    """The source's :class:`PairMotion` of every consecutive pair ``(t-1, t)``, ``t = 1 ... T-1``, as
    :func:`stabilize` computes it (for filtering several edits of one source: :func:`stabilize_along`).

    Args:
        source: ``(3, H, W)`` frames in [0, 1] (an iterable or a ``(T, 3, H, W)`` tensor).
        encoder: anything with ``iter_features`` (see :func:`walkreg.features.create_features`); needed for ``"crw"``.
        config: :class:`StabilizeConfig` (its ``method``, ``walk``, ``refine``, ``full_confidence``, ``tolerance``).
    """
    cfg = config or StabilizeConfig()
    _check_encoder(cfg, encoder)
    estimate, previous = _MOTIONS[cfg.method](cfg), None
    for src, _, feats in _with_features(((src, None) for src in source), encoder if cfg.method == "crw" else None):
        if previous is not None:
            yield estimate(previous, (src, feats))
        previous = src, feats


@torch.no_grad()
def stabilize_along(
    source: Iterable[torch.Tensor],
    edited: Iterable[torch.Tensor],
    motions: Iterable[PairMotion],
    config: StabilizeConfig | None = None,
) -> Iterator[torch.Tensor]:
    """:func:`stabilize` with the source motion given (from :func:`source_motion`): only ``strength`` and
    ``lookahead`` of ``config`` are used. Yields ``(3, H, W)`` frames in [0, 1]."""
    cfg = config or StabilizeConfig()
    filtering, motions = _TwoWayFilter(cfg.strength, cfg.lookahead), iter(motions)
    for t, (src, edit) in enumerate(_pairs(source, edited)):
        yield from filtering.push(src, edit, next(motions) if t else None)
    yield from filtering.finish()


@torch.no_grad()
def stabilize(
    source: Iterable[torch.Tensor],
    edited: Iterable[torch.Tensor],
    encoder=None,
    config: StabilizeConfig | None = None,
) -> Iterator[torch.Tensor]:
    """Stabilise a per-frame edit along the source's motion, both ways in time, streaming.

    Args:
        source: ``(3, H, W)`` source frames in [0, 1] (an iterable or a ``(T, 3, H, W)`` tensor).
        edited: the edited frames, same length and size.
        encoder: anything with ``iter_features`` (see :func:`walkreg.features.create_features`); needed for ``"crw"``.
        config: :class:`StabilizeConfig`.

    Yields:
        ``(3, H, W)`` stabilised frames in [0, 1], in order; frame ``t`` comes out once frame
        ``t + lookahead`` (at most ``t + 2 * lookahead - 1``) has been read.
    """
    cfg = config or StabilizeConfig()
    _check_encoder(cfg, encoder)
    estimate, previous = _MOTIONS[cfg.method](cfg), None
    filtering = _TwoWayFilter(cfg.strength, cfg.lookahead)
    for src, edit, feats in _with_features(_pairs(source, edited), encoder if cfg.method == "crw" else None):
        yield from filtering.push(src, edit, estimate(previous, (src, feats)) if previous is not None else None)
        previous = src, feats
    yield from filtering.finish()
