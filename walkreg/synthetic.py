"""Synthetic known-motion sequences for label propagation: real textures moved along known paths, exact masks.

A sequence is a panning, slowly zooming view of a real background image with a few blob-shaped objects, each
textured with a crop of another real image, moving at constant velocity and spin. Objects are drawn back to front,
so later ones occlude earlier ones; every pixel's motion is known and the masks are exact by construction (an
object owns the pixels where its anti-aliased coverage is at least one half). :func:`write_davis_sequence` stores a
sequence in the DAVIS layout, so ``walkreg eval-davis`` scores any features on it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .video import write_annotation, write_frames


def _sample(image: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``image`` ``(3, h, w)`` at pixel coordinates ``x``, ``y`` ``(H, W)`` -> ``(3, H, W)``."""
    h, w = image.shape[-2:]
    grid = torch.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)[None]
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]


def synthetic_sequence(
    background: torch.Tensor,
    textures: list[torch.Tensor],
    num_frames: int = 24,
    size: tuple[int, int] = (480, 854),
    num_objects: int = 2,
    max_speed: float = 6.0,
    seed: int = 0,
) -> tuple[torch.Tensor, np.ndarray]:
    """Render one known-motion sequence.

    Args:
        background: ``(3, h, w)`` float RGB in [0, 1], the scene the camera pans over.
        textures: ``(3, h_i, w_i)`` images; object ``i`` is cut from ``textures[i % len(textures)]``.
        num_frames, size: length ``T`` and frame size ``(H, W)``.
        num_objects: objects drawn over the background (ids ``1..num_objects``, later ids in front).
        max_speed: largest object speed in pixels per frame (the camera moves at up to half of it).
        seed: every random draw (shapes, paths, crops) comes from it.

    Returns:
        ``frames`` ``(T, 3, H, W)`` float in [0, 1] and ``ids`` ``(T, H, W)`` uint8 (0 background, ``i`` object ``i``).
    """
    if background.ndim != 3 or background.shape[0] != 3:
        raise ValueError(f"`background` must have shape (3, h, w), but has {tuple(background.shape)}.")
    if not textures or any(t.ndim != 3 or t.shape[0] != 3 for t in textures):
        raise ValueError(
            f"`textures` must be a non-empty list of (3, h, w) images, but got {[tuple(t.shape) for t in textures]}."
        )
    if num_frames < 2 or not 1 <= num_objects <= 254 or max_speed < 0:
        raise ValueError(
            "`num_frames` must be >= 2, `num_objects` in 1..254 and `max_speed` >= 0, but are "
            f"{num_frames}, {num_objects} and {max_speed}."
        )
    rng = np.random.default_rng(seed)
    height, width = size
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )

    # Camera: the view is 1/1.3 of the background (resized to cover it), moving and zooming at constant rates.
    bh, bw = background.shape[-2:]
    cover = 1.3 * max(height / bh, width / bw)  # output pixels per background pixel at t = 0
    cam_velocity = rng.uniform(-0.5, 0.5, size=2) * max_speed / cover  # background pixels per frame
    zoom_rate = rng.uniform(-0.004, 0.004)
    start = np.array([bw / 2, bh / 2]) - cam_velocity * (num_frames - 1) / 2

    # Objects: a star-convex blob (radius with harmonics 2..4), a straight path that stays inside, a spin.
    objects = []
    short = min(height, width)
    for i in range(num_objects):
        radius = rng.uniform(0.12, 0.2) * short
        inner = np.array([[radius, width - radius], [radius, height - radius]])
        origin = rng.uniform(inner[:, 0], inner[:, 1])
        step = rng.uniform(-1, 1, size=2) * max_speed
        end = np.clip(origin + step * (num_frames - 1), inner[:, 0], inner[:, 1])
        texture = textures[i % len(textures)]
        th, tw = texture.shape[-2:]
        objects.append(
            {
                "radius": radius,
                "harmonics": rng.uniform(-0.15, 0.15, size=3),
                "phases": rng.uniform(0, 2 * math.pi, size=3),
                "origin": origin,
                "velocity": (end - origin) / (num_frames - 1),
                "angle": rng.uniform(0, 2 * math.pi),
                "spin": math.radians(rng.uniform(-2, 2)),
                "texture": texture,
                "texture_centre": rng.uniform([0.3 * tw, 0.3 * th], [0.7 * tw, 0.7 * th]),
                "texture_scale": rng.uniform(0.6, 1.0) * min(th, tw) / (2.5 * radius),
            }
        )

    frames = torch.empty(num_frames, 3, height, width)
    ids = np.zeros((num_frames, height, width), dtype=np.uint8)
    for t in range(num_frames):
        scale = cover * (1 + zoom_rate * t)
        centre = start + cam_velocity * t
        frame = _sample(background, centre[0] + (xs - width / 2) / scale, centre[1] + (ys - height / 2) / scale)
        for i, obj in enumerate(objects, start=1):
            cx, cy = obj["origin"] + obj["velocity"] * t
            angle = obj["angle"] + obj["spin"] * t
            cos, sin = math.cos(angle), math.sin(angle)
            u = cos * (xs - cx) + sin * (ys - cy)  # object coordinates: rotated by -angle around the centre
            v = -sin * (xs - cx) + cos * (ys - cy)
            theta = torch.atan2(v, u)
            boundary = torch.full_like(theta, 1.0)
            for k, (amp, phase) in enumerate(zip(obj["harmonics"], obj["phases"], strict=True), start=2):
                boundary += float(amp) * torch.cos(k * theta + float(phase))
            coverage = (obj["radius"] * boundary - torch.hypot(u, v) + 0.5).clamp(0, 1)
            tx, ty = obj["texture_centre"]
            fill = _sample(obj["texture"], tx + u * obj["texture_scale"], ty + v * obj["texture_scale"])
            frame = frame * (1 - coverage) + fill * coverage
            ids[t][(coverage >= 0.5).numpy()] = i
        frames[t] = frame.clamp(0, 1)
    return frames, ids


def write_davis_sequence(
    root: str | os.PathLike, name: str, frames: torch.Tensor, ids: np.ndarray, resolution: str = "480p"
) -> None:
    """Store ``frames`` ``(T, 3, H, W)`` as lossless PNGs and ``ids`` ``(T, H, W)`` as DAVIS palette PNGs under
    ``root``."""
    if frames.shape[0] != ids.shape[0] or tuple(frames.shape[-2:]) != tuple(ids.shape[-2:]):
        raise ValueError(f"`frames` {tuple(frames.shape)} and `ids` {ids.shape} must agree in length and frame size.")
    root = Path(root)
    write_frames(root / "JPEGImages" / resolution / name, frames)
    masks = root / "Annotations" / resolution / name
    masks.mkdir(parents=True, exist_ok=True)
    for t, frame_ids in enumerate(ids):
        write_annotation(masks / f"{t:05d}.png", frame_ids)
