"""Pixel-accurate motion between two source frames, from cell-level CRW transitions: soft placement, then a guided
refinement on the frames themselves, and the photometric check that says where the motion can be trusted.

Frames are ``(3, H, W)`` float RGB in [0, 1]; a motion field is ``(2, H, W)`` in pixels, ``(dx, dy)``, with
``frame[y, x] ~ target[y + dy, x + dx]`` (the layout of :func:`walkreg.flow.dis_flow`, sampled by
:func:`walkreg.flow.warp`). Nothing here needs OpenCV.

- :func:`soft_placement`: the expected displacement of every cell under a :class:`~walkreg.walks.SparseTransitions`
  step, a sub-cell estimate (the transition weights interpolate between key cells).
- :func:`upsample_motion`: cell displacements to a smooth pixel field.
- :func:`refine_motion`: Lucas-Kanade iterations on the source frames, coarse to fine, starting from a given field
  (the CRW field), so the walk gives the long-range anchor and the pixels give the last pixel.
- :func:`photometric_confidence`: ``(H, W)`` in [0, 1], high where the target warped along the motion matches the
  frame (low where the motion is wrong, the content changed or is occluded).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from walkreg.cells import STRIDE, upsample_cells
from walkreg.flow import warp
from walkreg.walks import SparseTransitions


_LUMA = (0.299, 0.587, 0.114)


def soft_placement(step: SparseTransitions, height: int, width: int, reach: float = 1.5) -> torch.Tensor:
    """Expected displacement, in pixels, of each cell of an ``height x width`` cell grid under a batch-1 ``step``
    (query frame -> key frame, same grid), over the key cells closer than ``reach`` cells to the most likely one
    (so far-away modes do not pull it off): ``(1, 2, height, width)``, ``(dx, dy)``."""
    cells = torch.arange(height * width, device=step.indices.device)
    rows, cols = cells.div(width, rounding_mode="floor"), cells % width
    keys = step.indices[0].clamp(max=height * width - 1)  # (N, K)
    dx, dy = (cols[keys] - cols[:, None]).float(), (rows[keys] - rows[:, None]).float()
    mode = step.weights[0].argmax(-1, keepdim=True)
    near = (dx - dx.gather(1, mode)).square() + (dy - dy.gather(1, mode)).square() < reach**2
    weights = step.weights[0].float() * near
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
    return torch.stack([(weights * dx).sum(-1), (weights * dy).sum(-1)]).view(1, 2, height, width) * STRIDE


def upsample_motion(cells: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(1, 2, h, w)`` cell displacements in pixels -> ``(2, H, W)`` pixel field (bilinear from the cell centres)."""
    return upsample_cells(cells.float(), size)


