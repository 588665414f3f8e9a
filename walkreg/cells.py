"""The feature-cell grid: every walkreg feature map has one cell per ``STRIDE x STRIDE`` block of pixels.

A ``(3, H, W)`` frame has ``ceil(H / STRIDE) x ceil(W / STRIDE)`` cells, numbered row-major; frames whose size is
not a multiple of ``STRIDE`` are replicate-padded on the bottom and right (the encoder's grid is the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


STRIDE = 8  # pixels per feature cell, in both directions
# Smallest frame side walkreg accepts: the cell grid is then at least 2x2, and the ResNet encoders' reflect padding
# has a neighbour to mirror in every layer (at 8 pixels or fewer a stride-8 map is 1 cell across, which it refuses).
MIN_FRAME_SIZE = 9


def pad_to_cells(frames: torch.Tensor, mode: str = "replicate") -> torch.Tensor:
    """``(B, C, H, W)`` -> padded on the bottom and right to multiples of ``STRIDE``, by ``F.pad``'s ``mode``
    (``"replicate"``, or ``"constant"`` for zeros)."""
    h, w = frames.shape[-2:]
    return F.pad(frames, (0, -w % STRIDE, 0, -h % STRIDE), mode=mode)


def cell_values(frame: torch.Tensor, sub_cells: int) -> torch.Tensor:
    """``(3, H, W)`` -> ``(1, 3 * sub_cells**2, h, w)``: the mean colours of ``sub_cells x sub_cells`` blocks per
    cell."""
    padded = pad_to_cells(frame[None])
    return F.pixel_unshuffle(padded if sub_cells == STRIDE else F.avg_pool2d(padded, STRIDE // sub_cells), sub_cells)


def cell_colours(values: torch.Tensor) -> torch.Tensor:
    """``(1, 3 * s * s, h, w)`` cell values -> ``(1, 3, h, w)`` mean colour per cell."""
    return values.unflatten(1, (3, -1)).mean(2)


def cell_means(image: torch.Tensor, padding: str = "replicate") -> torch.Tensor:
    """``(C, H, W)`` -> ``(1, C, h, w)``: the mean of every cell (the image's low band on the cell grid). Partial cells
    at the bottom and right are padded by :func:`pad_to_cells` with ``padding``: ``"constant"`` (zeros) keeps a mask's
    partial cells below 1, so ``cell_means(mask, "constant") == 1`` marks the cells whose whole block is set."""
    return F.avg_pool2d(pad_to_cells(image[None], padding), STRIDE)


def upsample_cells(cells: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(1, C, h, w)`` cell values -> ``(C, H, W)`` smooth image (bilinear from the cell centres, cropped to
    ``size``)."""
    h, w = cells.shape[-2:]
    full = F.interpolate(cells, size=(h * STRIDE, w * STRIDE), mode="bilinear", align_corners=False)
    return full[0, :, : size[0], : size[1]]
