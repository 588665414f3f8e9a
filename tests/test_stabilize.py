import pytest
import torch
from testing_utils import CLIPS, synthetic_video

import walkreg.flow
from walkreg.cli import main
from walkreg.cli import stabilize as stabilize_cli
from walkreg.features import RGBFeatures
from walkreg.motion import local_error, pick_motion, refine_motion, soft_placement
from walkreg.stabilize import StabilizeConfig, source_motion, stabilize, stabilize_along
from walkreg.video import probe_video, read_video, write_video
from walkreg.walks import SparseTransitions


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
    assert out.shape == edited.shape
    assert (out - clean).abs().mean() < 0.75 * (edited - clean).abs().mean()
    assert (out[0] - clean[0]).abs().mean() < 0.75 * (edited[0] - clean[0]).abs().mean()  # the first frame too


def test_stabilize_removes_fine_detail_flicker_where_the_source_holds_still():
    """Per-pixel noise re-drawn every frame (all high band) over a still real frame: most of it goes."""
    frame = read_video(CLIPS / "carphone.mp4", max_frames=1)[0]
    source = frame.expand(8, -1, -1, -1)
    g = torch.Generator().manual_seed(0)
    edited = (source + 0.1 * torch.randn(source.shape, generator=g)).clamp(0, 1)
    out = torch.stack(list(stabilize(source, edited, RGBFeatures(), StabilizeConfig(strength=0.9))))
    assert (out[1:] - out[:-1]).abs().mean() < 0.4 * (edited[1:] - edited[:-1]).abs().mean()


def test_strength_zero_returns_the_edit_and_given_motion_gives_the_same_result(clips):
    source, _, edited = clips
    config = StabilizeConfig(strength=0.0)
    out = torch.stack(list(stabilize(source, edited, RGBFeatures(), config)))
    assert torch.allclose(out, edited, atol=1e-5)
    motions = list(source_motion(source, RGBFeatures(), StabilizeConfig(method="ema")))
    assert len(motions) == len(source) - 1
    along = torch.stack(list(stabilize_along(source, edited, motions, StabilizeConfig(method="ema"))))
    assert torch.equal(along, torch.stack(list(stabilize(source, edited, None, StabilizeConfig(method="ema")))))


def test_stabilize_streams_with_a_bounded_look_ahead(clips):
    source, _, edited = clips
    read = []

    def frames():
        for t, frame in enumerate(source):
            read.append(t)
            yield frame

    lookahead = 2
    for t, _ in enumerate(stabilize(frames(), edited, RGBFeatures(), StabilizeConfig(lookahead=lookahead))):
        assert read[-1] < t + 2 * lookahead + 4  # + the encoder's chunk of 4 frames
    assert read[-1] == len(source) - 1


@pytest.mark.parametrize("method", ["crw", "ema"])
def test_crw_and_ema_need_no_opencv(clips, monkeypatch, method):
    def no_cv2():
        raise ImportError("no OpenCV")

    monkeypatch.setattr(walkreg.flow, "_cv2", no_cv2)
    source, _, edited = clips
    assert len(list(stabilize(source, edited, RGBFeatures(), StabilizeConfig(method=method)))) == len(source)


def test_soft_placement_and_refinement_reach_sub_pixel_motion():
    # a one-hot transition of every cell of a 3x4 grid to the cell right of it (the last column to itself)
    cells = torch.arange(12)
    keys = torch.where(cells % 4 < 3, cells + 1, cells).view(1, 12, 1)
    step = SparseTransitions(keys, torch.ones(1, 12, 1), 12)
    placed = soft_placement(step, 3, 4)
    assert placed.shape == (1, 2, 3, 4) and placed[0, 1].abs().max() == 0
    assert placed[0, 0, :, :3].eq(8).all() and placed[0, 0, :, 3].eq(0).all()
    # a texture moved by (2.5, -1.5) pixels: Lucas-Kanade from a start 3 pixels off lands within 0.25 px inside
    video = synthetic_video(1, 96, 96, seed=3)[0]
    ys, xs = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    true = torch.stack([torch.full_like(xs, 2.5), torch.full_like(ys, -1.5)])
    moved = walkreg.flow.warp(video, -true)  # moved(x) = video(x - true): video(x) = moved(x + true)
    refined = refine_motion(video, moved, true + torch.tensor([3.0, -2.0]).view(2, 1, 1))
    assert (refined - true)[:, 16:-16, 16:-16].abs().median() < 0.25


def test_local_error_is_the_mean_over_the_window_inside_the_frame_and_picks_the_better_motion():
    g = torch.Generator().manual_seed(4)
    frame, target = torch.rand(3, 7, 10, generator=g), torch.rand(3, 7, 10, generator=g)
    still = torch.zeros(2, 7, 10)
    pixel = (target - frame).abs().mean(0)
    error = local_error(frame, target, still, radius=2)
    for y, x in [(0, 0), (3, 5), (6, 9), (1, 8)]:  # corners, the middle, near an edge
        window = pixel[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3]
        assert error[y, x] == pytest.approx(float(window.mean()), abs=1e-6)
    # per pixel, the candidate that explains the target better wins; ties go to the first
    shifted = walkreg.flow.warp(frame, torch.stack([torch.full((7, 10), -1.0), torch.zeros(7, 10)]))
    right = torch.stack([torch.ones(7, 10), torch.zeros(7, 10)])
    picked = pick_motion(frame, shifted, [still, right], radius=1)
    assert picked[0, :, 1:-1].eq(1).float().mean() > 0.9
    flat = torch.full((3, 7, 10), 0.5)  # every motion explains a flat frame equally well
    assert pick_motion(flat, flat, [still, right], radius=1).eq(still).all()
    assert pick_motion(flat, flat, [right, still], radius=1).eq(right).all()


