"""Synthetic known-motion sequences: real textures moved along known paths, exact masks, dense ground-truth flow.

A sequence is a panning, slowly zooming (and optionally rolling) view of a real background image with a few
blob-shaped objects, each textured with a crop of another real image, moving at constant velocity and spin. Objects
are drawn back to front, so later ones occlude earlier ones. Every surface moves by a known affine map between
frames, so the masks are exact by construction (an object owns the pixels where its anti-aliased coverage is at
least one half) and so is the flow: each pixel is moved by the map of the topmost surface it shows. Optional
photometric changes (lighting drift, blur) alter the pixels only, never the flow, masks or visibility.

- :func:`synthetic_sequence` renders a :class:`SyntheticClip` (frames, ids, flow, visibility).
- :func:`compose_flow` chains the flows ``t -> t+1`` and ``t+1 -> t+2`` into ``t -> t+2``.
- :func:`write_davis_sequence` stores a sequence in the DAVIS layout, so ``walkreg eval-davis`` scores any features
  on it.

Coordinates: pixel ``(x, y)`` is the centre of column ``x`` and row ``y``; flows are ``(dx, dy)`` in pixels.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .video import write_annotation, write_frames


MAX_ROTATION = 10.0  # largest accepted camera roll rate, degrees per frame
MAX_BLUR = 3.0  # largest accepted blur sigma bound, pixels
IDENTITY = np.eye(2, 3)  # the (2, 3) affine map that leaves every point where it is


@dataclass
class SyntheticClip:
    """One rendered sequence of ``T`` frames of size ``(H, W)``.

    Attributes:
        frames: ``(T, 3, H, W)`` float RGB in [0, 1].
        ids: ``(T, H, W)`` uint8 numpy array: 0 background, ``i`` object ``i`` (the topmost surface of each pixel).
        flow: ``(T-1, 2, H, W)`` float32 ``(dx, dy)``: the surface point seen at pixel ``(x, y)`` of frame ``t`` is
            at ``(x + dx, y + dy)`` in frame ``t+1``.
        visible: ``(T-1, H, W)`` bool: that point's nearest pixel in frame ``t+1`` is inside the frame and shows the
            same surface (the same id), i.e. the point is neither out of view nor hidden by another surface.
    """

    frames: torch.Tensor
    ids: np.ndarray
    flow: torch.Tensor
    visible: torch.Tensor


@dataclass
class _Look:
    """Per-sequence draws that do not move objects: camera roll and the photometric changes.

    Attributes:
        roll: camera roll rate in radians per frame.
        gain, offset: ``(T,)`` global per-frame gain and offset.
        brightness: ``(num_objects, T)`` per-object brightness factor (relative to the scene).
        sigma: ``(T,)`` Gaussian blur sigma per frame, in pixels (0 for none).
    """

    roll: float
    gain: np.ndarray
    offset: np.ndarray
    brightness: np.ndarray
    sigma: np.ndarray


def _check_arguments(background, textures, num_frames, size, num_objects, max_speed, rotation, lighting, blur):
    """One-line ``ValueError`` naming the first bad argument, its rule and its value."""
    if background.ndim != 3 or background.shape[0] != 3:
        raise ValueError(f"`background` must have shape (3, h, w), but has {tuple(background.shape)}.")
    if not textures or any(t.ndim != 3 or t.shape[0] != 3 for t in textures):
        raise ValueError(
            f"`textures` must be a non-empty list of (3, h, w) images, but got {[tuple(t.shape) for t in textures]}."
        )
    if num_frames < 2 or not 1 <= num_objects <= 254 or not max_speed >= 0:
        raise ValueError(
            "`num_frames` must be >= 2, `num_objects` in 1..254 and `max_speed` >= 0, but are "
            f"{num_frames}, {num_objects} and {max_speed}."
        )
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"`size` must be (H, W) with both sides >= 1, but is {tuple(size)}.")
    if not 0 <= rotation <= MAX_ROTATION:
        raise ValueError(f"`rotation` must be in [0, {MAX_ROTATION}] degrees per frame, but is {rotation}.")
    if not 0 <= lighting <= 1:
        raise ValueError(f"`lighting` must be in [0, 1], but is {lighting}.")
    if not 0 <= blur <= MAX_BLUR:
        raise ValueError(f"`blur` must be in [0, {MAX_BLUR}] pixels, but is {blur}.")


def _draw_look(seed: int, num_frames: int, num_objects: int, rotation: float, lighting: float, blur: float) -> _Look:
    """Roll and photometric draws, from their own stream of ``seed`` (switching one on leaves the rest as it was).

    At ``lighting=1`` the frame's log-gain starts in ±0.2, drifts by up to ±0.04 per frame with ±0.03 jitter
    (clipped to ±0.5), its offset starts in ±0.05, drifts by up to ±0.01 per frame with ±0.01 jitter (clipped to
    ±0.1), and each object's log-brightness starts in ±0.2 and drifts by up to ±0.05 per frame (clipped to ±0.5);
    smaller ``lighting`` scales all of them. Blur sigmas are uniform in ``[0, blur]``, one per frame.
    """
    rng = np.random.default_rng([seed, 1])
    roll = math.radians(rotation) * rng.uniform(-1, 1)
    gain0, gain_rate, offset0, offset_rate = rng.uniform(-1, 1, size=4) * [0.2, 0.04, 0.05, 0.01]
    jitter = rng.uniform(-1, 1, size=(2, num_frames)) * [[0.03], [0.01]]
    drift = rng.uniform(-1, 1, size=(num_objects, 2)) * [0.2, 0.05]
    sigma = rng.uniform(0, 1, size=num_frames) * blur
    t = np.arange(num_frames)
    log_gain = np.clip(lighting * (gain0 + gain_rate * t + jitter[0]), -0.5, 0.5)
    offset = np.clip(lighting * (offset0 + offset_rate * t + jitter[1]), -0.1, 0.1)
    log_brightness = np.clip(lighting * (drift[:, :1] + drift[:, 1:] * t), -0.5, 0.5)
    return _Look(roll, np.exp(log_gain), offset, np.exp(log_brightness), sigma)


def _rotation(angle: float) -> np.ndarray:
    """``(2, 2)`` counter-clockwise rotation by ``angle`` radians (in image axes, x right and y down)."""
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([[cos, -sin], [sin, cos]])


def _affine(linear: np.ndarray, point_from: np.ndarray, point_to: np.ndarray) -> np.ndarray:
    """``(2, 3)`` map ``p -> point_to + linear @ (p - point_from)``."""
    return np.concatenate([linear, (point_to - linear @ point_from)[:, None]], axis=1)


def _then(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``(2, 3)`` map applying ``first`` then ``second`` (both ``(2, 3)``)."""
    return second[:, :2] @ first + np.concatenate([np.zeros((2, 2)), second[:, 2:]], axis=1)