def _grey(frame: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` -> ``(1, 1, H, W)`` luma."""
    return torch.einsum("c,chw->hw", frame.new_tensor(_LUMA), frame)[None, None]


def _running_mean(image: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Mean over the ``2 * radius + 1`` entries around each entry of ``image`` along ``dim`` (-1 or -2; at the edges
    over the entries inside), from a running sum: the cost does not grow with ``radius``."""
    size, side = image.shape[dim], 2 * radius + 1
    padding = (radius + 1, radius) if dim == -1 else (0, 0, radius + 1, radius)
    totals = F.pad(image, padding).cumsum(dim)
    sums = totals.narrow(dim, side, size) - totals.narrow(dim, 0, size)
    index = torch.arange(size, device=image.device)
    counts = (index + radius).clamp(max=size - 1) - (index - radius).clamp(min=0) + 1
    return sums / (counts if dim == -1 else counts[:, None]).to(image.dtype)


def _box(image: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the ``(2 * radius + 1)`` square around each pixel of ``(1, C, H, W)`` (edges: the pixels inside)."""
    return _running_mean(_running_mean(image, radius, -1), radius, -2)


def _gradients(grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of ``(1, 1, H, W)`` in x and y (replicate border), each ``(1, 1, H, W)``."""
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    return gx, gy


def _lucas_kanade(
    grey: torch.Tensor, target: torch.Tensor, flow: torch.Tensor, iterations: int, radius: int
) -> torch.Tensor:
    """Inverse-compositional Lucas-Kanade on one scale: ``grey`` and ``target`` ``(1, 1, H, W)``, ``flow``
    ``(2, H, W)`` -> the refined ``(2, H, W)``. Textureless windows keep their flow (Tikhonov term); each update is
    clipped to one pixel per iteration, so a wrong start cannot run far."""
    gx, gy = _gradients(grey)
    sxx, sxy, syy = _box(gx * gx, radius), _box(gx * gy, radius), _box(gy * gy, radius)
    damping = 1e-4
    sxx, syy = sxx + damping, syy + damping
    det = sxx * syy - sxy * sxy
    for _ in range(iterations):
        error = warp(target[0], flow)[None] - grey
        bx, by = _box(gx * error, radius), _box(gy * error, radius)
        dx, dy = (sxy * by - syy * bx) / det, (sxy * bx - sxx * by) / det
        flow = flow + torch.cat([dx, dy], 1)[0].clamp(-1, 1)
    return flow


def refine_motion(
    frame: torch.Tensor,
    target: torch.Tensor,
    flow: torch.Tensor,
    iterations: tuple[int, int] = (2, 1),
    radius: int = 4,
) -> torch.Tensor:
    """Refine the ``(2, H, W)`` motion ``flow`` of ``frame`` into ``target`` (both ``(3, H, W)``) by Lucas-Kanade on
    their luma: ``iterations[0]`` steps at half resolution, then ``iterations[1]`` at full resolution, with
    ``(2 * radius + 1)``-pixel windows. Returns the refined ``(2, H, W)`` field."""
    grey, goal = _grey(frame), _grey(target)
    size = grey.shape[-2:]
    if min(size) >= 4 * (2 * radius + 1):
        start = F.avg_pool2d(flow[None], 2)[0] / 2
        coarse = _lucas_kanade(F.avg_pool2d(grey, 2), F.avg_pool2d(goal, 2), start, iterations[0], radius)
        flow = flow + F.interpolate(2 * (coarse - start)[None], size=size, mode="bilinear", align_corners=False)[0]
    return _lucas_kanade(grey, goal, flow, iterations[1], radius)


def local_error(frame: torch.Tensor, target: torch.Tensor, flow: torch.Tensor, radius: int) -> torch.Tensor:
    """``(H, W)``: mean absolute colour difference between ``frame`` and ``target`` warped along ``flow``
    (``(3, H, W)`` frames, ``(2, H, W)`` flow), averaged over the ``(2 * radius + 1)`` square around each pixel."""
    return _box((warp(target, flow) - frame).abs().mean(0)[None, None], radius)[0, 0]


def pick_motion(frame: torch.Tensor, target: torch.Tensor, candidates: list[torch.Tensor], radius: int = 4):
    """Per pixel, the candidate ``(2, H, W)`` motion of ``frame`` into ``target`` with the smallest
    :func:`local_error`; ties go to the earlier candidate. Returns ``(2, H, W)``."""
    best, least = candidates[0], local_error(frame, target, candidates[0], radius)
    for flow in candidates[1:]:
        error = local_error(frame, target, flow, radius)
        better = error < least  # (H, W)
        best, least = torch.where(better, flow, best), torch.where(better, error, least)
    return best


def photometric_confidence(
    frame: torch.Tensor, target: torch.Tensor, flow: torch.Tensor, tolerance: float
) -> torch.Tensor:
    """``(H, W)`` in [0, 1]: ``exp(-(e / tolerance) ** 2)`` with ``e`` the 3x3-averaged mean absolute colour
    difference between ``frame`` and ``target`` warped along ``flow`` (frames ``(3, H, W)``, flow ``(2, H, W)``)."""
    return torch.exp(-(local_error(frame, target, flow, 1) / tolerance).square())
