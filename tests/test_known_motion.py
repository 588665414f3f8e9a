"""Known-motion training: the supervised transition loss, per-cell targets, the DIS teacher, synthetic clips."""

import random

import pytest
import torch
import torch.nn.functional as F
from test_train_data import small_config
from testing_utils import CLIPS

from walkreg.loss import transition_loss
from walkreg.train.augment import augment_clip
from walkreg.train.known_motion import cell_targets, teacher_motion
from walkreg.video import read_video


def _cell_grid(h: int, w: int) -> torch.Tensor:
    """``(2, h, w)``: each cell's own position ``(x, y)``."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([xs, ys])


def _shifted_features(h: int = 5, w: int = 6) -> torch.Tensor:
    """``(1, 16, 2, h, w)`` unit features whose second frame is the first moved one cell to the right."""
    first = F.normalize(torch.randn(1, 16, h, w), dim=1)
    second = torch.roll(first, shifts=1, dims=-1)
    return torch.stack([first, second], dim=2)


def test_transition_loss_is_low_for_the_true_motion_and_high_for_a_wrong_one():
    features = _shifted_features()
    valid = torch.ones(1, 1, 5, 6, dtype=torch.bool)
    valid[..., -1] = False  # the last column wraps around
    right = _cell_grid(5, 6)[None, None] + torch.tensor([1.0, 0]).view(1, 1, 2, 1, 1)
    still = _cell_grid(5, 6)[None, None]
    assert transition_loss(features, right, valid) < 0.1 < 2 < transition_loss(features, still, valid)
    # half a cell: the soft target splits between the two cells, so the best loss is ln 2, not 0
    half = still + torch.tensor([0.5, 0]).view(1, 1, 2, 1, 1)
    assert transition_loss(features, half, valid) > 0.6
    # nothing known: zero, still differentiable
    features.requires_grad_()
    none = transition_loss(features, right, torch.zeros_like(valid))
    none.backward()
    assert none.item() == 0 and features.grad is not None


def test_transition_loss_ignores_targets_outside_the_next_frame_and_trains_features():
    features = _shifted_features().requires_grad_()
    outside = torch.full((1, 1, 2, 5, 6), -3.0)
    assert transition_loss(features, outside, torch.ones(1, 1, 5, 6, dtype=torch.bool)).item() == 0
    right = _cell_grid(5, 6)[None, None] + torch.tensor([1.0, 0]).view(1, 1, 2, 1, 1)
    loss = transition_loss(features, right, torch.ones(1, 1, 5, 6, dtype=torch.bool))
    loss.backward()
    assert features.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("shapes", "message"),
    [(((1, 4, 2, 3, 3), (1, 1, 2, 3, 3), (1, 2, 3, 3)), "`targets` must have shape"), (((4, 2, 3, 3),) * 3, "(B, C")],
)
def test_transition_loss_rejects_mismatched_shapes(shapes, message):
    features, targets, valid = (torch.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        transition_loss(features, targets, valid.bool())


def test_cell_targets_pool_the_flow_and_need_the_whole_block_visible():
    flow = torch.zeros(2, 16, 24)
    flow[0], flow[1] = 8.0, 4.0
    visible = torch.ones(16, 24, dtype=torch.bool)
    visible[3, 20] = False  # one pixel of cell (0, 2)
    targets, valid = cell_targets(flow, visible)
    assert targets.shape == (2, 2, 3) and valid.shape == (2, 3)
    assert torch.equal(targets, _cell_grid(2, 3) + torch.tensor([1.0, 0.5]).view(2, 1, 1))
    assert valid.sum() == 5 and not valid[0, 2]


def test_the_dis_teacher_finds_a_real_frames_shift_and_flags_what_leaves_the_view():
    frame = read_video(CLIPS / "cups.mp4", max_frames=1)[0][:, :128, :160]
    frames = torch.stack([frame[:, :, 16:144], frame[:, :, 8:136]])  # the view moves 8 px left: content goes right
    flow, visible = teacher_motion(frames)
    targets, valid = cell_targets(flow[0], visible[0])
    moved = targets - _cell_grid(16, 16)
    assert valid[:, 2:-2].float().mean() > 0.8
    assert (moved[0][valid] - 1).abs().median() < 0.1 and moved[1][valid].abs().median() < 0.1


@pytest.mark.parametrize("node_mode", ["frame", "grid"])
def test_clips_carry_motion_targets_only_when_asked(node_mode):
    frames = read_video(CLIPS / "carphone.mp4", max_frames=4)
    plain = augment_clip(frames, small_config(node_mode=node_mode), random.Random(0))
    assert set(plain) == {"clip"}
    synthetic = augment_clip(frames, small_config(node_mode=node_mode, synthetic_fraction=1.0), random.Random(0))
    assert synthetic["targets"].shape == (3, 2, 8, 8) and synthetic["valid"].shape == (3, 8, 8)
    assert synthetic["valid"].float().mean() > 0.3  # most cells of a rendered clip have known motion
    assert ("frames" in synthetic) == (node_mode == "grid")
    real = augment_clip(frames, small_config(node_mode=node_mode, synthetic_fraction=0.0, flow_teacher=True),
                        random.Random(0))  # fmt: skip
    assert torch.equal(real["clip"], plain["clip"])  # the teacher changes no pixel
    assert real["valid"].any()


def test_known_motion_needs_a_frame_size_on_the_cell_grid():
    with pytest.raises(ValueError, match="`frame_size` must be a multiple of 8"):
        small_config(frame_size=60, synthetic_fraction=0.5)
    with pytest.raises(ValueError, match="`synthetic_fraction` must be in"):
        small_config(synthetic_fraction=1.5)
