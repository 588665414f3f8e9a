"""J and F on cases small enough to work out by hand, plus the DAVIS statistics (mean, recall, decay)."""

from __future__ import annotations

import numpy as np
import pytest

from walkreg.metrics import boundary_map, boundary_radius, dilate_disk, f_measure, jaccard, summarize


def mask(shape, *cells):
    out = np.zeros(shape, dtype=bool)
    for y, x in cells:
        out[y, x] = True
    return out


def test_jaccard_hand_cases():
    gt = np.zeros((4, 4), bool)
    gt[1:3, 1:3] = True  # 4 pixels
    pred = np.zeros((4, 4), bool)
    pred[1:3, 1:4] = True  # 6 pixels, 4 shared
    assert jaccard(gt, pred) == pytest.approx(4 / 6)
    void = mask((4, 4), (1, 3))  # one of the two prediction-only pixels is void
    assert jaccard(gt, pred, void) == pytest.approx(4 / 5)
    assert jaccard(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert jaccard(gt, ~gt) == 0.0


def test_boundary_map_marks_pixels_that_differ_from_right_lower_or_diagonal_neighbour():
    m = np.zeros((5, 5), bool)
    m[1:3, 1:3] = True
    expected = mask((5, 5), (0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))
    np.testing.assert_array_equal(boundary_map(m), expected)
    # last row compares with the right neighbour only, last column with the lower one only
    edge = np.zeros((3, 3), bool)
    edge[2, 1] = True
    np.testing.assert_array_equal(boundary_map(edge), mask((3, 3), (1, 0), (1, 1), (2, 0), (2, 1)))


def test_dilate_disk_hand_case_and_brute_force():
    single = mask((7, 7), (3, 3))
    disk = dilate_disk(single, 2)
    ys, xs = np.nonzero(disk)
    assert disk.sum() == 13  # offsets with dy^2 + dx^2 <= 4
    assert set(zip(ys - 3, xs - 3, strict=True)) == {
        (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if dy * dy + dx * dx <= 4
    }
    np.testing.assert_array_equal(dilate_disk(single, 0), single)
    corner = dilate_disk(mask((4, 4), (0, 0)), 1)
    np.testing.assert_array_equal(corner, mask((4, 4), (0, 0), (0, 1), (1, 0)))

    rng = np.random.default_rng(0)
    m = rng.random((23, 31)) > 0.97
    radius = 4
    brute = np.zeros_like(m)
    for y, x in zip(*np.nonzero(m), strict=True):
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                if dy * dy + dx * dx <= radius * radius and 0 <= y + dy < 23 and 0 <= x + dx < 31:
                    brute[y + dy, x + dx] = True
    np.testing.assert_array_equal(dilate_disk(m, radius), brute)


def test_f_measure_hand_cases():
    gt = mask((10, 10), (4, 4))  # boundary: the 2x2 block (3..4, 3..4)
    pred = mask((10, 10), (4, 6))  # boundary: (3..4, 5..6)
    # radius 1: only column 5 of the prediction's boundary is within reach of column 4, and vice versa
    assert f_measure(gt, pred, tolerance=1) == pytest.approx(0.5)
    assert f_measure(gt, pred, tolerance=2) == pytest.approx(1.0)  # two columns apart: all within radius 2
    assert f_measure(gt, gt) == 1.0
    assert f_measure(gt, np.zeros_like(gt)) == 0.0  # precision 1, recall 0
    assert f_measure(np.zeros_like(gt), np.zeros_like(gt)) == 1.0
    far = mask((10, 10), (4, 9))
    assert f_measure(gt, far, tolerance=1) == 0.0


def test_f_measure_removes_void_pixels_before_taking_boundaries():
    gt = np.zeros((40, 40), bool)
    gt[5:15, 5:15] = True
    pred = gt.copy()
    pred[25:35, 25:35] = True  # a false blob ...
    void = np.zeros_like(gt)
    void[24:36, 24:36] = True  # ... entirely inside void
    assert f_measure(gt, pred) < 0.8
    assert f_measure(gt, pred, void) == 1.0


def test_boundary_radius_is_the_davis_tolerance():
    assert boundary_radius((480, 854)) == 8  # ceil(0.008 * 979.6)
    assert boundary_radius((240, 427)) == 4  # ceil(0.008 * 489.8)
    assert boundary_radius((480, 854), tolerance=3) == 3  # >= 1 means pixels


def test_summarize_mean_recall_and_decay():
    values = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    stats = summarize(values)
    assert stats.mean == pytest.approx(0.55)
    assert stats.recall == pytest.approx(0.5)  # 0.5 itself is not above 0.5
    # bin edges round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7] (4.5 rounds up): first bin 0..2, last bin 5..7
    assert stats.decay == pytest.approx(0.8 - 0.3)
    assert summarize([0.7]).decay == 0.0


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="`annotation` and `prediction`"):
        jaccard(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="`void`"):
        f_measure(np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="`values`"):
        summarize([])


def test_dilation_matches_opencv_with_the_toolkits_disk():
    """davis2017-evaluation dilates with ``cv2.dilate`` and a ``skimage.morphology.disk`` kernel (x^2 + y^2 <= r^2)."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    for radius, shape in ((4, (60, 107)), (8, (120, 90))):
        m = rng.random(shape) > 0.995
        offsets = np.arange(-radius, radius + 1)
        kernel = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.uint8)
        np.testing.assert_array_equal(dilate_disk(m, radius), cv2.dilate(m.astype(np.uint8), kernel).astype(bool))
