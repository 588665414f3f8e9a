"""Synthetic known-motion sequences: deterministic, rigidly moving exact masks, analytic flow and visibility that
warp one frame onto the next, flow composition, DAVIS round trip, propagatable."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from testing_utils import DAVIS_RESOLUTION, DAVIS_ROOT

from walkreg.cli import main
from walkreg.metrics import jaccard
from walkreg.synthetic import compose_flow, synthetic_sequence, write_davis_sequence
from walkreg.video import read_davis_sequence, read_image


SIZE = (120, 200)


@pytest.fixture(scope="module")
def images():
    frames = sorted((DAVIS_ROOT / "JPEGImages" / DAVIS_RESOLUTION).glob("*/00000.jpg"))
    return [read_image(p) for p in frames]


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` ``(C, H, W)`` sampled at ``(x, y) + flow`` (``(2, H, W)``), bilinear, edges clamped."""
    h, w = flow.shape[-2:]
    x = flow[0] + torch.arange(w)
    y = flow[1] + torch.arange(h)[:, None]
    grid = torch.stack([(2 * x + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1)[None]
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def warp_error(target: torch.Tensor, source: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean absolute difference between ``target`` and ``source`` warped back along ``flow``, over ``mask``."""
    return float((backward_warp(source, flow) - target).abs().mean(0)[mask].mean())


def test_same_seed_same_sequence_and_objects_move_rigidly(images):
    clip = synthetic_sequence(images[0], images[1:], num_frames=8, size=SIZE, num_objects=1, seed=3)
    again = synthetic_sequence(images[0], images[1:], num_frames=8, size=SIZE, num_objects=1, seed=3)
    other = synthetic_sequence(images[0], images[1:], num_frames=8, size=SIZE, num_objects=1, seed=4)
    frames, ids = clip.frames, clip.ids
    assert frames.shape == (8, 3, *SIZE) and ids.shape == (8, *SIZE) and 0 <= frames.min() and frames.max() <= 1
    assert clip.flow.shape == (7, 2, *SIZE) and clip.flow.dtype == torch.float32
    assert clip.visible.shape == (7, *SIZE) and clip.visible.dtype == torch.bool
    assert np.array_equal(ids, again.ids) and frames.equal(again.frames) and not frames.equal(other.frames)
    assert clip.flow.equal(again.flow) and clip.visible.equal(again.visible)
    areas = (ids == 1).sum(axis=(1, 2))
    assert areas.min() > 0.02 * ids[0].size and areas.max() / areas.min() < 1.05  # rigid: the area is kept
    assert jaccard(ids[0] == 1, ids[-1] == 1) < 0.9  # ... but the object moved
    assert min(jaccard(ids[t] == 1, ids[t + 1] == 1) for t in range(7)) > 0.6  # smoothly


@pytest.mark.parametrize("rotation", [0.0, 1.5])
def test_flow_warps_the_next_frame_onto_this_one_and_occlusions_are_not_visible(images, rotation):
    clip = synthetic_sequence(
        images[0], images[1:], num_frames=4, size=SIZE, num_objects=3, max_speed=8, seed=2, rotation=rotation
    )
    for t in range(3):
        visible = clip.visible[t]
        assert 0.8 < visible.float().mean() < 1.0
        moved = warp_error(clip.frames[t], clip.frames[t + 1], clip.flow[t], visible)
        still = warp_error(clip.frames[t], clip.frames[t + 1], torch.zeros_like(clip.flow[t]), visible)
        assert moved < 0.3 * still, (t, moved, still)
        # background points whose target pixel shows an object at t+1 are hidden there
        x = (clip.flow[t, 0] + torch.arange(SIZE[1])).round().long().clamp(0, SIZE[1] - 1)
        y = (clip.flow[t, 1] + torch.arange(SIZE[0])[:, None]).round().long().clamp(0, SIZE[0] - 1)
        covered = torch.from_numpy(clip.ids[t] == 0)
        covered &= torch.from_numpy(clip.ids[t + 1])[y, x] != 0
        assert covered.sum() > 20 and not visible[covered].any()
    two_steps, both = compose_flow(clip.flow[0], clip.visible[0], clip.flow[1], clip.visible[1])
    moved = warp_error(clip.frames[0], clip.frames[2], two_steps, both)
    assert moved < 0.3 * warp_error(clip.frames[0], clip.frames[2], torch.zeros_like(two_steps), both)


def test_roll_lighting_and_blur_are_seeded_and_photometric_options_leave_the_motion_alone(images):
    def render(**options):
        return synthetic_sequence(images[1], images, num_frames=4, size=SIZE, num_objects=2, seed=7, **options)

    plain, rolled = render(), render(rotation=1.5)
    lit = render(rotation=1.5, lighting=1.0, blur=1.2)
    again = render(rotation=1.5, lighting=1.0, blur=1.2)
    assert not rolled.flow.equal(plain.flow)  # the roll moves the background
    assert lit.flow.equal(rolled.flow) and lit.visible.equal(rolled.visible) and np.array_equal(lit.ids, rolled.ids)
    assert not lit.frames.equal(rolled.frames) and lit.frames.equal(again.frames)
    assert 0 <= lit.frames.min() and lit.frames.max() <= 1


def test_compose_flow_chains_two_steps():
    h, w = 30, 40
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    first = torch.tensor([3.0, -2.0]).view(2, 1, 1).expand(2, h, w).clone()  # a translation
    second = 0.1 * torch.stack([xs - 20, ys - 15])  # a zoom about (20, 15): linear, so bilinear sampling is exact
    visible = torch.ones(h, w, dtype=torch.bool)
    hidden = visible.clone()
    hidden[10, 10] = False
    flow, both = compose_flow(first, visible, second, hidden)
    x1, y1 = xs + 3, ys - 2  # direct chaining: the first step, then the second at its target
    direct = torch.stack([x1 + 0.1 * (x1 - 20) - xs, y1 + 0.1 * (y1 - 15) - ys])
    inside = (x1 <= w - 1) & (y1 >= 0)
    assert torch.allclose(flow[:, inside], direct[:, inside], atol=1e-4)
    assert both.equal(inside & ~((ys == 12) & (xs == 7)))  # out of frame or landing on the hidden pixel
    with pytest.raises(ValueError, match=r"`flow_a` and `flow_b` must both have shape \(2, H, W\)"):
        compose_flow(first[0], visible, second, visible)


def test_later_objects_occlude_earlier_ones_and_round_trip_through_the_davis_layout(images, tmp_path):
    clip = synthetic_sequence(images[1], images, num_frames=4, size=SIZE, num_objects=3, seed=0)
    assert set(np.unique(clip.ids[0])) == {0, 1, 2, 3}
    write_davis_sequence(tmp_path, "syn", clip.frames, clip.ids, resolution="240p")
    seq = read_davis_sequence(tmp_path, "syn", resolution="240p")
    assert np.array_equal(seq.annotations, clip.ids)
    assert (seq.frames - clip.frames).abs().max() <= 0.5 / 255 + 1e-6  # lossless PNG up to 8-bit rounding


def test_labels_propagate_along_the_known_motion(images, tmp_path):
    clip = synthetic_sequence(
        images[2], images[:2], num_frames=6, size=(240, 400), num_objects=2, max_speed=12, seed=1
    )
    ids = clip.ids
    write_davis_sequence(tmp_path / "data", "syn", clip.frames, ids)
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval-davis",
                "--davis-root",
                str(tmp_path / "data"),
                "--out",
                str(out),
                "--encoder",
                "default",
                "--baselines",
                "lab",
            ]
        )
        == 0
    )
    methods = json.loads((out / "results.json").read_text())["methods"]
    held = np.mean([jaccard(ids[0] == i, ids[t] == i) for i in (1, 2) for t in range(1, 6)])  # labels left in place
    assert methods["encoder"]["arch"] == "resnet18"  # `--encoder default` is the bundled encoder
    for name in ("encoder", "lab"):
        assert methods[name]["J_mean"] > held + 0.1, (name, methods[name]["J_mean"], held)


def test_bad_arguments_name_the_rule(images):
    with pytest.raises(ValueError, match=r"`background` must have shape \(3, h, w\)"):
        synthetic_sequence(images[0][0], images)
    with pytest.raises(ValueError, match="`num_frames` must be >= 2"):
        synthetic_sequence(images[0], images, num_frames=1)
    with pytest.raises(ValueError, match=r"`rotation` must be in \[0, 10.0\] degrees per frame, but is -1"):
        synthetic_sequence(images[0], images, rotation=-1)
    with pytest.raises(ValueError, match=r"`lighting` must be in \[0, 1\], but is 1.5"):
        synthetic_sequence(images[0], images, lighting=1.5)
    with pytest.raises(ValueError, match=r"`blur` must be in \[0, 3.0\] pixels, but is nan"):
        synthetic_sequence(images[0], images, blur=float("nan"))
    with pytest.raises(ValueError, match=r"`size` must be \(H, W\) with both sides >= 1, but is \(0, 5\)"):
        synthetic_sequence(images[0], images, size=(0, 5))
    with pytest.raises(ValueError, match="must agree"):
        write_davis_sequence("unused", "syn", images[0][None], np.zeros((2, 3, 3), np.uint8))
