import json

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


def test_demo_end_to_end_stabilises_the_edit(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--frames", "8"]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"side_by_side.mp4", "per_frame_edit.mp4", "walkreg.mp4", "scores.json", "report.html"} <= names
    side = read_video(tmp_path / "side_by_side.mp4")
    assert side.shape[0] == 8 and side.shape[-1] == 3 * 428
    scores = json.loads((tmp_path / "scores.json").read_text())
    before, after = scores["per_frame_edit"]["overall"], scores["walkreg"]["overall"]
    assert after["consistency"] > before["consistency"]
    assert after["flow_warp_error"] < before["flow_warp_error"]  # the independent classical measure agrees
    assert "walkreg" in capsys.readouterr().out
