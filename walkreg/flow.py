"""The classical optical-flow baseline: OpenCV DIS flow, its forward-backward occlusion check, and the warp error
of an edited clip along the source's flow (Lai et al. 2018, "Learning Blind Video Temporal Consistency").

Needs OpenCV (``pip install 'walkreg[flow]'``), imported only when a function here runs. Frames are ``(3, H, W)``
float RGB in [0, 1]; flows are ``(2, H, W)`` in pixels, ``(dx, dy)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


DIS_MIN_SIZE = 12  # OpenCV's DIS flow needs frames at least this many pixels wide or high


def _cv2():
    try:
        import cv2
    except ImportError as err:
        raise ImportError("The optical-flow baseline needs OpenCV: `pip install 'walkreg[flow]'`.") from err
    return cv2


def _grey(frame: torch.Tensor) -> np.ndarray:
    rgb = (frame.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(_cv2().cvtColor(rgb, _cv2().COLOR_RGB2GRAY))


def dis_flow(frame_a: torch.Tensor, frame_b: torch.Tensor) -> torch.Tensor:
    """OpenCV DIS flow (medium preset) from ``frame_a`` to ``frame_b`` (``(3, H, W)``): ``(2, H, W)`` with
    ``frame_a[y, x] ~ frame_b[y + flow[1], x + flow[0]]``."""
    if max(frame_a.shape[-2:]) < DIS_MIN_SIZE:
        raise ValueError(
            f"DIS optical flow needs frames at least {DIS_MIN_SIZE} pixels wide or high, but they are "
            f"{tuple(frame_a.shape[-2:])}."
        )
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
    each) warped onto it along ``flow`` (from :func:`guide_flow`), over the visible pixels; lower is more
    consistent."""
    backward, visible = flow
    error = (warp(edited[0], backward) - edited[1]).abs().mean(0)
    return float(error[visible].mean()) if visible.any() else float(error.mean())


def flow_warp_error(guide: tuple[torch.Tensor, torch.Tensor], edited: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Warp error of an edited frame pair along the DIS flow of the ``guide`` pair (both ``(3, H, W)`` pairs, t then
    t+1): :func:`warp_error` of :func:`guide_flow`."""
    return warp_error(guide_flow(*guide), edited)
