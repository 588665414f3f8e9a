"""Training augmentations of the official recipe, written with torch ops on ``(3, H, W)`` float frames.

Per frame of a clip, independently: a random resized crop to ``frame_size`` x ``frame_size`` (area fraction 0.8-0.95,
aspect 0.7-1.3). Grid mode then cuts the crop into ``patch_size`` patches at ``patch_stride`` (7 x 7 = 49 patches
of 64 x 64 at stride 32 for a 256 crop, row-major) and gives every patch its own random resized crop (area
0.7-0.9, aspect 3/4-4/3) back to ``patch_size``. Everything is normalised with the CIFAR-10 mean/std, as the
official training code does. Random draws come from a ``random.Random`` passed in, so a clip's augmentation is a
pure function of its seed (which makes resumed runs repeat the uninterrupted run exactly).
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from walkreg.encoder import CIFAR_MEAN, CIFAR_STD

from .known_motion import cell_targets, synthetic_clip, teacher_motion


_MEAN = torch.tensor(CIFAR_MEAN).view(3, 1, 1)
_STD = torch.tensor(CIFAR_STD).view(3, 1, 1)


def random_resized_box(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], rng: random.Random
) -> tuple[int, int, int, int]:
    """A crop box ``(top, left, box_height, box_width)`` covering ``scale`` of the area with aspect (w/h) in ``ratio``.

    Ten tries at a random area and log-uniform aspect, then a centred crop of the clamped aspect (the usual
    RandomResizedCrop rule).
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        box_w, box_h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < box_w <= width and 0 < box_h <= height:
            return rng.randint(0, height - box_h), rng.randint(0, width - box_w), box_h, box_w
    aspect = width / height
    if aspect < ratio[0]:
        box_w, box_h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        box_h, box_w = height, round(height * ratio[1])
    else:
        box_h, box_w = height, width
    return (height - box_h) // 2, (width - box_w) // 2, box_h, box_w


def crop_frame(frame: torch.Tensor, size: int, scale, ratio, rng: random.Random) -> torch.Tensor:
    """``(3, H, W)`` -> ``(3, size, size)``: a random resized crop (bilinear, antialiased when shrinking)."""
    top, left, box_h, box_w = random_resized_box(frame.shape[1], frame.shape[2], scale, ratio, rng)
    crop = frame[None, :, top : top + box_h, left : left + box_w]
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def grid_patches(frame: torch.Tensor, patch_size: int, stride: int, scale, ratio, rng: random.Random) -> torch.Tensor:
    """``(3, S, S)`` -> ``(N, 3, P, P)``: the patch grid (row-major), each patch randomly re-cropped to ``P``.

    All patches are sampled in one ``grid_sample`` call; each patch's crop box becomes an affine sampling grid.
    """
    size = frame.shape[-1]
    side = (size - patch_size) // stride + 1
    grids = []
    base = (torch.arange(patch_size, dtype=torch.float32) + 0.5) / patch_size  # pixel centres in [0, 1]
    for row in range(side):
        for col in range(side):
            top, left, box_h, box_w = random_resized_box(patch_size, patch_size, scale, ratio, rng)
            ys = (row * stride + top + base * box_h) / size * 2 - 1  # normalised coords, align_corners=False
            xs = (col * stride + left + base * box_w) / size * 2 - 1
            grids.append(torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1))  # (P, P, 2) as (x, y)
    grid = torch.cat(grids, dim=0)[None]  # (1, N * P, P, 2)
    patches = F.grid_sample(frame[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return patches[0].unflatten(1, (side * side, patch_size)).transpose(0, 1)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` in [0, 1] -> CIFAR-normalised (the official training constants)."""
    return (x - _MEAN) / _STD


def augment_clip(frames: torch.Tensor, config, rng: random.Random) -> dict[str, torch.Tensor]:
    """Training view of a clip, with its motion targets when ``config.known_motion``.

    With probability ``config.synthetic_fraction`` the clip is replaced by a synthetic known-motion clip rendered
    from its frames (:func:`~walkreg.train.known_motion.synthetic_clip`, no crops: the virtual camera moves);
    otherwise each frame gets its own random resized crop, and with ``config.flow_teacher`` the crops' DIS flow gives
    the targets.

    Args:
        frames: ``(T, 3, H, W)`` float in [0, 1].
        config: a :class:`~walkreg.train.config.TrainConfig` (crop and patch settings, ``node_mode``, known motion).

    Returns:
        ``{"clip": ...}``: grid mode ``(T, N, 3, P, P)`` normalised patches, frame mode ``(T, 3, S, S)`` normalised
        frames. With known motion also ``targets`` ``(T-1, 2, S/8, S/8)`` and ``valid`` ``(T-1, S/8, S/8)`` (see
        :func:`walkreg.loss.transition_loss`; no cell is valid in a clip without known motion), and in grid mode
        ``frames`` ``(T, 3, S, S)``, the normalised whole frames the targets refer to.
    """
    synthetic = config.synthetic_fraction > 0 and rng.random() < config.synthetic_fraction
    if synthetic:
        rendered = synthetic_clip(frames, config.frame_size, rng)
        crops = list(rendered.frames)
    else:
        crops = [
            crop_frame(f, config.frame_size, config.frame_crop_scale, config.frame_crop_ratio, rng) for f in frames
        ]
    views = crops
    if config.node_mode == "grid":
        patch = (config.patch_size, config.patch_stride, config.patch_crop_scale, config.patch_crop_ratio)
        views = [grid_patches(crop, *patch, rng) for crop in crops]
    sample = {"clip": normalize(torch.stack(views))}
    if not config.known_motion:
        return sample
    crops = torch.stack(crops)
    if synthetic:
        flow, visible = rendered.flow, rendered.visible
    elif config.flow_teacher:
        flow, visible = teacher_motion(crops)
    else:
        flow, visible = (
            torch.zeros(len(crops) - 1, 2, *crops.shape[-2:]),
            torch.zeros(len(crops) - 1, *crops.shape[-2:]),
        )
    targets, valid = zip(*(cell_targets(f, v.bool()) for f, v in zip(flow, visible, strict=True)), strict=True)
    sample.update(targets=torch.stack(targets), valid=torch.stack(valid))
    if config.node_mode == "grid":
        sample["frames"] = normalize(crops)
    return sample