def test_stabilize_keeps_high_frequencies_and_an_unflickering_edit(clips):
    source, clean, _ = clips
    out = torch.stack(list(stabilize(source, clean, RGBFeatures())))
    assert (out - clean).abs().mean() < 0.01  # a consistent edit is left (almost) alone


def test_stabilize_rejects_bad_config_and_lengths(clips):
    source, _, edited = clips
    with pytest.raises(ValueError, match="`strength`"):
        StabilizeConfig(strength=1.0)
    with pytest.raises(ValueError, match="`lookahead` must be >= 1 frame, but is 0"):
        StabilizeConfig(lookahead=0)
    with pytest.raises(ValueError, match="`tolerance` must be > 0"):
        StabilizeConfig(tolerance=0.0)
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


def test_cli_output_keeps_an_odd_frame_size_and_scores_against_its_source(tmp_path, capsys):
    """A real clip cropped to 427x239 (cups is 428x240): the output has the source's size, so `score` accepts it."""
    source = read_video(CLIPS / "cups.mp4", max_frames=6)[:, :, :239, :427]
    g = torch.Generator().manual_seed(0)
    edited = (source * (1 + 0.2 * (torch.rand(6, 3, 1, 1, generator=g) * 2 - 1))).clamp(0, 1)
    write_video(tmp_path / "src.mp4", source, fps=24)
    write_video(tmp_path / "edit.mp4", edited, fps=24)
    out = tmp_path / "out.mp4"
    args = ["--source", str(tmp_path / "src.mp4"), "--edited", str(tmp_path / "edit.mp4"), "--out", str(out)]
    assert main(["stabilize", *args, "--encoder", "rgb"]) == 0
    info = probe_video(out)
    assert (info.num_frames, info.width, info.height) == (6, 427, 239)
    assert main(["score", str(out), "--source", str(tmp_path / "src.mp4"), "--encoder", "rgb"]) == 0
    assert "fidelity=" in capsys.readouterr().out


@pytest.mark.parametrize("encoder", ["rgb", "default"])
@pytest.mark.parametrize("height, width", [(8, 8), (4, 6)])
def test_cli_refuses_tiny_frames_in_one_line_naming_the_minimum(tmp_path, capsys, encoder, height, width):
    g = torch.Generator().manual_seed(0)
    write_video(tmp_path / "src.mp4", torch.rand(4, 3, height, width, generator=g), fps=24)
    write_video(tmp_path / "edit.mp4", torch.rand(4, 3, height, width, generator=g), fps=24)
    src, edit, out = str(tmp_path / "src.mp4"), str(tmp_path / "edit.mp4"), str(tmp_path / "out.mp4")
    for command in (
        ["stabilize", "--source", src, "--edited", edit, "--out", out],
        ["score", edit, "--source", src],
    ):
        assert main([*command, "--encoder", encoder]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"is {width}x{height}, but frames must be at least 9x9 pixels" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edit.mp4", "src.mp4"]


def test_cli_stabilizes_the_smallest_accepted_frames_with_the_default_encoder(tmp_path):
    g = torch.Generator().manual_seed(0)
    write_video(tmp_path / "src.mp4", torch.rand(3, 3, 9, 9, generator=g), fps=24)
    write_video(tmp_path / "edit.mp4", torch.rand(3, 3, 9, 9, generator=g), fps=24)
    out = tmp_path / "out.mp4"
    args = ["--source", str(tmp_path / "src.mp4"), "--edited", str(tmp_path / "edit.mp4"), "--out", str(out)]
    assert main(["stabilize", *args, "--encoder", "default"]) == 0
    assert read_video(out).shape == (3, 3, 9, 9)


@pytest.mark.parametrize(
    "out, message",
    [
        ("folder.mp4", "is an existing folder"),
        ("a_file/out.mp4", "is a file, not a folder"),
        ("a_file/deeper/out.mp4", "is a file, not a folder"),
        ("out.avi", "must be an .mp4 file"),
    ],
)
def test_cli_checks_out_before_any_work(clips, tmp_path, capsys, monkeypatch, out, message):
    """A bad --out fails before the encoder loads or any frame is stabilised."""
    source, _, edited = clips
    write_video(tmp_path / "src.mp4", source, fps=24)
    write_video(tmp_path / "edit.mp4", edited, fps=24)
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "a_file").write_text("x")

    def must_not_run(*args, **kwargs):
        raise AssertionError("work started before `--out` was checked")

    monkeypatch.setattr(stabilize_cli, "stabilize", must_not_run)
    monkeypatch.setattr(stabilize_cli, "create_features", must_not_run)
    args = ["--source", str(tmp_path / "src.mp4"), "--edited", str(tmp_path / "edit.mp4")]
    assert main(["stabilize", *args, "--out", str(tmp_path / out), "--encoder", "rgb"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "`--out`" in err and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "edit.mp4", "folder.mp4", "src.mp4"]
    assert list((tmp_path / "folder.mp4").iterdir()) == []
