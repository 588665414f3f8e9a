import pytest
import torch
from testing_utils import synthetic_video

from walkreg.cli import main
from walkreg.features import RGBFeatures
from walkreg.stabilize import StabilizeConfig, stabilize
from walkreg.video import probe_video, write_video


@pytest.fixture(scope="module")
def clips():
    source = synthetic_video(8, 48, 64, shift=(0, 4), seed=2) * 0.8 + 0.1
    clean = (source * torch.tensor([1.1, 0.9, 0.7]).view(1, 3, 1, 1)).clamp(0, 1)  # a consistent per-frame edit
    g = torch.Generator().manual_seed(0)
    edited = (clean * (1 + 0.2 * (torch.rand(8, 3, 1, 1, generator=g) * 2 - 1))).clamp(0, 1)  # plus flicker
    return source, clean, edited


@pytest.mark.parametrize("method", ["crw", "flow", "ema"])
def test_stabilize_moves_a_flickering_edit_towards_the_consistent_one(clips, method):
    source, clean, edited = clips
    out = torch.stack(list(stabilize(source, edited, RGBFeatures(), StabilizeConfig(method=method))))
    assert out.shape == edited.shape and torch.equal(out[0], edited[0])
    assert (out - clean).abs().mean() < 0.75 * (edited - clean).abs().mean()


def test_stabilize_keeps_high_frequencies_and_an_unflickering_edit(clips):
    source, clean, _ = clips
    out = torch.stack(list(stabilize(source, clean, RGBFeatures())))
    assert (out - clean).abs().mean() < 0.01  # a consistent edit is left (almost) alone


def test_stabilize_rejects_bad_config_and_lengths(clips):
    source, _, edited = clips
    with pytest.raises(ValueError, match="`strength`"):
        StabilizeConfig(strength=1.0)
    with pytest.raises(ValueError, match="same length"):
        list(stabilize(source, edited[:5], RGBFeatures()))


def test_cli_writes_video_and_leaves_nothing_on_error(clips, tmp_path, capsys):
    source, _, edited = clips
    write_video(tmp_path / "src.mp4", source, fps=24)
    write_video(tmp_path / "edit.mp4", edited, fps=24)
    write_video(tmp_path / "short.mp4", edited[:5], fps=24)
    out = tmp_path / "out" / "stable.mp4"
    args = ["stabilize", "--source", str(tmp_path / "src.mp4"), "--encoder", "rgb", "--out", str(out)]
    assert main([*args, "--edited", str(tmp_path / "edit.mp4")]) == 0
    info = probe_video(out)
    assert (info.num_frames, info.width, info.height) == (8, 64, 48)
    out.unlink()
    assert main([*args, "--edited", str(tmp_path / "short.mp4")]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("walkreg stabilize: error")]
    assert len(errors) == 1 and "same length" in errors[0]
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
