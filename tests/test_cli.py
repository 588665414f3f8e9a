import argparse
import shutil
import subprocess
import sys

import pytest
import torch

from walkreg.cli import main


def test_env_reports_versions_and_codecs(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "libx264" in out and "device " in out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: walkreg" in capsys.readouterr().out


def test_python_dash_m_walkreg_works():
    result = subprocess.run([sys.executable, "-m", "walkreg", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "env" in result.stdout


def test_core_import_does_not_pull_optional_packages():
    code = (
        "import sys, walkreg, walkreg.video, walkreg.cli; print(sorted(m for m in ('diffusers', 'accelerate', "
        "'transformers', 'walkreg.pipelines', 'walkreg.train') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_help_lists_every_command_without_importing_torch():
    code = (
        "import sys; from walkreg.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    for command in ("demo", "score", "stabilize", "edit", "train", "eval-davis", "convert-crw", "env"):
        assert command in result.stdout
    assert result.stdout.strip().endswith("False")


def test_every_option_of_every_core_command_explains_itself_and_its_default():
    from walkreg.cli import COMMANDS, build_parser

    for command in COMMANDS:
        parser = build_parser([command])
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
        assert "`" not in sub.description, (command, sub.description)
        for action in sub._actions:
            if action.dest == "help" or action.help is None:
                continue
            assert len(action.help.split()) >= 4, (command, action.dest, action.help)
            assert "`" not in action.help, (command, action.dest, action.help)
            if action.option_strings and not action.required:
                assert "default" in action.help.lower(), (command, action.dest, action.help)


def test_old_feature_names_still_work_with_a_one_line_deprecation_message(tmp_path, capsys):
    from testing_utils import synthetic_video

    from walkreg.video import write_video

    write_video(tmp_path / "clip.mp4", synthetic_video(3, 16, 16, seed=0), fps=8)
    assert main(["score", str(tmp_path / "clip.mp4"), "--encoder", "pixels"]) == 0
    err = capsys.readouterr().err
    assert "walkreg score: warning: The features name 'pixels' is deprecated; use 'rgb'." in err
    assert len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    from testing_utils import synthetic_video

    from walkreg.video import write_video

    folder = tmp_path_factory.mktemp("clips")
    source = synthetic_video(4, 32, 48, shift=(0, 2), seed=3)
    write_video(folder / "src.mp4", source, fps=8)
    write_video(folder / "edit.mp4", (source * 0.9).clamp(0, 1), fps=8)
    return folder


STABILIZE = "stabilize --source {d}/src.mp4 --edited {d}/edit.mp4 --encoder rgb"


@pytest.mark.parametrize(
    "command, clobbered",
    [
        ("score {d}/edit.mp4 --encoder rgb --json {d}/edit.mp4", "edit.mp4"),
        ("score {d}/edit.mp4 --source {d}/src.mp4 --encoder rgb --report {d}/sub/../src.mp4", "src.mp4"),
        (STABILIZE + " --out {d}/edit.mp4", "edit.mp4"),
        (STABILIZE + " --out {d}/link.mp4", "src.mp4"),  # a symbolic link to the source
    ],
)
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(clip_files, tmp_path, capsys, command, clobbered):
    folder = tmp_path / "clips"
    shutil.copytree(clip_files, folder)
    (folder / "sub").mkdir()
    (folder / "link.mp4").symlink_to(folder / "src.mp4")
    before = (folder / clobbered).read_bytes()
    assert main([part.format(d=folder) for part in command.split()]) == 1
    err = capsys.readouterr().err.strip()
    assert "is the same file as" in err and "\n" not in err
    assert (folder / clobbered).read_bytes() == before


def test_score_writes_its_report_and_json_together_or_not_at_all(clip_files, tmp_path, capsys):
    (tmp_path / "not-a-folder").write_text("a file where the JSON's folder should be")
    report, bad_json = tmp_path / "r.html", tmp_path / "not-a-folder" / "scores.json"
    args = ["score", str(clip_files / "edit.mp4"), "--source", str(clip_files / "src.mp4"), "--encoder", "rgb"]
    assert main([*args, "--report", str(report), "--json", str(bad_json)]) == 1
    assert "\n" not in capsys.readouterr().err.strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]  # no report, no temporary
    assert main([*args, "--report", str(report), "--json", str(tmp_path / "scores.json")]) == 0
    assert report.stat().st_size > 0 and (tmp_path / "scores.json").stat().st_size > 0


def test_an_existing_output_is_replaced_only_with_overwrite(clip_files, tmp_path, capsys):
    out = tmp_path / "stable.mp4"
    out.write_bytes(b"an earlier result")
    args = ["stabilize", "--source", str(clip_files / "src.mp4"), "--edited", str(clip_files / "edit.mp4")]
    args += ["--encoder", "rgb", "--out", str(out)]
    assert main(args) == 1
    assert "exists; pass `--overwrite` to replace it" in capsys.readouterr().err
    assert out.read_bytes() == b"an earlier result"
    assert main([*args, "--overwrite"]) == 0
    assert out.read_bytes() != b"an earlier result"
    json_out = tmp_path / "scores.json"
    json_out.write_text("{}")
    score = ["score", str(out), "--source", str(clip_files / "src.mp4"), "--encoder", "rgb", "--json", str(json_out)]
    assert main(score) == 1 and json_out.read_text() == "{}"
    assert main([*score, "--overwrite"]) == 0 and json_out.read_text() != "{}"


def test_hostile_command_lines_end_in_one_line_errors_that_name_the_command(clip_files, tmp_path, capsys):
    import json as json_module

    bad_encoder = tmp_path / "enc"
    bad_encoder.mkdir()
    (bad_encoder / "config.json").write_text("[1, 2]")
    (bad_encoder / "model.safetensors").write_bytes(b"")
    edit, src = str(clip_files / "edit.mp4"), str(clip_files / "src.mp4")
    cases = [
        (["env", "please"], 2, "walkreg env: error: unrecognized arguments: please"),
        (["score", edit, "--temperature", "inf"], 2, "walkreg score: error: argument --temperature: must be a finite"),
        (["stabilize", "--source", src, "--edited", edit, "--out", str(tmp_path / "o.mp4"), "--fps", "nan"], 2,
         "walkreg stabilize: error: argument --fps: must be a finite number"),
        (["score", edit, "--encoder", str(bad_encoder)], 1, "must hold a JSON object of settings, but holds a list"),
        (["eval-davis", "--davis-root", str(tmp_path), "--out", str(tmp_path / "e"), "--baselines", "lab",
          "--device", "cuda:0"], 1, "walkreg eval-davis: error:"),
    ]  # fmt: skip
    for args, code, message in cases:
        try:
            returned = main(args)
        except SystemExit as usage_error:  # argparse exits by itself
            returned = usage_error.code
        assert returned == code, args
        err = capsys.readouterr().err.strip()
        assert message in err.splitlines()[-1], (args, err)
        assert "Traceback" not in err
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text(json_module.dumps({"unet": ["diffusers", "UNet2DConditionModel"]}))
    args = [
        "edit",
        src,
        "--model",
        str(model),
        "--prompt",
        "ink",
        "--out",
        str(tmp_path / "e.mp4"),
        "--encoder",
        "rgb",
    ]
    assert main(args) == 1
    assert "walkreg edit: error:" in capsys.readouterr().err


def test_the_demo_refuses_a_clip_it_would_overwrite_and_clips_too_small(tmp_path, capsys):
    from walkreg.video import write_video

    out = tmp_path / "out"
    out.mkdir()
    write_video(out / "source.mp4", torch.rand(3, 3, 32, 48), fps=8)
    before = (out / "source.mp4").read_bytes()
    assert main(["demo", "--clip", str(out / "source.mp4"), "--out", str(out), "--encoder", "rgb"]) == 1
    assert "is the same file as `clip`" in capsys.readouterr().err
    assert (out / "source.mp4").read_bytes() == before
    write_video(tmp_path / "tiny.mp4", torch.rand(3, 3, 8, 8), fps=8)
    assert main(["demo", "--clip", str(tmp_path / "tiny.mp4"), "--out", str(tmp_path / "d"), "--encoder", "rgb"]) == 1
    assert "at least 9x9 pixels" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
