"""The trainer end to end on CPU: a few steps on real clips, checkpoints, exact resume, 2 processes, bad data, CLI."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from test_train_data import small_config
from testing_utils import (
    CLIPS,
    DAVIS_RESOLUTION,
    DAVIS_ROOT,
    FIXTURES,
    SHARED_DATA,
    assert_tensors_close,
    requires_shared_data,
    tiny_encoder,
)

from walkreg import CRWEncoder
from walkreg.cli import main
from walkreg.train.checkpoints import list_checkpoints
from walkreg.train.config import TrainConfig
from walkreg.train.loop import train
from walkreg.train.validation import davis_j
from walkreg.video import read_annotation, read_video, write_annotation, write_frames


ROOT = FIXTURES.parents[1]


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def test_few_steps_on_real_clips_write_loadable_checkpoints(tmp_path):
    config = small_config(
        output_dir=str(tmp_path / "run"), max_train_steps=3, checkpointing_steps=1, checkpoints_total_limit=2
    )
    result = train(config)
    assert result.global_step == 3 and len(result.losses) == 3
    assert all(0 < loss < 10 for loss in result.losses)  # ln(9) = 2.2 is chance for 9 nodes
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-2", "checkpoint-3"]
    assert not list(tmp_path.joinpath("run").glob(".checkpoint-*"))  # no temporaries left behind
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert TrainConfig(**saved) == config
    final = CRWEncoder.from_pretrained(tmp_path / "run" / "encoder")
    from_checkpoint = CRWEncoder.from_pretrained(tmp_path / "run" / "checkpoint-3" / "encoder")
    assert final.arch == "resnet18-small"
    for key, value in final.state_dict().items():
        assert torch.equal(value, from_checkpoint.state_dict()[key]), key
    assert not torch.equal(final.head.weight, CRWEncoder(arch="resnet18-small").head.weight)
    lines = (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [3]  # logging_steps=10: only the last step


def test_training_starts_from_an_inference_only_export_with_fresh_training_layers(tmp_path):
    start = tiny_encoder(seed=5)
    start.for_inference().save_pretrained(tmp_path / "export")
    train(
        small_config(
            output_dir=str(tmp_path / "run"),
            max_train_steps=1,
            learning_rate=1e-9,
            init_encoder=str(tmp_path / "export"),
        )
    )
    final = CRWEncoder.from_pretrained(tmp_path / "run" / "encoder")
    assert final.with_training_layers
    assert_tensors_close(final.trunk.conv1.weight, start.trunk.conv1.weight, atol=1e-6)  # the export's trunk
    assert not torch.allclose(final.head.weight, start.head.weight, atol=1e-3)  # a new head


def test_a_spent_time_budget_ends_the_run_with_a_final_checkpoint_and_encoder(tmp_path):
    config = small_config(
        output_dir=str(tmp_path / "run"), max_train_steps=50, checkpointing_steps=100, max_train_minutes=1e-6
    )
    result = train(config)
    assert result.global_step == 1 and len(result.losses) == 1
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-1"]
    assert CRWEncoder.from_pretrained(tmp_path / "run" / "encoder").arch == "resnet18-small"


def test_periodic_validation_logs_label_propagation_j(tmp_path):
    config = small_config(
        output_dir=str(tmp_path / "run"),
        max_train_steps=1,
        validation_data=str(DAVIS_ROOT),
        validation_resolution=DAVIS_RESOLUTION,
        validation_steps=1,
        validation_max_frames=3,
    )
    train(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    scores = next(r for r in records if "val/J/mean" in r)
    assert set(scores) == {"step", "val/J/mean", "val/J/blackswan", "val/J/car-roundabout", "val/J/dance-twirl"}
    assert all(0 <= v <= 1 for k, v in scores.items() if k != "step")


def test_validation_j_is_high_on_a_static_sequence(tmp_path):
    frames = read_video(DAVIS_ROOT / "JPEGImages" / DAVIS_RESOLUTION / "blackswan", max_frames=1).repeat(3, 1, 1, 1)
    mask = read_annotation(next((DAVIS_ROOT / "Annotations" / DAVIS_RESOLUTION / "blackswan").glob("*.png")))
    write_frames(tmp_path / "JPEGImages" / "240p" / "still", frames, suffix=".jpg")
    for i in range(3):
        write_annotation(tmp_path / "Annotations" / "240p" / "still" / f"{i:05d}.png", mask)
    scores = davis_j(tiny_encoder(), tmp_path, "240p", max_frames=3)
    assert scores["still"] > 0.8 and scores["mean"] == scores["still"]


def test_resume_repeats_the_uninterrupted_loss_trajectory(tmp_path):
    # 2 videos x 2 clips per epoch, batch 2: 2 updates per epoch, so step 3 is in the middle of the second epoch
    base = {"checkpointing_steps": 3, "edge_dropout": 0.1}
    whole = train(small_config(output_dir=str(tmp_path / "whole"), max_train_steps=5, **base))
    first = train(small_config(output_dir=str(tmp_path / "split"), max_train_steps=3, **base))
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    partial = tmp_path / "split" / ".checkpoint-4.partial"  # what a run killed while saving step 4 leaves
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half a file")
    rest = train(
        small_config(output_dir=str(tmp_path / "split"), max_train_steps=5, resume_from_checkpoint="latest", **base)
    )
    assert not partial.exists()
    assert len(first.losses) == 3 and len(rest.losses) == 2 and rest.global_step == 5
    assert_tensors_close(torch.tensor(first.losses + rest.losses), torch.tensor(whole.losses), atol=1e-6, rtol=1e-6)
    a = CRWEncoder.from_pretrained(tmp_path / "whole" / "encoder").state_dict()
    b = CRWEncoder.from_pretrained(tmp_path / "split" / "encoder").state_dict()
    for key in a:
        assert_tensors_close(b[key], a[key], atol=1e-6, rtol=1e-5)


def _reset_accelerate() -> None:
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


class _MakesMarker:
    """Unpickling this runs ``os.makedirs(marker)``: the payload of a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def test_resume_refuses_a_checkpoint_whose_pickles_run_code_unless_trusted(tmp_path):
    train(small_config(output_dir=str(tmp_path / "run"), max_train_steps=1))
    checkpoint = tmp_path / "run" / "checkpoint-1"
    registered = sorted(p.name for p in checkpoint.glob("custom_checkpoint_*.pkl"))
    assert registered == ["custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"]  # LR scheduler, edge-dropout generator
    dropout_state = torch.load(checkpoint / "custom_checkpoint_1.pkl", weights_only=True)
    marker = tmp_path / "pickled-code-ran"
    torch.save({**dropout_state, "payload": _MakesMarker(marker)}, checkpoint / "custom_checkpoint_1.pkl")
    _reset_accelerate()
    resumed = small_config(output_dir=str(tmp_path / "run"), max_train_steps=2, resume_from_checkpoint="latest")
    with pytest.raises(ValueError, match=r"`resume_from_checkpoint` .*custom_checkpoint_1\.pkl.*--trust-checkpoint"):
        train(resumed)
    assert not marker.exists()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-1"]
    _reset_accelerate()
    assert train(dataclasses.replace(resumed, trust_checkpoint=True)).global_step == 2
    assert marker.exists()  # trusted: accelerate unpickled it


