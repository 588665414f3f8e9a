"""Every feature extractor walkreg can walk on, by one set of names: :func:`create_features`.

A feature extractor has ``iter_features(frames)``: ``(3, H, W)`` frames in [0, 1] in, one unit-norm
``(1, C, ceil(H/8), ceil(W/8))`` map per frame out (the :mod:`walkreg.cells` grid). The names:

- ``default``: the encoder bundled with walkreg (see its model card);
- a directory written by ``CRWEncoder.save_pretrained`` (or ``walkreg convert-crw``);
- ``random-resnet18`` / ``random-resnet18-small``: the walk encoder's architecture at its random initialisation
  (seed 0 unless another is given), in eval mode: what the architecture alone gives;
- ``lab``: raw pixels, each 8x8 cell's Lab colours as one vector (:class:`LabFeatures`): what colour alone gives;
- ``rgb``: raw pixels, each 8x8 cell's RGB colours, mean-centred per cell (:class:`RGBFeatures`), so a cell's
  texture matters and its brightness does not.

Encoders come back in eval mode (BatchNorm running statistics), ready for inference.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from walkreg.cells import STRIDE, pad_to_cells
from walkreg.encoder import ARCHITECTURES, CRWEncoder


FEATURE_NAMES = ("default", "random-resnet18", "random-resnet18-small", "lab", "rgb")
DEPRECATED_NAMES = {"random": "random-resnet18", "random-small": "random-resnet18-small", "pixels": "rgb"}

_D65_WHITE = (0.95047, 1.0, 1.08883)
_RGB_TO_XYZ = (  # linear sRGB -> CIE XYZ (D65)
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)


def rgb_to_lab(frames: torch.Tensor) -> torch.Tensor:
    """sRGB ``(..., 3, H, W)`` in [0, 1] -> CIE Lab ``(..., 3, H, W)`` (L in [0, 100], a and b roughly [-128, 127])."""
    if frames.ndim < 3 or frames.shape[-3] != 3:
        raise ValueError(f"`frames` must have shape (..., 3, H, W), but got {tuple(frames.shape)}.")
    rgb = frames.clamp(0, 1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = torch.tensor(_RGB_TO_XYZ, dtype=frames.dtype, device=frames.device)
    white = torch.tensor(_D65_WHITE, dtype=frames.dtype, device=frames.device)
    xyz = torch.einsum("ij,...jhw->...ihw", matrix, linear) / white[:, None, None]
    delta = 6 / 29
    f = torch.where(xyz > delta**3, xyz.clamp_min(1e-12) ** (1 / 3), xyz / (3 * delta**2) + 4 / 29)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


class LabFeatures:
    """Raw-pixel features in Lab: each 8x8 cell's Lab pixels as one unit vector, ``(1, 3 * 64 + 1, h, w)``.

    Lab values are centred and scaled (``(L - 50) / 50``, ``a / 50``, ``b / 50``), each cell's ``3 * 64`` values
    (divided by 8) form a vector ``x``, mapped onto the unit sphere by inverse stereographic projection,
    ``[2x, 1 - |x|^2] / (1 + |x|^2)``, so that dot products rank neighbours by (conformally warped) Euclidean
    distance in Lab, brightness included, rather than by angle alone.
    """

    def __init__(self, device: torch.device | str | None = None):
        self.device = device

    def iter_features(self, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for frame in frames:
            lab = rgb_to_lab(pad_to_cells(frame[None].to(self.device)))
            lab = (lab - lab.new_tensor([50.0, 0.0, 0.0])[:, None, None]) / 50.0
            x = F.pixel_unshuffle(lab, STRIDE) / STRIDE
            norm2 = x.pow(2).sum(1, keepdim=True)
            yield torch.cat([2 * x, 1 - norm2], dim=1) / (1 + norm2)


class RGBFeatures:
    """Raw-pixel features in RGB: each 8x8 cell's RGB pixels, mean-centred per cell and L2-normalised,
    ``(1, 3 * 64, h, w)``."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = device

    def iter_features(self, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for frame in frames:
            cells = F.pixel_unshuffle(pad_to_cells(frame[None].to(self.device)), STRIDE)
            yield F.normalize(cells - cells.mean(1, keepdim=True), dim=1)


class CachedFeatures:
    """Any features, computed once per frame and replayed when the same frame tensor is walked on again (a source
    scored against several edits, or stabilised and then scored).

    For clips held in memory: ``iter_features`` reads the whole iterable first, and every frame is kept alive with
    its features (so its storage, the cache key, cannot be reused by another tensor).
    """

    def __init__(self, features):
        self.features = features
        self.cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @staticmethod
    def _key(frame: torch.Tensor) -> tuple:
        return frame.data_ptr(), tuple(frame.shape), tuple(frame.stride())

    def iter_features(self, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        frames = list(frames)
        missing = [frame for frame in frames if self._key(frame) not in self.cache]
        for frame, feats in zip(missing, self.features.iter_features(missing), strict=True):
            self.cache[self._key(frame)] = (frame, feats)
        return (self.cache[self._key(frame)][1] for frame in frames)


def random_encoder(arch: str = "resnet18", seed: int = 0) -> CRWEncoder:
    """An untrained :class:`CRWEncoder` (torchvision's initialisation, seeded), in eval mode; the global random
    state is left as it was."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"`arch` must be one of {sorted(ARCHITECTURES)}, but is {arch!r}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CRWEncoder(arch=arch).eval()


def create_features(
    name_or_dir: str | os.PathLike, device: torch.device | str | None = None, seed: int = 0
) -> CRWEncoder | LabFeatures | RGBFeatures:
    """The feature extractor ``name_or_dir`` names (see the module docstring), on ``device``, ready for inference.

    Args:
        name_or_dir: one of ``FEATURE_NAMES`` or an encoder directory. The spellings ``random``, ``random-small``
            and ``pixels`` of walkreg 0.1 still work, with a ``FutureWarning``.
        device: where features are computed (default: the CPU).
        seed: initialisation seed of the ``random-*`` encoders.
    """
    spec = os.fspath(name_or_dir)
    if spec in DEPRECATED_NAMES:
        warnings.warn(
            f"The features name {spec!r} is deprecated; use {DEPRECATED_NAMES[spec]!r}.", FutureWarning, stacklevel=2
        )
        spec = DEPRECATED_NAMES[spec]
    if spec == "lab":
        return LabFeatures(device)
    if spec == "rgb":
        return RGBFeatures(device)
    if spec == "default":
        encoder = CRWEncoder.from_pretrained()
    elif spec.startswith("random-") and spec in FEATURE_NAMES:
        encoder = random_encoder(spec.removeprefix("random-"), seed)
    elif Path(spec).is_dir():
        encoder = CRWEncoder.from_pretrained(spec)
    else:
        raise ValueError(
            f"`encoder` must be an encoder directory or one of {', '.join(FEATURE_NAMES)}, but is {spec!r}."
        )
    return encoder.to(device).eval() if device is not None else encoder.eval()
