"""Periodic validation during training: label propagation on a DAVIS-layout folder, scored by region IoU (J).

For each sequence the first ``max_frames`` frames are encoded (dense ``layer3`` features), the first annotation is
propagated with :func:`walkreg.propagate` (the paper's protocol), soft labels are upsampled bilinearly and argmaxed,
and J is the mean over objects and frames ``1..`` of the intersection over union with the ground truth.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from walkreg.encoder import CRWEncoder
from walkreg.metrics import jaccard
from walkreg.propagation import propagate
from walkreg.video import davis_sequences, iter_frames, read_annotation


@torch.no_grad()
def sequence_j(encoder: CRWEncoder, root: Path, name: str, resolution: str, max_frames: int) -> float:
    """Mean J of one sequence (objects are the ids of the first annotation; 0 background, 255 void ignored)."""
    masks = sorted((root / "Annotations" / resolution / name).glob("*.png"))[:max_frames]
    truth = np.stack([read_annotation(p) for p in masks])
    objects = [i for i in np.unique(truth[0]) if i not in (0, 255)]
    labels = [0, *objects]
    first = torch.from_numpy(np.stack([truth[0] == i for i in labels])).float()[None]  # (1, L, H, W)
    frames = iter_frames(root / "JPEGImages" / resolution / name, max_frames=len(masks))
    features = encoder.iter_features(frames)
    head = next(features)
    first_values = F.interpolate(first, size=head.shape[-2:], mode="bilinear", align_corners=False)
    scores = []
    for t, values in enumerate(propagate(chain([head], features), first_values.to(head.device))):
        if t == 0:
            continue
        up = F.interpolate(values.float().cpu(), size=truth.shape[1:], mode="bilinear", align_corners=False)
        pred = np.asarray(labels)[up[0].argmax(0).numpy()]
        void = truth[t] == 255
        scores += [jaccard(truth[t] == i, pred == i, void) for i in objects]
    return float(np.mean(scores)) if scores else float("nan")


def davis_j(encoder: CRWEncoder, root: str | Path, resolution: str = "480p", max_frames: int = 20) -> dict[str, float]:
    """``{"<sequence>": J, ..., "mean": J}`` over every sequence under ``root``; the encoder is left in eval mode."""
    encoder.eval()
    root = Path(root)
    results = {
        name: sequence_j(encoder, root, name, resolution, max_frames) for name in davis_sequences(root, resolution)
    }
    results["mean"] = float(np.nanmean(list(results.values()))) if results else float("nan")
    return results