def test_resume_drops_the_metrics_logged_after_the_checkpoint(tmp_path):
    base = {"output_dir": str(tmp_path / "run"), "logging_steps": 1, "checkpointing_steps": 1}
    train(small_config(max_train_steps=2, **base))
    metrics = tmp_path / "run" / "logs" / "metrics.jsonl"
    shutil.rmtree(tmp_path / "run" / "checkpoint-2")  # as if killed after logging step 2, before its checkpoint
    with metrics.open("a") as f:
        f.write(json.dumps({"step": 3, "train/loss": 1.0}) + "\n" + '{"step": 4, "train/lo')  # and a line cut short
    _reset_accelerate()
    train(small_config(max_train_steps=3, resume_from_checkpoint="latest", **base))
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert not list(metrics.parent.glob(".metrics*"))


def test_a_run_that_fails_before_its_first_step_leaves_nothing_behind(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(5000))
    with pytest.raises(ValueError, match="`data` holds no usable video"):
        train(small_config(data=[str(videos)], output_dir=str(tmp_path / "new" / "run")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videos"]
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep")
    _reset_accelerate()
    with pytest.raises(ValueError, match="`data` holds no usable video"):
        train(small_config(data=[str(videos)], output_dir=str(existing)))
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]


def _two_process_run(output_dir: str) -> None:
    torch.set_num_threads(1)
    train(small_config(output_dir=output_dir, max_train_steps=1, batch_size=1))


def test_two_processes_through_the_debug_launcher(tmp_path):
    # a fresh interpreter: forking a process whose OpenMP pool earlier tests already started can deadlock the children
    code = (
        "import sys; from accelerate import debug_launcher; from test_train import _two_process_run; "
        "debug_launcher(_two_process_run, args=(sys.argv[1],), num_processes=2)"
    )
    tests_dir = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "ddp")],
        cwd=tests_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = tmp_path / "ddp" / "checkpoint-1"
    assert {p.name for p in checkpoint.glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 1
    CRWEncoder.from_pretrained(tmp_path / "ddp" / "encoder")


def test_a_folder_with_bad_videos_trains_and_counts_them(tmp_path, caplog):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(CLIPS / "carphone.mp4", videos / "good.mp4")
    shutil.copy(CLIPS / "cups.mp4", videos / "good2.mp4")
    (videos / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(5000))
    (videos / "truncated.mp4").write_bytes((CLIPS / "cups.mp4").read_bytes()[:3000])
    with caplog.at_level("INFO", logger="walkreg"):
        result = train(small_config(data=[str(videos)], output_dir=str(tmp_path / "run"), max_train_steps=2))
    assert result.global_step == 2
    assert "4 videos: 2 usable, 2 unreadable" in caplog.text


def test_cli_config_file_with_overrides(tmp_path, capsys):
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({**small_config().to_dict(), "max_train_steps": 5, "learning_rate": 3e-4}))
    code = main(
        [
            "train",
            "--config",
            str(config_file),
            "--output-dir",
            str(tmp_path / "run"),
            "--max-train-steps",
            "1",
            "--node-mode",
            "frame",
            "--mixed-precision",
            "bf16",
            "--channels-last",
        ]
    )
    assert code == 0
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert (saved["max_train_steps"], saved["learning_rate"], saved["node_mode"]) == (1, 3e-4, "frame")
    assert saved["mixed_precision"] == "bf16" and saved["channels_last"] is True
    assert "trained 1 steps" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--data", str(CLIPS), "--output-dir", str(tmp_path / "run"), "--clip-len", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert "`clip_len` must be >= 3" in err and "\n" not in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"temprature": 0.1}))
    assert main(["train", "--config", str(bad)]) == 1
    assert "unknown keys ['temprature']" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "configs").glob("*.json")), ids=lambda p: p.name)