def _inverse(affine: np.ndarray) -> np.ndarray:
    """``(2, 3)`` inverse of an invertible ``(2, 3)`` affine map."""
    inverse = np.linalg.inv(affine[:, :2])
    return np.concatenate([inverse, -inverse @ affine[:, 2:]], axis=1)


def _to_grid(affine: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(2, 3)`` map to pixel coordinates of an ``(height, width)`` image -> map to ``grid_sample`` coordinates
    (``align_corners=False``: pixel ``x`` is at ``(2 * x + 1) / width - 1``)."""
    return _then(affine, np.array([[2 / width, 0, 1 / width - 1], [0, 2 / height, 1 / height - 1]]))


def _map_pixels(affine: np.ndarray, box: tuple[slice, slice]) -> torch.Tensor:
    """``(h, w, 2)`` float32 images under a ``(2, 3)`` affine map of the pixels ``(x, y)`` in ``box`` (rows, columns),
    built as an outer sum of a row term and a column term (no matrix product)."""
    rows, columns = box
    matrix = torch.from_numpy(affine).float()
    ys = torch.arange(rows.start, rows.stop, dtype=torch.float32)
    xs = torch.arange(columns.start, columns.stop, dtype=torch.float32)
    return (ys[:, None, None] * matrix[:, 1] + matrix[:, 2]) + xs[None, :, None] * matrix[:, 0]


def _sample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``image`` ``(3, h, w)`` at ``grid`` ``(H, W, 2)`` (``grid_sample`` units) -> ``(3, H, W)``,
    reflected beyond the border (a fixed extension of the image, so motion stays rigid there too)."""
    return F.grid_sample(image[None], grid[None], mode="bilinear", padding_mode="reflection", align_corners=False)[0]


def _whole(height: int, width: int) -> tuple[slice, slice]:
    """The box (rows, columns) of a whole ``(height, width)`` frame."""
    return slice(0, height), slice(0, width)


def _camera(background, num_frames, size, max_speed, roll, rng) -> list[np.ndarray]:
    """Per frame, the ``(2, 3)`` map from output pixels to background pixels.

    The view is 1/1.3 of the background (resized to cover it, rolled views included), moving and zooming at
    constant rates and rolling at ``roll`` radians per frame around its centre (upright at mid-sequence).
    """
    height, width = size
    bh, bw = background.shape[-2:]
    angles = roll * (np.arange(num_frames) - (num_frames - 1) / 2)
    cos, sin = np.abs(np.cos(angles)), np.abs(np.sin(angles))
    cover = 1.3 * max(((width * sin + height * cos) / bh).max(), ((width * cos + height * sin) / bw).max())
    velocity = rng.uniform(-0.5, 0.5, size=2) * max_speed / cover  # background pixels per frame
    zoom_rate = rng.uniform(-0.004, 0.004)
    start = np.array([bw / 2, bh / 2]) - velocity * (num_frames - 1) / 2
    view_centre = np.array([width / 2, height / 2])
    return [
        _affine(_rotation(angles[t]) / (cover * (1 + zoom_rate * t)), view_centre, start + velocity * t)
        for t in range(num_frames)
    ]


def _objects(textures, num_frames, size, num_objects, max_speed, rng) -> list[dict]:
    """Star-convex blobs (radius with harmonics 2..4), straight paths that stay inside, spins, texture crops."""
    height, width = size
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
    return objects


def _object_box(obj: dict, t: int, size: tuple[int, int]) -> tuple[slice, slice] | None:
    """``(rows, columns)`` of the frame that can hold object ``obj`` at frame ``t``; ``None`` when out of view."""
    cx, cy = obj["origin"] + obj["velocity"] * t
    half = obj["radius"] * (1 + np.abs(obj["harmonics"]).sum()) + 1
    x0, x1 = max(0, math.floor(cx - half)), min(size[1], math.ceil(cx + half) + 1)
    y0, y1 = max(0, math.floor(cy - half)), min(size[0], math.ceil(cy + half) + 1)
    return (slice(y0, y1), slice(x0, x1)) if x0 < x1 and y0 < y1 else None


def _object_frame(obj: dict, t: int) -> np.ndarray:
    """``(2, 3)`` map from frame pixels to object coordinates ``(u, v)`` at frame ``t`` (centre at 0, unrotated)."""
    angle = obj["angle"] + obj["spin"] * t
    return _affine(_rotation(-angle), obj["origin"] + obj["velocity"] * t, np.zeros(2))


def _object_motion(obj: dict, t: int) -> np.ndarray:
    """``(2, 3)`` map taking a point of the object in frame ``t`` to where it is in frame ``t+1``."""
    return _affine(
        _rotation(obj["spin"]), obj["origin"] + obj["velocity"] * t, obj["origin"] + obj["velocity"] * (t + 1)
    )


def _draw_object(frame, ids, obj, t, label, brightness) -> None:
    """Composite object ``obj`` (id ``label``) over ``frame`` ``(3, H, W)`` and claim its pixels in ``ids``
    ``(H, W)``, both in place."""
    box = _object_box(obj, t, tuple(ids.shape))
    if box is None:
        return
    uv = _map_pixels(_object_frame(obj, t), box)  # (h, w, 2)
    u, v = uv.unbind(-1)
    theta = torch.atan2(v, u)
    boundary = torch.full_like(theta, 1.0)
    for k, (amp, phase) in enumerate(zip(obj["harmonics"], obj["phases"], strict=True), start=2):
        boundary += float(amp) * torch.cos(k * theta + float(phase))
    coverage = (obj["radius"] * boundary - torch.hypot(u, v) + 0.5).clamp(0, 1)
    th, tw = obj["texture"].shape[-2:]
    to_texture = _to_grid(_affine(np.eye(2) * obj["texture_scale"], np.zeros(2), obj["texture_centre"]), th, tw)
    fill = _sample(obj["texture"], _map_pixels(_then(_object_frame(obj, t), to_texture), box))
    if brightness != 1:
        fill = fill * brightness
    frame[(slice(None), *box)] = frame[(slice(None), *box)] * (1 - coverage) + fill * coverage
    ids[box][coverage >= 0.5] = label


def _blur(frame: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(3, H, W)`` frame blurred by a separable Gaussian of ``sigma`` pixels (edges replicated), as in-place sums of
    shifted copies (several times faster than a depthwise convolution for these few taps)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    taps = (taps / taps.sum()).tolist()
    height, width = frame.shape[-2:]
    padded = F.pad(frame[None], (radius, radius, radius, radius), mode="replicate")[0]
    rows = padded[:, :, :width] * taps[0]
    for i, tap in enumerate(taps[1:], start=1):
        rows.add_(padded[:, :, i : i + width], alpha=tap)
    out = rows[:, :height] * taps[0]
    for i, tap in enumerate(taps[1:], start=1):
        out.add_(rows[:, i : i + height], alpha=tap)
    return out


def _render_frame(background, objects, camera, look, t, ids) -> torch.Tensor:
    """Frame ``t`` ``(3, H, W)`` in [0, 1]; writes its ids into ``ids`` ``(H, W)`` uint8 (zeros on entry)."""
    bh, bw = background.shape[-2:]
    frame = _sample(background, _map_pixels(_to_grid(camera[t], bh, bw), _whole(*ids.shape)))
    for i, obj in enumerate(objects):
        _draw_object(frame, ids, obj, t, i + 1, float(look.brightness[i, t]))
    if look.gain[t] != 1 or look.offset[t] != 0:
        frame = frame * float(look.gain[t]) + float(look.offset[t])
    frame = frame.clamp(0, 1)
    return _blur(frame, float(look.sigma[t])) if look.sigma[t] > 0.05 else frame


def _flow_and_visibility(objects, camera, ids, t) -> tuple[torch.Tensor, torch.Tensor]:
    """Analytic flow ``(2, H, W)`` from frame ``t`` to ``t+1`` (each pixel moved by the map of its topmost surface)
    and its visibility ``(H, W)`` bool; ``ids`` is the ``(T, H, W)`` uint8 tensor of the sequence."""
    height, width = ids.shape[-2:]
    flow = _map_pixels(_then(camera[t], _inverse(camera[t + 1])) - IDENTITY, _whole(height, width))  # (H, W, 2)
    for i, obj in enumerate(objects, start=1):
        box = _object_box(obj, t, (height, width))
        if box is not None:
            moved = _map_pixels(_object_motion(obj, t) - IDENTITY, box)
            flow[box] = torch.where((ids[t][box] == i)[..., None], moved, flow[box])
    flow = flow.permute(2, 0, 1)
    x = (flow[0] + torch.arange(width, dtype=flow.dtype) + 0.5).floor().long()  # nearest pixel of the target
    y = (flow[1] + torch.arange(height, dtype=flow.dtype)[:, None] + 0.5).floor().long()
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    landed = ids[t + 1].flatten()[(y.clamp(0, height - 1) * width + x.clamp(0, width - 1)).flatten()].view_as(x)
    return flow, inside & (landed == ids[t])


def synthetic_sequence(
    background: torch.Tensor,
    textures: list[torch.Tensor],
    num_frames: int = 24,
    size: tuple[int, int] = (480, 854),
    num_objects: int = 2,
    max_speed: float = 6.0,
    seed: int = 0,
    *,
    rotation: float = 0.0,
    lighting: float = 0.0,
    blur: float = 0.0,
) -> SyntheticClip:
    """Render one known-motion sequence with its ground-truth flow and visibility.

    The defaults (no roll, no lighting change, no blur) render the same sequences as earlier walkreg versions for the
    same seed (same draws; frames equal up to float rounding, ids exactly), so held-out sets stay comparable;
    training switches the options on for variety. A 4-frame 256x256 clip renders in a few tens of milliseconds on
    one CPU core.

    Args:
        background: ``(3, h, w)`` float RGB in [0, 1], the scene the camera pans over.
        textures: ``(3, h_i, w_i)`` images; object ``i`` is cut from ``textures[i % len(textures)]``.
        num_frames, size: length ``T`` and frame size ``(H, W)``.
        num_objects: objects drawn over the background (ids ``1..num_objects``, later ids in front).
        max_speed: largest object speed in pixels per frame (the camera moves at up to half of it).
        seed: every random draw (shapes, paths, crops, roll, lighting, blur) comes from it.
        rotation: largest camera roll rate in degrees per frame; the rate is drawn in ``[-rotation, rotation]``
            (0, the default, disables roll; 1.5 is a strong setting; at most ``MAX_ROTATION``).
        lighting: strength in [0, 1] of per-frame global gain/offset drift and per-object brightness drift
            (photometric only; 0, the default, disables it; see :func:`_draw_look` for the ranges at 1).
        blur: largest per-frame Gaussian blur sigma in pixels, drawn uniformly in ``[0, blur]`` per frame
            (photometric only; 0, the default, disables it; about 1.2 is a realistic bound, at most ``MAX_BLUR``).

    Returns:
        A :class:`SyntheticClip`: frames, ids, flow ``t -> t+1`` and its visibility.
    """
    _check_arguments(background, textures, num_frames, size, num_objects, max_speed, rotation, lighting, blur)
    size = (int(size[0]), int(size[1]))
    rng = np.random.default_rng(seed)
    look = _draw_look(seed, num_frames, num_objects, rotation, lighting, blur)
    camera = _camera(background, num_frames, size, max_speed, look.roll, rng)
    objects = _objects(textures, num_frames, size, num_objects, max_speed, rng)
    ids = torch.zeros(num_frames, *size, dtype=torch.uint8)
    frames = torch.empty(num_frames, 3, *size)
    for t in range(num_frames):
        frames[t] = _render_frame(background, objects, camera, look, t, ids[t])
    flow = torch.empty(num_frames - 1, 2, *size)
    visible = torch.empty(num_frames - 1, *size, dtype=torch.bool)
    for t in range(num_frames - 1):
        flow[t], visible[t] = _flow_and_visibility(objects, camera, ids, t)
    return SyntheticClip(frames, ids.numpy(), flow, visible)


def compose_flow(
    flow_a: torch.Tensor, visible_a: torch.Tensor, flow_b: torch.Tensor, visible_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chain flow ``a`` (``t -> t+1``) and flow ``b`` (``t+1 -> t+2``) into the flow ``t -> t+2``.

    Args:
        flow_a, flow_b: ``(2, H, W)`` float ``(dx, dy)`` in pixels (the :class:`SyntheticClip` convention).
        visible_a, visible_b: ``(H, W)`` bool visibility of each flow.

    Returns:
        ``flow`` ``(2, H, W)``: ``flow_a`` plus ``flow_b`` sampled bilinearly at the targets of ``flow_a`` (edges
        clamped), and ``visible`` ``(H, W)`` bool: ``visible_a``, the target lies inside frame ``t+1``
        (``0 <= x <= W - 1`` and ``0 <= y <= H - 1``) and the pixels around it (floor and ceiling of ``x`` and
        ``y``: the four that the bilinear sample blends, fewer on whole coordinates) are all visible in
        ``visible_b``, so the sampled flow never blends in a hidden or out-of-view point.
    """
    if flow_a.ndim != 3 or flow_a.shape[0] != 2 or flow_b.shape != flow_a.shape:
        raise ValueError(
            f"`flow_a` and `flow_b` must both have shape (2, H, W), but have {tuple(flow_a.shape)} and "
            f"{tuple(flow_b.shape)}."
        )
    if visible_a.shape != flow_a.shape[1:] or visible_b.shape != flow_a.shape[1:]:
        raise ValueError(
            f"`visible_a` and `visible_b` must have shape {tuple(flow_a.shape[1:])}, but have "
            f"{tuple(visible_a.shape)} and {tuple(visible_b.shape)}."
        )
    height, width = flow_a.shape[1:]
    x = flow_a[0] + torch.arange(width, dtype=flow_a.dtype, device=flow_a.device)
    y = flow_a[1] + torch.arange(height, dtype=flow_a.dtype, device=flow_a.device)[:, None]
    grid = torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1)
    sampled = F.grid_sample(flow_b[None], grid[None], mode="bilinear", padding_mode="border", align_corners=False)[0]
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    x0, y0 = x.floor().long().clamp(0, width - 1), y.floor().long().clamp(0, height - 1)
    x1, y1 = x.ceil().long().clamp(0, width - 1), y.ceil().long().clamp(0, height - 1)
    around = visible_b[y0, x0] & visible_b[y0, x1] & visible_b[y1, x0] & visible_b[y1, x1]
    return flow_a + sampled, visible_a & inside & around


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
