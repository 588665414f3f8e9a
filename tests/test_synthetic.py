"""Synthetic known-motion sequences: deterministic, rigidly moving exact masks, DAVIS round trip, propagatable."""

import json

import numpy as np
import pytest
from testing_utils import DAVIS_RESOLUTION, DAVIS_ROOT

from walkreg.cli import main
from walkreg.metrics import jaccard
from walkreg.synthetic import synthetic_sequence, write_davis_sequence
from walkreg.video import read_davis_sequence, read_image


SIZE = (120, 200)


@pytest.fixture(scope="module")
def images():
    frames = sorted((DAVIS_ROOT / "JPEGImages" / DAVIS_RESOLUTION).glob("*/00000.jpg"))
    return [read_image(p) for p in frames]


def test_same_seed_same_sequence_and_objects_move_rigidly(images):
    frames, ids = synthetic_sequence(images[0], images[1:], num_frames=8, size=SIZE, num_objects=1, seed=3)
    again, ids_again = synthetic_sequence(images[0], images[1:], num_frames=8, size=SIZE, num_objects=1, seed=3)
    other, _ = synthetic_sequence(images[0], images[1:], num_frames=8, size=SIZE, num_objects=1, seed=4)
    assert frames.shape == (8, 3, *SIZE) and ids.shape == (8, *SIZE) and 0 <= frames.min() and frames.max() <= 1
    assert np.array_equal(ids, ids_again) and frames.equal(again) and not frames.equal(other)
    areas = (ids == 1).sum(axis=(1, 2))
    assert areas.min() > 0.02 * ids[0].size and areas.max() / areas.min() < 1.05  # rigid: the area is kept
    assert jaccard(ids[0] == 1, ids[-1] == 1) < 0.9  # ... but the object moved
    assert min(jaccard(ids[t] == 1, ids[t + 1] == 1) for t in range(7)) > 0.6  # smoothly


def test_later_objects_occlude_earlier_ones_and_round_trip_through_the_davis_layout(images, tmp_path):
    frames, ids = synthetic_sequence(images[1], images, num_frames=4, size=SIZE, num_objects=3, seed=0)
    assert set(np.unique(ids[0])) == {0, 1, 2, 3}
    write_davis_sequence(tmp_path, "syn", frames, ids, resolution="240p")
    seq = read_davis_sequence(tmp_path, "syn", resolution="240p")
    assert np.array_equal(seq.annotations, ids)
    assert (seq.frames - frames).abs().max() <= 0.5 / 255 + 1e-6  # lossless PNG up to 8-bit rounding


def test_labels_propagate_along_the_known_motion(images, tmp_path):
    frames, ids = synthetic_sequence(
        images[2], images[:2], num_frames=6, size=(240, 400), num_objects=2, max_speed=12, seed=1
    )
    write_davis_sequence(tmp_path / "data", "syn", frames, ids)
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
    with pytest.raises(ValueError, match="must agree"):
        write_davis_sequence("unused", "syn", images[0][None], np.zeros((2, 3, 3), np.uint8))