def test_example_configs_are_valid(path):
    config = TrainConfig.from_file(path)
    assert config.data and config.clip_len >= 3


@requires_shared_data
def test_one_step_on_the_shared_videos_in_frame_mode(tmp_path):
    result = train(
        small_config(
            data=[str(SHARED_DATA / "videos")],
            node_mode="frame",
            output_dir=str(tmp_path / "run"),
            max_train_steps=1,
            clips_per_video=1,
        )
    )
    assert result.global_step == 1 and result.skipped_videos == 0


def test_paths_that_would_write_into_the_data_or_never_validate_are_refused_before_anything_is_written(tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(CLIPS, videos)
    before = sorted(p.name for p in videos.rglob("*"))
    with pytest.raises(ValueError, match="`output_dir` .* is inside the training data"):
        train(small_config(data=[str(videos)], output_dir=str(videos / "run")))
    assert sorted(p.name for p in videos.rglob("*")) == before
    _reset_accelerate()
    with pytest.raises(ValueError, match="is not a DAVIS root"):
        train(
            small_config(output_dir=str(tmp_path / "run"), validation_data=str(tmp_path / "nope"), validation_steps=1)
        )
    assert not (tmp_path / "run").exists()


def test_resume_from_a_damaged_checkpoint_is_one_clear_error(tmp_path):
    train(small_config(output_dir=str(tmp_path / "run"), max_train_steps=1))
    weights = next((tmp_path / "run" / "checkpoint-1").glob("model*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    _reset_accelerate()
    resumed = small_config(output_dir=str(tmp_path / "run"), max_train_steps=2, resume_from_checkpoint="latest")
    with pytest.raises(ValueError, match="`resume_from_checkpoint` .*checkpoint-1.* cannot be loaded"):
        train(resumed)


@pytest.mark.parametrize("node_mode", ["frame", "grid"])
def test_known_motion_training_logs_and_lowers_the_motion_loss(tmp_path, node_mode):
    config = small_config(
        output_dir=str(tmp_path / "run"),
        node_mode=node_mode,
        synthetic_fraction=1.0,
        flow_teacher=True,
        motion_loss_weight=1.0,
        learning_rate=1e-3,
        max_train_steps=8,
        logging_steps=1,
    )
    result = train(config)
    lines = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    motion = [line["train/motion_loss"] for line in lines]
    assert len(motion) == 8 and all(0 < m < 20 for m in motion) and len(result.losses) == 8
    assert sum(motion[-3:]) < sum(motion[:3])  # the supervised transitions are learned
