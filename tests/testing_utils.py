"""Shared helpers for walkreg's tests: fixture paths, synthetic clips with known motion, tiny encoders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from walkreg import CRWEncoder


FIXTURES = Path(__file__).parent / "fixtures"
DAVIS_ROOT = FIXTURES / "davis"  # 3 sequences x 12 frames at 240p (see fixtures/README.md)
DAVIS_RESOLUTION = "240p"
DAVIS2017_ROOT = FIXTURES / "davis2017"  # tennis: 2 objects + void, genuine DAVIS 2017 palette PNGs
CLIPS = FIXTURES / "clips"  # carphone.mp4 (24 frames, 176x144), cups.mp4 (16 frames, 428x240)
SHARED_DATA = Path(os.environ.get("WALKREG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

requires_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"shared data not found at {SHARED_DATA}")


def tiny_encoder(seed: int = 0, **kwargs) -> CRWEncoder:
    """The small ResNet-18 variant with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    return CRWEncoder(arch="resnet18-small", **kwargs).eval()


def shift_frame(frame: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate ``(..., H, W)`` content by ``(dy, dx)`` pixels (content moves down/right), edges replicated."""
    h, w = frame.shape[-2:]
    pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))
    padded = F.pad(frame.unsqueeze(0) if frame.ndim == 3 else frame, pad, mode="replicate")
    out = padded[..., max(-dy, 0) : max(-dy, 0) + h, max(-dx, 0) : max(-dx, 0) + w]
    return out.squeeze(0) if frame.ndim == 3 else out


def synthetic_video(
    num_frames: int, height: int, width: int, shift: tuple[int, int] = (0, 8), seed: int = 0
) -> torch.Tensor:
    """A smooth random texture translated by ``shift`` pixels per frame: ``(T, 3, H, W)`` in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    texture = torch.rand(1, 3, height // 4 + 1, width // 4 + 1, generator=g)
    texture = F.interpolate(texture, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)[0]
    return torch.stack([shift_frame(texture, shift[0] * t, shift[1] * t) for t in range(num_frames)])


def assert_tensors_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    """``torch.testing.assert_close`` that reports the largest difference and where it is, never whole tensors."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.double() - expected.double()).abs()
    bound = atol + rtol * expected.double().abs()
    bad = diff > bound
    if bad.any():
        where = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise AssertionError(
            f"{int(bad.sum())} of {diff.numel()} elements differ; max diff {diff.max().item():.3e}; first at {where}"
        )
