"""Baseline features for label propagation: raw Lab pixels at stride 8, and random-init walk encoders.

They show what training buys: :func:`lab_features` uses colour alone, :func:`random_encoder` the architecture alone.
Both produce what :func:`walkreg.propagation.propagate` consumes: unit-norm ``(1, C, ceil(H/8), ceil(W/8))`` maps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F

from walkreg.encoder import ARCHITECTURES, CRWEncoder


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


def lab_features(frames: Iterable[torch.Tensor], stride: int = 8) -> Iterator[torch.Tensor]:
    """Raw-pixel features: each ``stride x stride`` cell's Lab pixels, as one unit vector per cell.

    Lab values are centred and scaled (``(L - 50) / 50``, ``a / 50``, ``b / 50``), the frame is edge-padded to a
    multiple of ``stride``, and each cell's ``3 * stride^2`` values (divided by ``stride``) form a vector ``x``. It
    is mapped onto the unit sphere by inverse stereographic projection, ``[2x, 1 - |x|^2] / (1 + |x|^2)``, so that
    the dot products :func:`~walkreg.propagation.propagate` uses rank neighbours by (conformally warped) Euclidean
    distance in Lab, brightness included, rather than by angle alone.

    Args:
        frames: iterable of ``(3, H, W)`` float RGB frames in [0, 1].

    Yields:
        ``(1, 3 * stride^2 + 1, ceil(H/stride), ceil(W/stride))`` unit-norm features per frame.
    """
    if stride < 1:
        raise ValueError(f"`stride` must be >= 1, but is {stride}.")
    for frame in frames:
        lab = rgb_to_lab(frame[None])
        lab = (lab - lab.new_tensor([50.0, 0.0, 0.0])[:, None, None]) / 50.0
        h, w = lab.shape[-2:]
        lab = F.pad(lab, (0, -w % stride, 0, -h % stride), mode="replicate")
        x = F.pixel_unshuffle(lab, stride) / stride  # (1, 3 * stride^2, h/s, w/s)
        norm2 = x.pow(2).sum(1, keepdim=True)
        yield torch.cat([2 * x, 1 - norm2], dim=1) / (1 + norm2)


def random_encoder(arch: str = "resnet18", seed: int = 0) -> CRWEncoder:
    """An untrained :class:`CRWEncoder` (torchvision's initialisation, seeded), in eval mode."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"`arch` must be one of {sorted(ARCHITECTURES)}, but is {arch!r}.")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return CRWEncoder(arch=arch).eval()
    finally:
        torch.random.set_rng_state(generator_state)
