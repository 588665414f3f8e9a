"""Known motion for the supervised transition loss: synthetic clips with their true flow, and a DIS-flow teacher.

Both give, per pair of consecutive frames, a pixel flow ``(2, S, S)`` and a visibility mask ``(S, S)``;
:func:`cell_targets` turns them into the per-cell targets of :func:`walkreg.loss.transition_loss`. Frames are
``(3, S, S)`` float RGB in [0, 1], flows ``(dx, dy)`` in pixels with ``frame_t[y, x] ~ frame_t+1[y + dy, x + dx]``.
"""

from __future__ import annotations

import random

import torch

from walkreg.cells import STRIDE, cell_means
from walkreg.flow import dis_flow, flow_visibility
from walkreg.synthetic import synthetic_sequence


def cell_targets(flow: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cell motion targets of one frame pair.

    Args:
        flow: ``(2, H, W)`` pixel flow from frame ``t`` to ``t+1``; ``H`` and ``W`` multiples of the stride (8).
        visible: ``(H, W)`` bool, the pixels of frame ``t`` whose flow is known and that stay visible in ``t+1``.

    Returns:
        ``targets`` ``(2, h, w)``: the position ``(x, y)``, in cells of frame ``t+1``, each cell's block moves to on
        average; ``valid`` ``(h, w)`` bool: the cells whose whole 8x8 block is visible.
    """
    targets = cell_means(flow.float())[0] / STRIDE
    h, w = targets.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=targets.dtype), torch.arange(w, dtype=targets.dtype), indexing="ij")
    valid = cell_means(visible[None].float(), "constant")[0, 0] == 1
    return targets + torch.stack([xs, ys]), valid


def teacher_motion(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV DIS flow between consecutive frames ``(T, 3, H, W)``, with the pixels of frame ``t`` that pass the
    forward-backward check: ``(T-1, 2, H, W)`` flows and ``(T-1, H, W)`` masks."""
    flows, visible = [], []
    for a, b in zip(frames[:-1], frames[1:], strict=True):
        forward, backward = dis_flow(a, b), dis_flow(b, a)
        flows.append(forward)
        visible.append(flow_visibility(forward, backward))  # the check seen from frame t
    return torch.stack(flows), torch.stack(visible)


def synthetic_clip(frames: torch.Tensor, size: int, rng: random.Random):
    """A synthetic known-motion clip as long as ``frames`` ``(T, 3, H, W)``, rendered at ``size`` x ``size`` from
    them: the first frame is the scene the camera moves over, flipped later frames texture the moving layers.

    Returns the :class:`walkreg.synthetic.SyntheticClip`.
    """
    textures = [frames[-1].flip(-1), frames[len(frames) // 2].flip(-2)]
    return synthetic_sequence(
        frames[0],
        textures,
        num_frames=len(frames),
        size=(size, size),
        num_objects=rng.randint(1, 3),
        max_speed=size / 16,
        seed=rng.getrandbits(31),
        rotation=1.5,
        lighting=0.5,
        blur=1.0,
    )
