import json

import pytest
import torch

from walkreg.cli import main
from walkreg.demo import DEMO_CLIP, flickering_edit, posterize
from walkreg.video import read_video


def test_posterize_uses_few_colours_and_stays_faithful():
    frame = read_video(DEMO_CLIP, max_frames=1)[0]
    out = posterize(frame, 6, torch.Generator().manual_seed(0))
    assert out.shape == frame.shape
    assert len(torch.unique(out.flatten(1), dim=1).t()) <= 6
    assert (out - frame).abs().mean() < 0.08


def test_flickering_edit_flickers_more_than_the_source():
    clip = read_video(DEMO_CLIP, max_frames=4)
    edited = flickering_edit(clip, seed=1)
    assert (edited[1:] - edited[:-1]).abs().mean() > (clip[1:] - clip[:-1]).abs().mean()


def test_demo_end_to_end_stabilises_the_edit_and_its_scores_are_those_of_walkreg_score(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "8"]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {
        "source.mp4",
        "per_frame_edit.mp4",
        "walkreg.mp4",
        "side_by_side.mp4",
        "scores.json",
        "report.html",
        "report_per_frame_edit.html",
    }
    side = read_video(out / "side_by_side.mp4")
    assert side.shape[0] == 8 and side.shape[-1] == 3 * 428
    scores = json.loads((out / "scores.json").read_text())
    before, after = scores["per_frame_edit"]["overall"], scores["walkreg"]["overall"]
    assert after["consistency"] > before["consistency"]
    assert after["flow_warp_error"] < before["flow_warp_error"]  # the independent classical measure agrees
    printed = capsys.readouterr().out
    assert f"{after['consistency']:.4f}" in printed and "walkreg score" in printed
    # the command the demo prints gives the same scores on the files it wrote
    args = ["score", str(out / "walkreg.mp4"), "--source", str(out / "source.mp4"), "--flow-baseline"]
    assert main([*args, "--json", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())["overall"]
    assert again.keys() == after.keys()
    for key, value in after.items():
        assert abs(again[key] - value) < 1e-6, key


def test_demo_that_fails_late_leaves_no_files(tmp_path, monkeypatch, capsys):
    import walkreg.demo

    def broken_report(body, out):
        raise RuntimeError("report failed")

    monkeypatch.setattr(walkreg.demo, "render_report", broken_report)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "scores.json").write_text("an earlier run")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--frames", "3"]) == 1
    assert "report failed" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["scores.json"]  # no new file, no temporary
    assert (tmp_path / "demo" / "scores.json").read_text() == "an earlier run"


def test_diffusion_demo_edits_with_the_bundled_model_and_walkreg_cuts_its_flicker(tmp_path, capsys):
    pytest.importorskip("diffusers")
    out = tmp_path / "demo"
    assert main(["demo", "--diffusion", "--out", str(out), "--frames", "6"]) == 0
    source, edited = read_video(out / "source.mp4"), read_video(out / "per_frame_edit.mp4")
    assert source.shape == (6, 3, 64, 112) and edited.shape == source.shape  # the model's size, aspect kept
    assert read_video(out / "side_by_side.mp4").shape[-1] == 3 * 112
    scores = json.loads((out / "scores.json").read_text())
    before, after = scores["per_frame_edit"]["overall"], scores["walkreg"]["overall"]
    assert after["flow_warp_error"] < 0.7 * before["flow_warp_error"] and after["consistency"] > before["consistency"]
    assert "walkreg score" in capsys.readouterr().out
