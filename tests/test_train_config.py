"""The trainer's configuration: type and range checks, `walkreg train --help`, the default tracker, config-file
paths."""

import argparse
import dataclasses
import json
import logging
import typing
from pathlib import Path

import pytest
import torch
from testing_utils import CLIPS, FIXTURES

from walkreg.cli import build_parser, main
from walkreg.encoder import ARCHITECTURES
from walkreg.train import loop
from walkreg.train.config import PATH_FIELDS, TrainConfig, field_docs


ROOT = FIXTURES.parents[1]
SHARED = ROOT.parent / "shared"  # the example configs' "../shared/data" from the repository root
EXAMPLES = sorted((ROOT / "examples" / "configs").glob("*.json"))


# 1. Types and ranges.


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"batch_size": "two"}, "`batch_size` must be an integer, but is 'two' (str)."),
        ({"batch_size": True}, "`batch_size` must be an integer, but is True (bool)."),
        ({"max_train_steps": 2.5}, "`max_train_steps` must be an integer or None, but is 2.5 (float)."),
        ({"clip_len": 4.0}, "`clip_len` must be an integer, but is 4.0 (float)."),
        ({"frame_crop_scale": 0.5}, "`frame_crop_scale` must be a pair of numbers, but is 0.5 (float)."),
        ({"adam_betas": [0.9]}, "`adam_betas` must be a pair of numbers, but is [0.9] (list)."),
        (
            {"patch_crop_ratio": [0.5, "wide"]},
            "`patch_crop_ratio` must be a pair of numbers, but is [0.5, 'wide'] (list).",
        ),
        ({"lr_milestones": [20, 2.5]}, "`lr_milestones` must be a list of integers, but is [20, 2.5] (list)."),
        ({"data": 5}, "`data` must be a list of strings, but is 5 (int)."),
        ({"data": ["a", None]}, "`data` must be a list of strings, but is ['a', None] (list)."),
        ({"fps": "8"}, "`fps` must be a finite number, but is '8' (str)."),
        ({"temperature": float("nan")}, "`temperature` must be a finite number, but is nan (float)."),
        ({"channels_last": "yes"}, "`channels_last` must be true or false, but is 'yes' (str)."),
        ({"cache_dir": 3}, "`cache_dir` must be a string or None, but is 3 (int)."),
        ({"node_mode": "patch"}, "`node_mode` must be one of 'grid', 'frame', but is 'patch' (str)."),
        ({"mixed_precision": "fp32"}, "`mixed_precision` must be one of 'auto', 'no', 'bf16', 'fp16', but is 'fp32'"),
        ({"arch": "resnet50"}, "`arch` must be one of 'resnet18', 'resnet18-small', but is 'resnet50' (str)."),
        ({"report_to": "tensorbaord"}, "`report_to` must be one of 'auto', 'tensorboard', 'wandb', 'all', 'none'"),
    ],
)
def test_wrong_types_name_the_field_the_rule_and_the_value(values, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(**values)
    assert str(err.value).startswith(message)


def test_ranges_are_still_checked():
    with pytest.raises(ValueError, match=r"`frame_crop_scale` must satisfy 0 < low <= high <= 1, but is \(0.9, 0.8\)"):
        TrainConfig(frame_crop_scale=[0.9, 0.8])
    with pytest.raises(ValueError, match="`clip_len` must be >= 3"):
        TrainConfig(clip_len=2)


def test_values_are_converted_to_the_field_types():
    config = TrainConfig(data=CLIPS, fps=8, frame_crop_scale=[1, 1], lr_milestones=[], cache_dir=Path("cache"))
    assert config.data == [str(CLIPS)] and config.cache_dir == "cache"
    assert config.fps == 8.0 and isinstance(config.fps, float)
    assert config.frame_crop_scale == (1.0, 1.0) and all(isinstance(v, float) for v in config.frame_crop_scale)
    assert config.lr_milestones == ()
    json.dumps(config.to_dict())  # a Path would not serialize


def test_arch_choices_are_the_encoder_architectures():
    assert typing.get_args(typing.get_type_hints(TrainConfig)["arch"]) == tuple(ARCHITECTURES)
    with pytest.raises(ValueError) as err:
        TrainConfig(arch="x")
    assert all(repr(name) in str(err.value) for name in ARCHITECTURES)
    assert all(TrainConfig(arch=name).arch == name for name in ARCHITECTURES)


def write_config(path: Path, values: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    return path


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"batch_size": "two"}, "`batch_size` must be an integer, but is 'two' (str)."),
        ({"frame_crop_scale": 0.5}, "`frame_crop_scale` must be a pair of numbers, but is 0.5 (float)."),
        ({"data": 5}, "`data` must be a list of strings, but is 5 (int)."),
        ({"max_train_steps": 2.5}, "`max_train_steps` must be an integer or None, but is 2.5 (float)."),
        ({"clip_len": 2}, "`clip_len` must be >= 3"),
    ],
)
def test_config_file_errors_are_one_line_naming_the_file(tmp_path, capsys, values, message):
    path = write_config(tmp_path / "bad.json", {"data": [str(CLIPS)], **values})
    assert main(["train", "--config", str(path), "--output-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and str(path) in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_unknown_config_keys_list_the_valid_ones(tmp_path):
    path = write_config(tmp_path / "bad.json", {"batchsize": 2})
    with pytest.raises(ValueError, match=r"unknown keys \['batchsize'\]; known keys are \[.*'batch_size'"):
        TrainConfig.from_file(path)


def test_command_line_values_are_checked_like_file_values(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's own type check: usage error
        main(["train", "--data", str(CLIPS), "--max-train-steps", "2.5"])
    assert exit_info.value.code == 2
    assert "--max-train-steps: invalid int value: '2.5'" in capsys.readouterr().err
    assert main(["train", "--data", str(CLIPS), "--output-dir", str(tmp_path / "run"), "--edge-dropout", "1"]) == 1
    err = capsys.readouterr().err
    assert "`edge_dropout` must be in [0, 1), but is 1.0." in err and err.count("\n") == 1


# 2. Help texts.


def train_parser() -> argparse.ArgumentParser:
    subparsers = next(a for a in build_parser(["train"])._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices["train"]


def test_every_field_has_a_docstring_entry():
    docs = field_docs()
    assert sorted(docs) == sorted(f.name for f in dataclasses.fields(TrainConfig))
    for name, doc in docs.items():
        assert doc.endswith(".") and len(doc.split()) >= 3, (name, doc)
        assert "`" not in doc and ":func:" not in doc, (name, doc)


def test_every_train_option_says_what_it_does_and_its_default():
    options = [a for a in train_parser()._actions if a.option_strings and a.dest != "help"]
    assert len(options) == len(dataclasses.fields(TrainConfig)) + 1  # + --config
    for action in options:
        sentence, _, default = action.help.rpartition(" Default: ")
        if action.dest != "config":
            assert default.endswith("."), (action.dest, action.help)
        else:
            sentence = action.help
        assert len(sentence.split()) >= 3 and sentence.endswith("."), (action.dest, action.help)
        assert "`" not in action.help, (action.dest, action.help)


def test_train_help_has_no_markup(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "`" not in out and ":func:" not in out
    assert "--batch-size BATCH_SIZE\n" in out and "Clips per process per micro-batch. Default: 20." in " ".join(
        out.split()
    )
    assert "{grid,frame}" in out and "{resnet18,resnet18-small}" in out
    assert "relative to the file's folder" in " ".join(out.split())


# 3. The default tracker.


def fake_find_spec(installed: set):
    return lambda name, *args: object() if name in installed else None


def test_report_to_defaults_to_auto():
    assert TrainConfig().report_to == "auto"


@pytest.mark.parametrize(
    ("report_to", "installed", "expected", "warns"),
    [
        ("auto", set(), None, False),
        ("auto", {"tensorboard"}, "tensorboard", False),
        ("auto", {"tensorboardX"}, "tensorboard", False),
        ("none", {"tensorboard"}, None, False),
        ("tensorboard", set(), None, True),
        ("tensorboard", {"tensorboard"}, "tensorboard", False),
        ("wandb", set(), "wandb", False),  # accelerate itself says that wandb is missing
    ],
)
def test_trackers(monkeypatch, caplog, report_to, installed, expected, warns):
    monkeypatch.setattr(loop.importlib.util, "find_spec", fake_find_spec(installed))
    with caplog.at_level(logging.WARNING, logger="walkreg"):
        assert loop._trackers(report_to) == expected
    assert ("tensorboard is not installed" in caplog.text) == warns


# 4. Relative paths in config files.


def test_relative_paths_in_a_config_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "configs"
    (folder / "encoder").mkdir(parents=True)
    path = write_config(
        folder / "run.json",
        {
            "data": ["../videos", str(CLIPS), "~/more"],
            "output_dir": "../runs/a",
            "cache_dir": "index",
            "init_encoder": "encoder",
            "validation_data": "davis",
            "resume_from_checkpoint": "../runs/a/checkpoint-2",
        },
    )
    monkeypatch.chdir(tmp_path)
    config = TrainConfig.from_file(Path("project") / "configs" / "run.json")
    assert config.data == [str(tmp_path / "project" / "videos"), str(CLIPS), str(Path("~/more").expanduser())]
    assert config.output_dir == str(tmp_path / "project" / "runs" / "a")
    assert config.cache_dir == str(folder / "index") and config.init_encoder == str(folder / "encoder")
    assert config.validation_data == str(folder / "davis")
    assert config.resume_from_checkpoint == str(tmp_path / "project" / "runs" / "a" / "checkpoint-2")
    overridden = TrainConfig.from_file(path, output_dir="here", data=["there"])  # command-line values: as given
    assert (overridden.output_dir, overridden.data) == ("here", ["there"])


def test_config_file_keeps_latest_and_hub_ids(tmp_path):
    path = write_config(tmp_path / "run.json", {"resume_from_checkpoint": "latest", "init_encoder": "org/encoder"})
    config = TrainConfig.from_file(path)
    assert (config.resume_from_checkpoint, config.init_encoder) == ("latest", "org/encoder")
    (tmp_path / "org" / "encoder").mkdir(parents=True)  # a folder of that name next to the file wins
    assert TrainConfig.from_file(path).init_encoder == str(tmp_path / "org" / "encoder")


def test_path_fields_are_the_string_fields_that_hold_paths():
    for name in PATH_FIELDS:
        assert name in TrainConfig.__dataclass_fields__
        assert "relative to the file's folder" in " ".join(
            next(a.help for a in train_parser()._actions if a.dest == name).split()
        )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_point_inside_the_workspace(path):
    config = TrainConfig.from_file(path)
    assert Path(config.output_dir).parent in (ROOT / "outputs", ROOT / "runs")
    for value in [*config.data, config.validation_data, config.init_encoder]:
        if value is not None:
            path = Path(value)
            assert path.is_relative_to(ROOT) or path.is_relative_to(SHARED), value
            if path.is_relative_to(ROOT / "tests") or (path.is_relative_to(SHARED) and SHARED.is_dir()):
                assert path.exists(), value


def test_smoke_config_runs_from_another_folder(tmp_path, monkeypatch, capsys, fresh_accelerate_state):
    monkeypatch.chdir(tmp_path)
    smoke = ROOT / "examples" / "configs" / "crw_tiny_smoke.json"
    code = main(["train", "--config", str(smoke), "--output-dir", "run", "--max-train-steps", "1"])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["data"] == [str(ROOT / "tests" / "fixtures" / "clips")]
    assert (tmp_path / "run" / "encoder").is_dir()


def test_auto_precision_is_bf16_only_where_the_hardware_computes_it_natively(monkeypatch):

    from walkreg.train.precision import resolve_mixed_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_mixed_precision("auto", cpu)[0] == "no"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_mixed_precision("auto", cpu)[0] == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert resolve_mixed_precision("auto", cuda)[0] == "no"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_mixed_precision("auto", cuda)[0] == "bf16"
    assert resolve_mixed_precision("no", cuda) == ("no", "as requested")  # an explicit choice always wins
    assert TrainConfig().mixed_precision == "auto" and TrainConfig().channels_last
