"""Post-hoc stabilisation of a frame-by-frame edit along the source clip's correspondences, streaming.

The edit's low frequencies relative to the source, the residual ``D_t = low(edited_t) - low(source_t)`` on the
8x8-cell grid, are filtered recursively along the motion::

    R_t = a_t * carry(R_{t-1}) + (1 - a_t) * D_t,     a_t = strength * confidence_t
    output_t = edited_t + upsample(R_t - D_t)

so each output frame keeps its own high frequencies (everything that ``low`` removes) and its low band follows the
source motion instead of flickering. ``carry`` and ``confidence`` depend on ``method``:

- ``"crw"``: source CRW transitions ``t -> t-1`` pull the previous residual onto frame ``t``; the confidence of
  a cell is its forward-backward cycle consistency (the mass of the source walk ``t -> t-1 -> t`` that comes
  home), so occluded and disoccluded cells take the current frame's edit.
- ``"flow"`` (baseline): the same with OpenCV DIS optical flow and its forward-backward occlusion check.
- ``"ema"`` (baseline): no motion, ``carry`` is the identity and the confidence is 1 (an exponential moving
  average of the residual).

Working on the residual rather than on colours keeps real lighting changes of the source.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from walkreg.cells import STRIDE, cell_means, upsample_cells
from walkreg.flow import dis_flow, flow_visibility, warp
from walkreg.walks import WalkConfig, round_trip_confidence


METHODS = ("crw", "flow", "ema")


@dataclass
class StabilizeConfig:
    """Hyper-parameters of :func:`stabilize`.

    Attributes:
        method: ``"crw"``, ``"flow"`` or ``"ema"`` (see the module docstring).
        strength: weight of the carried residual where the correspondence is fully confident, in [0, 1);
            the filter's memory is about ``1 / (1 - strength)`` frames.
        full_confidence: cycle-consistency mass (home-coming mass of ``t -> t-1 -> t``) at and above which a cell
            counts as fully visible; below it the confidence falls linearly to 0.
        walk: transition hyper-parameters of the ``"crw"`` method (temperature, radius, top_k, home_radius).
    """

    method: str = "crw"
    strength: float = 0.8
    full_confidence: float = 0.3
    walk: WalkConfig = field(default_factory=lambda: WalkConfig(temperature=0.02, home_radius=2.5))

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, but is {self.method!r}.")
        if not 0 <= self.strength < 1:
            raise ValueError(f"`strength` must be in [0, 1), but is {self.strength}.")
        if not 0 < self.full_confidence <= 1:
            raise ValueError(f"`full_confidence` must be in (0, 1], but is {self.full_confidence}.")


class _CRWCarrier:
    def __init__(self, config: WalkConfig, full_confidence: float):
        self.config, self.full_confidence, self.previous = config, full_confidence, None

    def start(self, source: torch.Tensor, feats: torch.Tensor) -> None:
        self.previous = feats

    def step(
        self, source: torch.Tensor, feats: torch.Tensor, residual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        back, there = self.config.step(feats, self.previous), self.config.step(self.previous, feats)
        self.previous = feats
        confidence = round_trip_confidence(back, there, feats.shape[-1], self.config.home_radius, self.full_confidence)
        carried = back.apply(residual.flatten(2))
        return carried.view_as(residual), confidence.view(1, 1, *residual.shape[-2:])


class _FlowCarrier:
    def start(self, source: torch.Tensor, feats: None) -> None:
        self.previous = source

    def step(self, source: torch.Tensor, feats: None, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        backward, forward = dis_flow(source, self.previous), dis_flow(self.previous, source)
        self.previous = source
        visible = flow_visibility(backward, forward).float()[None]
        cells_flow = cell_means(backward)[0] / STRIDE
        return warp(residual[0], cells_flow)[None], cell_means(visible[0])


class _StillCarrier:
    def start(self, source: torch.Tensor, feats: None) -> None:
        pass

    def step(self, source: torch.Tensor, feats: None, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return residual, torch.ones_like(residual[:, :1])


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


@torch.no_grad()
def stabilize(
    source: Iterable[torch.Tensor],
    edited: Iterable[torch.Tensor],
    encoder=None,
    config: StabilizeConfig | None = None,
) -> Iterator[torch.Tensor]:
    """Stabilise a per-frame edit along the source's motion, one frame at a time.

    Args:
        source: ``(3, H, W)`` source frames in [0, 1] (an iterable or a ``(T, 3, H, W)`` tensor).
        edited: the edited frames, same length and size.
        encoder: anything with ``iter_features`` (see :func:`walkreg.features.create_features`); needed for ``"crw"``.
        config: :class:`StabilizeConfig`.

    Yields:
        ``(3, H, W)`` stabilised frames in [0, 1], frame 0 first (frame 0 is the edit itself).
    """
    cfg = config or StabilizeConfig()
    if cfg.method == "crw" and encoder is None:
        raise ValueError("`encoder` is required for `method='crw'`.")
    carrier = {"crw": lambda: _CRWCarrier(cfg.walk, cfg.full_confidence), "flow": _FlowCarrier, "ema": _StillCarrier}[
        cfg.method
    ]()
    state = None
    for src, edit, feats in _with_features(_pairs(source, edited), encoder if cfg.method == "crw" else None):
        residual = cell_means(edit) - cell_means(src)
        if state is None:
            carrier.start(src, feats)
            state = residual
            yield edit
            continue
        carried, confidence = carrier.step(src, feats, state)
        blend = cfg.strength * confidence
        state = blend * carried + (1 - blend) * residual
        yield (edit + upsample_cells(state - residual, edit.shape[-2:])).clamp(0, 1)
