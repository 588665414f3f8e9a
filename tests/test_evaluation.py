"""`walkreg eval-davis`: propagation on real DAVIS fixtures, labels that follow a known motion, reports, errors."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from testing_utils import (
    DAVIS2017_ROOT,
    DAVIS_RESOLUTION,
    DAVIS_ROOT,
    SHARED_DATA,
    requires_shared_data,
    synthetic_video,
    tiny_encoder,
)

from walkreg.cli import main
from walkreg.evaluation import evaluate_sequence, first_frame_labels, labels_to_ids
from walkreg.features import LabFeatures, rgb_to_lab
from walkreg.metrics import f_measure, jaccard
from walkreg.propagation import PropagationConfig
from walkreg.video import read_annotation, read_image, write_annotation, write_frames


SHIFT = 8  # pixels per frame = one feature cell


def square(height, width, top, left, size=24):
    ids = np.zeros((height, width), np.uint8)
    ids[top : top + size, max(left, 0) : max(left + size, 0)] = 1
    return ids


@pytest.fixture(scope="module")
def moving_root(tmp_path_factory):
    """A DAVIS-layout sequence whose texture and object move right by SHIFT pixels per frame."""
    root = tmp_path_factory.mktemp("moving")
    frames = synthetic_video(6, 64, 96, shift=(0, SHIFT), seed=3)
    write_frames(root / "JPEGImages" / "480p" / "moving", frames, suffix=".png")
    for t in range(6):
        write_annotation(root / "Annotations" / "480p" / "moving" / f"{t:05d}.png", square(64, 96, 16, 16 + SHIFT * t))
    return root


def test_labels_follow_a_known_translation(moving_root, tmp_path):
    result = evaluate_sequence(
        moving_root, "moving", LabFeatures().iter_features, tmp_path / "pred", config=PropagationConfig(num_context=3)
    )
    for t in range(1, 6):
        predicted = read_annotation(tmp_path / "pred" / f"{t:05d}.png")
        moved, still = square(64, 96, 16, 16 + SHIFT * t), square(64, 96, 16, 16)
        assert jaccard(moved, predicted) > 0.85, t
        if t >= 2:  # a prediction that stayed put would overlap the true square far less
            assert jaccard(still, predicted) < 0.5, t
    assert [o.object_id for o in result.objects] == [1]
    assert len(result.objects[0].j_per_frame) == 4  # frames 1..T-2 are scored
    assert result.objects[0].j.mean > 0.85


def test_first_frame_labels_and_upsampling_round_trip():
    ids = np.zeros((32, 48), np.uint8)
    ids[8:24, 16:40] = 2
    ids[0:8, 0:8] = 255  # void: no channel
    labels = first_frame_labels(ids, [1, 2], (4, 6))
    assert labels.shape == (1, 3, 4, 6)
    assert torch.all(labels[0, :, 0, 0] == 0)
    np.testing.assert_allclose(labels[0, :, 1:, 1:].sum(0), 1.0, atol=1e-6)
    back = labels_to_ids(labels, (32, 48))
    assert jaccard(ids == 2, back == 2) > 0.8
    assert set(np.unique(back)) <= {0, 2}
    # channels are the listed ids only: id 2 alone is channel 1, and maps back to 2
    labels = first_frame_labels(ids, [2], (4, 6))
    assert labels.shape == (1, 2, 4, 6)
    np.testing.assert_array_equal(labels_to_ids(labels, (32, 48), objects=[2]), back)


def test_eval_on_three_davis_fixture_sequences(tmp_path, capsys):
    out = tmp_path / "eval"
    args = [
        "eval-davis",
        "--davis-root",
        str(DAVIS_ROOT),
        "--resolution",
        DAVIS_RESOLUTION,
        "--out",
        str(out),
        "--baselines",
        "lab",
        "--num-context",
        "1",
    ]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "MEAN" in table and "blackswan" in table and "peak RSS" in table

    report = json.loads((out / "results.json").read_text())
    assert report["void"] == "background"  # davis2017-evaluation's treatment is the default
    method = report["methods"]["lab"]
    assert [s["sequence"] for s in method["sequences"]] == ["blackswan", "car-roundabout", "dance-twirl"]
    assert report["protocol"]["num_context"] == 1 and report["protocol"]["top_k"] == 10
    # the written PNGs are what was scored: recompute one sequence's J and F from the files
    for seq in method["sequences"]:
        names = sorted(p.name for p in (DAVIS_ROOT / "Annotations" / DAVIS_RESOLUTION / seq["sequence"]).iterdir())
        assert sorted(p.name for p in (out / "lab" / seq["sequence"]).iterdir()) == names
        truth0 = read_annotation(DAVIS_ROOT / "Annotations" / DAVIS_RESOLUTION / seq["sequence"] / names[0])
        np.testing.assert_array_equal(read_annotation(out / "lab" / seq["sequence"] / names[0]), truth0)
    seq = method["sequences"][0]
    j, f = [], []
    for name in sorted(p.name for p in (out / "lab" / "blackswan").iterdir())[1:-1]:
        truth = read_annotation(DAVIS_ROOT / "Annotations" / DAVIS_RESOLUTION / "blackswan" / name) == 1
        predicted = read_annotation(out / "lab" / "blackswan" / name) == 1
        j.append(jaccard(truth, predicted))
        f.append(f_measure(truth, predicted))
    assert seq["objects"][0]["J_per_frame"] == pytest.approx(j)
    assert seq["J_mean"] == pytest.approx(np.mean(j)) and seq["F_mean"] == pytest.approx(np.mean(f))
    # blackswan moves slowly: colour alone tracks it well; a method mean is the mean over the three objects
    assert seq["J_mean"] > 0.6
    assert method["J_mean"] == pytest.approx(np.mean([s["J_mean"] for s in method["sequences"]]))
    assert method["JF_mean"] == pytest.approx((method["J_mean"] + method["F_mean"]) / 2)

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["sequence"] for r in rows if r["object"] == "mean"] == [
        "blackswan",
        "car-roundabout",
        "dance-twirl",
        "ALL",
    ]
    assert float(rows[-1]["JF_mean"]) == pytest.approx(method["JF_mean"])


def test_multi_object_davis2017_masks_and_void(tmp_path):
    """tennis (2 objects + void), downscaled to 240p, as a 3-frame sequence: frames 0, 1, 1."""
    root = tmp_path / "davis2017"
    source = DAVIS2017_ROOT / "JPEGImages" / "480p" / "tennis"
    annotations = DAVIS2017_ROOT / "Annotations" / "480p" / "tennis"
    frames = torch.stack([read_image(source / f"0000{i}.jpg", size=(240, 427)) for i in (0, 1, 1)])
    write_frames(root / "JPEGImages" / "240p" / "tennis", frames, suffix=".jpg")
    for t, i in enumerate((0, 1, 1)):
        ids = read_annotation(annotations / f"0000{i}.png")[::2, ::2][:240, :427]
        write_annotation(root / "Annotations" / "240p" / "tennis" / f"{t:05d}.png", ids)

    config = PropagationConfig(num_context=2)
    ignored = evaluate_sequence(
        root, "tennis", LabFeatures().iter_features, tmp_path / "pred", "240p", config, void="ignore"
    )
    assert [o.object_id for o in ignored.objects] == [1, 2]
    predicted = read_annotation(tmp_path / "pred" / "00001.png")
    assert set(np.unique(predicted)) <= {0, 1, 2}
    truth = read_annotation(root / "Annotations" / "240p" / "tennis" / "00001.png")
    assert (truth == 255).any()
    assert ignored.objects[0].j.mean == pytest.approx(jaccard(truth == 1, predicted == 1, truth == 255))
    # the default is the toolkit's: void pixels count as background
    by_default = evaluate_sequence(root, "tennis", LabFeatures().iter_features, None, "240p", config)
    assert by_default.objects[0].j.mean == pytest.approx(jaccard(truth == 1, predicted == 1))
    assert by_default.objects[0].j.mean != pytest.approx(ignored.objects[0].j.mean)


def test_objects_are_the_ids_present_in_the_first_frame(moving_root, tmp_path, capsys):
    """Ids {1, 200}: two objects, not 200; predictions keep the ids; an id first seen later is reported, not scored."""
    root = tmp_path / "root"
    shutil.copytree(moving_root / "JPEGImages", root / "JPEGImages")
    masks = root / "Annotations" / "480p" / "moving"
    for t in range(6):
        ids = square(64, 96, 16, 16 + SHIFT * t) + 200 * square(64, 96, 40, 48 + SHIFT * t, size=16)  # and id 200
        ids[0:8, 0:8] = 255
        if t >= 2:
            ids[50:60, 4:14] = 7  # an object that the first frame does not hold
        write_annotation(masks / f"{t:05d}.png", ids)
    with pytest.warns(UserWarning, match=r"'moving'.* do(es)? not, 7 \(from 00002\.png\); they are not scored"):
        result = evaluate_sequence(
            root, "moving", LabFeatures().iter_features, tmp_path / "pred", config=PropagationConfig(num_context=3)
        )
    assert [o.object_id for o in result.objects] == [1, 200]
    assert result.objects[0].j.mean > 0.8 and result.objects[1].j.mean > 0.8
    for t in range(6):
        predicted = read_annotation(tmp_path / "pred" / f"{t:05d}.png")
        assert set(np.unique(predicted)) == {0, 1, 200}, t
    truth = read_annotation(masks / "00003.png")
    assert result.objects[1].j_per_frame[2] == pytest.approx(
        jaccard(truth == 200, read_annotation(tmp_path / "pred" / "00003.png") == 200)
    )

    out = tmp_path / "eval"
    assert main(["eval-davis", "--davis-root", str(root), "--out", str(out), "--baselines", "lab"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("walkreg eval-davis: warning: Sequence 'moving'")
    objects = json.loads((out / "results.json").read_text())["methods"]["lab"]["sequences"][0]["objects"]
    assert [o["object"] for o in objects] == [1, 200]


def test_cli_encoder_and_baselines_in_one_run(moving_root, tmp_path, capsys):
    encoder_dir = tmp_path / "enc"
    tiny_encoder(seed=0).save_pretrained(encoder_dir)
    out = tmp_path / "out"
    out.mkdir()  # an empty directory is accepted
    args = [
        "eval-davis",
        "--davis-root",
        str(moving_root),
        "--out",
        str(out),
        "--encoder",
        str(encoder_dir),
        "--baselines",
        "lab",
        "random-resnet18-small",
        "--num-context",
        "2",
    ]
    assert main(args) == 0
    report = json.loads((out / "results.json").read_text())
    assert list(report["methods"]) == ["encoder", "lab", "random-resnet18-small"]
    assert report["methods"]["encoder"]["arch"] == "resnet18-small"
    for method in report["methods"].values():
        assert 0 <= method["JF_mean"] <= 1 and method["seconds_per_frame"] > 0
        assert len(list((out / method["method"] / "moving").glob("*.png"))) == 6
    assert capsys.readouterr().out.count("MEAN") == 3


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "Nothing to evaluate"),
        (["--baselines", "lab", "--sequences", "nope"], "`--sequences` must name sequences"),
        (["--baselines", "lab", "--top-k", "0"], "`top_k` must be >= 1"),
        (["--encoder", "/nonexistent/enc"], "must be an encoder directory"),
    ],
)
def test_cli_errors_are_one_line_and_leave_no_output(moving_root, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(["eval-davis", "--davis-root", str(moving_root), "--out", str(out), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()


def test_failure_midway_leaves_no_partial_output(moving_root, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(moving_root, root)
    (root / "Annotations" / "480p" / "moving" / "00003.png").unlink()
    out = tmp_path / "out"
    assert main(["eval-davis", "--davis-root", str(root), "--out", str(out), "--baselines", "lab"]) == 1
    assert "lacks 1 of 6 annotations" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_existing_non_empty_out_is_refused(moving_root, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("x")
    assert (
        main(["eval-davis", "--davis-root", str(moving_root), "--out", str(tmp_path / "out"), "--baselines", "lab"])
        == 1
    )
    assert "new or empty directory" in capsys.readouterr().err


def test_lab_conversion_of_reference_colours():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).T.reshape(3, 1, 3)
    lab = rgb_to_lab(rgb)[:, 0].T
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=0.05)
    np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=0.05)
    np.testing.assert_allclose(lab[2], [53.24, 80.09, 67.20], atol=0.1)  # sRGB red, D65
    features = next(LabFeatures().iter_features([torch.rand(3, 20, 30)]))
    assert features.shape == (1, 193, 3, 4)
    np.testing.assert_allclose(features.norm(dim=1), 1.0, atol=1e-5)


@pytest.mark.slow
@requires_shared_data
def test_full_protocol_on_shared_480p_blackswan(tmp_path):
    """The paper's protocol unchanged (context 20) on a real 480p sequence, with colour features."""
    result = evaluate_sequence(SHARED_DATA / "davis", "blackswan", LabFeatures().iter_features, tmp_path / "pred")
    assert result.num_frames == 50 and len(result.objects[0].j_per_frame) == 48
    assert result.objects[0].j.mean > 0.5


def test_peak_rss_follows_this_process_own_allocations():
    code = (
        "import torch; from walkreg.evaluation import peak_rss_mb; a = peak_rss_mb(); "
        "b = torch.ones(64 * 2**20); print(a, peak_rss_mb())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after = map(float, out.split())
    assert after - before >= 200  # the 256 MiB block, written
