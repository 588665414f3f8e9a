"""Source correspondences on a pipeline's latent grid: CRW transitions from the *source* video, computed once.

For a latent grid of ``h x w`` cells, source frames are resized to ``8h x 8w`` pixels so that the CRW encoder's
stride-8 features land exactly on the latent cells (for Stable Diffusion's VAE, stride 8 as well, that is the
pipeline's own resolution). Transitions are radius-limited and top-k sparse, so memory grows linearly with frames.
When the VAE compresses time, the transition between two latent frames composes the per-frame transitions of the
source frames between their representative frames (see :class:`~walkreg.pipelines.layouts.LatentLayout`).

Confidence of a node is the source walk's round-trip confidence (:func:`walkreg.walks.round_trip_confidence`): the
mass of the round trip ``f -> g -> f`` along the source transitions that comes home (within ``home_radius`` latent
cells), relative to ``full_mass``. Occluded or ambiguous nodes get low confidence.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from walkreg.encoder import CRWEncoder
from walkreg.progress import progress
from walkreg.walks import SparseTransitions, WalkConfig, compose, local_transitions_both_ways, round_trip_confidence

from .layouts import LatentLayout


@dataclass
class CorrespondenceConfig:
    """Hyper-parameters of the source transitions (latent cells are the unit of ``radius``).

    Attributes:
        temperature: softmax temperature of the affinities.
        top_k: kept entries per row (also after composing transitions).
        radius: a node may step to cells closer than ``radius`` latent cells.
        home_radius: a round trip is home when it ends strictly closer than this to its start, in latent cells.
        full_mass: home-coming mass at and above which a node's correspondence is fully trusted.
        chunk_size: frames per encoder forward pass.
    """

    temperature: float = 0.05
    top_k: int = 10
    radius: float = 12.0
    home_radius: float = 1.5
    full_mass: float = 0.3
    chunk_size: int = 4

    def __post_init__(self):
        WalkConfig(self.temperature, self.radius, self.top_k, self.home_radius)  # checks them
        if not 0 < self.full_mass <= 1:
            raise ValueError(f"`full_mass` must be in (0, 1], but is {self.full_mass}.")


@dataclass
class SourceCorrespondences:
    """Cached transitions between the latent frames of one source video.

    Attributes:
        previous: per latent frame ``f`` (``None`` for ``f = 0``), ``(1, N, K)`` transitions ``f -> f-1``: ``apply``
            pulls frame ``f-1`` values onto frame ``f``.
        anchor: per latent frame ``f`` (``None`` for ``f = 0``), transitions ``f -> 0``.
        previous_confidence, anchor_confidence: ``(F, N)`` round-trip cycle consistency in [0, 1] (0 for frame 0).
        grid: the latent grid ``(h, w)``; ``N = h * w``.
        layout: the latent layout the frames were counted in.
        num_source_frames: frames of the source video.
    """

    previous: list[SparseTransitions | None]
    anchor: list[SparseTransitions | None]
    previous_confidence: torch.Tensor
    anchor_confidence: torch.Tensor
    grid: tuple[int, int]
    layout: LatentLayout
    num_source_frames: int
    config: CorrespondenceConfig = field(default_factory=CorrespondenceConfig)

    @property
    def num_latent_frames(self) -> int:
        return len(self.previous)

    @property
    def nbytes(self) -> int:
        """Memory held by the cached transitions and confidences."""
        tensors = [self.previous_confidence, self.anchor_confidence]
        for item in self.previous + self.anchor:
            if item is not None:
                tensors += [item.indices, item.weights]
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, device: torch.device | str) -> SourceCorrespondences:
        return SourceCorrespondences(
            [s if s is None else s.to(device) for s in self.previous],
            [s if s is None else s.to(device) for s in self.anchor],
            self.previous_confidence.to(device),
            self.anchor_confidence.to(device),
            self.grid,
            self.layout,
            self.num_source_frames,
            self.config,
        )

    @classmethod
    @torch.no_grad()
    def compute(
        cls,
        encoder: CRWEncoder,
        frames: torch.Tensor,
        grid: tuple[int, int],
        layout: LatentLayout | None = None,
        config: CorrespondenceConfig | None = None,
        show_progress: bool = True,
    ) -> SourceCorrespondences:
        """Encode the source video once and build every transition the propagation needs.

        Args:
            encoder: a :class:`~walkreg.CRWEncoder`.
            frames: ``(T, 3, H, W)`` float source frames in [0, 1] (or a list of PIL images).
            grid: the latent grid ``(h, w)``.
            layout: the pipeline's latent layout (frames as batch, no time compression, if ``None``).
        """
        frames = as_frames(frames)
        layout = layout or LatentLayout("FCHW")
        config = config or CorrespondenceConfig()
        num_latent = layout.num_latent_frames(frames.shape[0])
        if num_latent < 2:
            raise ValueError(
                "`frames` must give at least 2 latent frames to propagate between, "
                f"but {frames.shape[0]} source frames give {num_latent}."
            )
        h, w = grid
        last = layout.source_frame(num_latent - 1)
        resized = F.interpolate(
            frames[: last + 1], size=(8 * h, 8 * w), mode="bilinear", antialias=True, align_corners=False
        )
        features = encoder.iter_features(resized.clamp(0, 1), chunk_size=config.chunk_size)
        both_ways = functools.partial(
            local_transitions_both_ways, temperature=config.temperature, radius=config.radius, top_k=config.top_k
        )

        def confidence(there: SparseTransitions, back: SparseTransitions) -> torch.Tensor:
            return round_trip_confidence(there, back, w, config.home_radius, config.full_mass).cpu()

        previous, anchor = [None], [None]
        prev_conf, anchor_conf = [torch.zeros(h * w)], [torch.zeros(h * w)]
        first = before = back_chain = fwd_chain = None
        bar = progress(features, desc="source correspondences", total=last + 1, disable=not show_progress)
        for s, feat in enumerate(bar):
            if s == 0:
                first = before = feat
                continue
            back, fwd = both_ways(feat, before)
            back_chain = back if back_chain is None else compose(back, back_chain, config.top_k)
            fwd_chain = fwd if fwd_chain is None else compose(fwd_chain, fwd, config.top_k)
            before = feat
            if s == layout.source_frame(len(previous)):
                to_first, from_first = both_ways(feat, first)
                previous.append(back_chain)
                anchor.append(to_first)
                prev_conf.append(confidence(back_chain, fwd_chain))
                anchor_conf.append(confidence(to_first, from_first))
                back_chain = fwd_chain = None
        device = first.device
        return cls(
            previous,
            anchor,
            torch.stack(prev_conf).to(device),
            torch.stack(anchor_conf).to(device),
            (h, w),
            layout,
            frames.shape[0],
            config,
        )


def as_frames(frames) -> torch.Tensor:
    """A ``(T, 3, H, W)`` float tensor in [0, 1], or a list of PIL images / ``(H, W, 3)`` uint8 arrays -> the
    tensor."""
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError("`source_video` holds no frames.")
        frames = torch.stack(
            [
                torch.from_numpy(np.asarray(f.convert("RGB") if hasattr(f, "convert") else f).copy()).permute(2, 0, 1)
                for f in frames
            ]
        )
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(
            f"`source_video` must be (T, 3, H, W) float in [0, 1] or a list of PIL images, but got {shape}."
        )
    return frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()


class CorrespondenceCache:
    """Builds :class:`SourceCorrespondences` for one source video on first use and keeps them per latent grid and
    layout, so every step (and every pipeline call on the same video) reuses them.

    Args:
        encoder: the CRW encoder (moved to the latents' device when first used; Diffusers' offload hooks do not
            manage it).
        source_video: ``(T, 3, H, W)`` float in [0, 1] or a list of PIL images -- the frames given to the pipeline.
        config: :class:`CorrespondenceConfig`.
    """

    def __init__(
        self,
        encoder: CRWEncoder | None,
        source_video,
        config: CorrespondenceConfig | None = None,
        show_progress: bool = True,
    ):
        self.encoder = encoder
        self.source_video = None if source_video is None else as_frames(source_video)
        self.config = config or CorrespondenceConfig()
        self.show_progress = show_progress
        self._entries: dict[tuple, SourceCorrespondences] = {}

    def get(self, grid: tuple[int, int], layout: LatentLayout, device: torch.device) -> SourceCorrespondences:
        key = (tuple(grid), layout)
        if key not in self._entries:
            if self.encoder is None or self.source_video is None:
                raise ValueError(
                    f"No source correspondences for a {grid[0]}x{grid[1]} latent grid in layout {layout.axes!r}; "
                    "pass `encoder` and `source_video`."
                )
            self.encoder.to(device)
            self._entries[key] = SourceCorrespondences.compute(
                self.encoder, self.source_video.to(device), grid, layout, self.config, self.show_progress
            )
        found = self._entries[key]
        if found.previous_confidence.device != device:
            found = self._entries[key] = found.to(device)
        return found

    def for_latents(self, frames: torch.Tensor, layout: LatentLayout) -> SourceCorrespondences:
        """Correspondences fitting ``(B, F, C, h, w)`` latent frames; refuses a frame count the source cannot give."""
        corr = self.get(frames.shape[-2:], layout, frames.device)
        if corr.num_latent_frames != frames.shape[1]:
            raise ValueError(
                f"`latents` hold {frames.shape[1]} frames, but the source video's {corr.num_source_frames} "
                f"frames give {corr.num_latent_frames} latent frames in layout {layout.axes!r}; "
                "pass the same frames to the pipeline."
            )
        return corr

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())
