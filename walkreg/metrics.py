"""DAVIS video-object-segmentation measures: region similarity J and boundary F, as davis2017-evaluation defines them.

Definitions (Perazzi et al. 2016; Pont-Tuset et al. 2017; the ``davis2017-evaluation`` toolkit):

- **J** is the intersection over union of the predicted and annotated object masks, counted outside void pixels;
  an empty union counts as 1.
- **F** compares one-pixel boundary maps. A boundary pixel is a mask pixel that differs from its right, lower or
  lower-right neighbour (the frame's last row and column compare with their single in-frame neighbour). Each map is
  dilated by a disk of radius ``ceil(0.008 * ||(H, W)||)`` pixels; precision is the share of predicted boundary
  pixels inside the dilated annotated boundary, recall the converse, and F their harmonic mean (an empty boundary on
  one side gives precision 1 / recall 0 or the reverse; empty on both sides gives F = 1). Void pixels are removed
  from both masks before the boundaries are taken.
- Per object and per sequence the per-frame values are summarised by the mean, the recall (share of frames above
  0.5) and the decay (mean of the first quarter of frames minus the mean of the last quarter).

Only numpy is used: the disk dilation is a union of horizontal run-length dilations, one per row of the disk.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


BOUNDARY_TOLERANCE = 0.008  # DAVIS 2017 boundary tolerance, as a fraction of the image diagonal


def _check_masks(annotation: np.ndarray, prediction: np.ndarray, void: np.ndarray | None) -> np.ndarray:
    """Validate two ``(H, W)`` masks (and the void mask); return the valid-pixel mask."""
    if annotation.ndim != 2 or annotation.shape != prediction.shape:
        raise ValueError(
            "`annotation` and `prediction` must be (H, W) masks of one shape, "
            f"but are {annotation.shape} and {prediction.shape}."
        )
    if void is None:
        return np.ones(annotation.shape, dtype=bool)
    if void.shape != annotation.shape:
        raise ValueError(f"`void` must have the masks' shape {annotation.shape}, but has {void.shape}.")
    return ~void.astype(bool)


def jaccard(annotation: np.ndarray, prediction: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity J of two ``(H, W)`` binary masks, ignoring ``void`` pixels (1.0 when both are empty)."""
    valid = _check_masks(annotation, prediction, void)
    annotation, prediction = annotation.astype(bool), prediction.astype(bool)
    union = np.count_nonzero((annotation | prediction) & valid)
    if union == 0:
        return 1.0
    return np.count_nonzero(annotation & prediction & valid) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` mask -> ``(H, W)`` bool map of pixels whose value differs from the right, lower or lower-right one.

    Neighbours beyond the frame count as background, except on the last row (compared with the right neighbour
    only) and the last column (lower neighbour only); the bottom-right pixel is never a boundary.
    """
    mask = mask.astype(bool)
    right = np.zeros_like(mask)
    below = np.zeros_like(mask)
    diagonal = np.zeros_like(mask)
    right[:, :-1] = mask[:, 1:]
    below[:-1, :] = mask[1:, :]
    diagonal[:-1, :-1] = mask[1:, 1:]
    edges = (mask ^ right) | (mask ^ below) | (mask ^ diagonal)
    edges[-1, :] = mask[-1, :] ^ right[-1, :]
    edges[:, -1] = mask[:, -1] ^ below[:, -1]
    edges[-1, -1] = False
    return edges


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of an ``(H, W)`` mask by the disk ``{(dy, dx): dy^2 + dx^2 <= radius^2}``; outside is empty.

    Each row ``dy`` of the disk is a horizontal segment of half-width ``floor(sqrt(r^2 - dy^2))``; a prefix sum over
    columns dilates by that segment in one step, and the result is shifted by ``dy`` rows.
    """
    if radius < 0:
        raise ValueError(f"`radius` must be >= 0, but is {radius}.")
    mask = mask.astype(bool)
    h, w = mask.shape
    prefix = np.zeros((h, w + 1), dtype=np.int32)
    np.cumsum(mask, axis=1, out=prefix[:, 1:])
    cols = np.arange(w)
    out = np.zeros_like(mask)
    for dy in range(-radius, radius + 1):
        if abs(dy) >= h:
            continue
        half = math.isqrt(radius * radius - dy * dy)
        lo, hi = np.clip(cols - half, 0, w), np.clip(cols + half + 1, 0, w)
        rows = (prefix[:, hi] - prefix[:, lo]) > 0  # any set pixel within `half` columns, same row
        if dy >= 0:
            out[: h - dy] |= rows[dy:]
        else:
            out[-dy:] |= rows[: h + dy]
    return out


def boundary_radius(shape: tuple[int, int], tolerance: float = BOUNDARY_TOLERANCE) -> int:
    """Dilation radius in pixels: ``tolerance`` itself when >= 1, else ``ceil(tolerance * image diagonal)``."""
    if not tolerance > 0:
        raise ValueError(f"`tolerance` must be > 0, but is {tolerance}.")
    return int(tolerance) if tolerance >= 1 else math.ceil(tolerance * math.hypot(*shape))


def f_measure(
    annotation: np.ndarray,
    prediction: np.ndarray,
    void: np.ndarray | None = None,
    tolerance: float = BOUNDARY_TOLERANCE,
) -> float:
    """Boundary F-measure of two ``(H, W)`` binary masks (see the module docstring), ignoring ``void`` pixels."""
    valid = _check_masks(annotation, prediction, void)
    gt_edges = boundary_map(annotation.astype(bool) & valid)
    pred_edges = boundary_map(prediction.astype(bool) & valid)
    n_gt, n_pred = np.count_nonzero(gt_edges), np.count_nonzero(pred_edges)
    if n_gt == 0 or n_pred == 0:
        precision = 1.0 if n_pred == 0 else 0.0
        recall = 1.0 if n_gt == 0 else 0.0
    else:
        radius = boundary_radius(annotation.shape, tolerance)
        precision = np.count_nonzero(pred_edges & dilate_disk(gt_edges, radius)) / n_pred
        recall = np.count_nonzero(gt_edges & dilate_disk(pred_edges, radius)) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass
class Statistics:
    """Summary of per-frame values: ``mean``, ``recall`` (share > 0.5) and ``decay`` (first quarter - last quarter)."""

    mean: float
    recall: float
    decay: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(values: np.ndarray | list[float]) -> Statistics:
    """Mean, recall and decay of per-frame values ``(T,)`` (NaNs are skipped), as the DAVIS toolkit bins them.

    The decay splits the frames into 4 bins at ``round(linspace(1, T, 5)) - 1`` (bin ``i`` spans boundary ``i``
    to boundary ``i + 1``, both included) and subtracts the last bin's mean from the first's.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"`values` must be a non-empty 1-D array of per-frame values, but has shape {values.shape}.")
    edges = (np.round(np.linspace(1, values.size, 5) + 1e-10) - 1).astype(int)
    first, last = values[edges[0] : edges[1] + 1], values[edges[3] : edges[4] + 1]
    return Statistics(
        mean=float(np.nanmean(values)),
        recall=float(np.nanmean(values > 0.5)),
        decay=float(np.nanmean(first) - np.nanmean(last)),
    )
