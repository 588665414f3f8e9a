import av
import numpy as np
import pytest
import torch
from testing_utils import CLIPS, DAVIS2017_ROOT, DAVIS_RESOLUTION, DAVIS_ROOT, SHARED_DATA, requires_shared_data

from walkreg import video
from walkreg.video import VideoReadError


def psnr(a, b):
    return (10 * torch.log10(1 / ((a - b) ** 2).mean())).item()


def test_read_real_clip_with_stride_limit_and_resize():
    full = video.read_video(CLIPS / "carphone.mp4")
    assert full.shape == (24, 3, 144, 176) and full.dtype == torch.float32
    assert 0 <= full.min() and full.max() <= 1
    some = video.read_video(CLIPS / "carphone.mp4", stride=5, max_frames=3, size=(72, 88))
    assert some.shape == (3, 3, 72, 88)
    assert psnr(some[1], torch.nn.functional.interpolate(full[5][None], size=(72, 88), mode="area")[0]) > 30
    info = video.probe_video(CLIPS / "carphone.mp4")
    assert (info.num_frames, info.width, info.height) == (24, 176, 144) and abs(info.fps - 29.97) < 0.01


def test_mp4_round_trip(tmp_path):
    clip = video.read_video(CLIPS / "cups.mp4", max_frames=6)
    video.write_video(tmp_path / "out.mp4", clip, fps=12)
    back = video.read_video(tmp_path / "out.mp4")
    assert back.shape == clip.shape
    assert psnr(back, clip) > 35
    assert abs(video.probe_video(tmp_path / "out.mp4").fps - 12) < 1e-3
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def pixel_format(path):
    with av.open(str(path)) as container:
        return container.streams.video[0].codec_context.pix_fmt


def test_streamed_write_keeps_odd_sizes_exactly(tmp_path):
    """Odd sizes are written as they are (yuv444p), not padded to even ones; even sizes stay yuv420p."""
    clip = video.read_video(CLIPS / "cups.mp4", max_frames=4)  # 428x240
    for height, width in ((239, 427), (240, 427), (239, 428), (9, 9)):
        frames = clip[:, :, :height, :width]
        video.write_video(tmp_path / "odd.mp4", iter(frames))
        back = video.read_video(tmp_path / "odd.mp4")
        assert back.shape == frames.shape
        assert psnr(back, frames) > 35, (height, width)
        assert pixel_format(tmp_path / "odd.mp4") == "yuv444p"
    video.write_video(tmp_path / "even.mp4", clip)
    assert pixel_format(tmp_path / "even.mp4") == "yuv420p"


def test_clip_pair_refuses_frames_below_the_minimum_size(tmp_path):
    for height, width in ((8, 8), (4, 6), (8, 64)):
        video.write_video(tmp_path / "tiny.mp4", torch.rand(2, 3, height, width))
        with pytest.raises(ValueError, match=rf"tiny.mp4' is {width}x{height}, but frames must be at least 9x9"):
            video.check_clip_pair(tmp_path / "tiny.mp4", None)
    video.write_video(tmp_path / "small.mp4", torch.rand(2, 3, 9, 9))
    assert video.check_clip_pair(tmp_path / "small.mp4", tmp_path / "small.mp4").num_frames == 2


def test_frame_folder_round_trip_is_exact(tmp_path):
    clip = (torch.rand(3, 3, 20, 30) * 255).round() / 255
    paths = video.write_frames(tmp_path / "frames", clip)
    assert [p.name for p in paths] == ["00000.png", "00001.png", "00002.png"]
    assert torch.equal(video.read_video(tmp_path / "frames"), clip)
    assert video.read_video(tmp_path / "frames", stride=2).shape[0] == 2


def test_missing_empty_and_corrupt_inputs_name_the_file(tmp_path):
    with pytest.raises(VideoReadError, match="does not exist"):
        video.read_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoReadError, match="empty.mp4"):
        video.read_video(tmp_path / "empty.mp4")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoReadError, match="noise.mp4"):
        video.read_video(tmp_path / "noise.mp4")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(VideoReadError, match="contains no images"):
        video.read_video(tmp_path / "nothing")


def test_truncated_video_is_detected(tmp_path):
    """Cut the tail of a file whose index sits at the front: the header promises frames that never decode."""
    clip = video.read_video(CLIPS / "carphone.mp4")
    source = tmp_path / "front.mp4"
    with av.open(str(source), "w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 176, 144, "yuv420p"
        for frame in (clip * 255).byte().permute(0, 2, 3, 1).numpy():
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    data = source.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(VideoReadError, match="cut.mp4"):
        video.read_video(tmp_path / "cut.mp4")


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="`frames` must have shape"):
        video.write_video(tmp_path / "bad.mp4", torch.rand(2, 4, 8, 8))
    frames = [torch.rand(3, 16, 16), torch.rand(3, 8, 8)]
    with pytest.raises(ValueError, match="Frame 1 is"):
        video.write_video(tmp_path / "bad.mp4", iter(frames))
    assert list(tmp_path.iterdir()) == []


def test_davis_annotations_both_formats(tmp_path):
    multi = video.read_annotation(DAVIS2017_ROOT / "Annotations" / "480p" / "tennis" / "00000.png")
    assert multi.shape == (480, 854) and set(np.unique(multi)) == {0, 1, 2, 255}
    binary = video.read_annotation(DAVIS_ROOT / "Annotations" / DAVIS_RESOLUTION / "blackswan" / "00000.png")
    assert set(np.unique(binary)) == {0, 1}
    video.write_annotation(tmp_path / "x.png", multi)
    assert np.array_equal(video.read_annotation(tmp_path / "x.png"), multi)
    with (
        av.open(str(tmp_path / "x.png")) as ours,
        av.open(str(DAVIS2017_ROOT / "Annotations" / "480p" / "tennis" / "00000.png")) as genuine,
    ):
        ours_palette = next(ours.decode(video=0)).to_ndarray()[1]
        genuine_palette = next(genuine.decode(video=0)).to_ndarray()[1]
    assert np.array_equal(ours_palette[:3], genuine_palette[:3])  # background and objects 1, 2 share colours
    assert tuple(video.davis_palette()[1]) == (128, 0, 0) and tuple(video.davis_palette()[2]) == (0, 128, 0)


def test_davis_sequence_layout():
    assert video.davis_sequences(DAVIS_ROOT, DAVIS_RESOLUTION) == ["blackswan", "car-roundabout", "dance-twirl"]
    seq = video.read_davis_sequence(DAVIS_ROOT, "dance-twirl", DAVIS_RESOLUTION)
    assert seq.frames.shape == (12, 3, 240, 427) and seq.annotations.shape == (12, 240, 427)
    with pytest.raises(VideoReadError, match="is not a DAVIS root"):
        video.davis_sequences(CLIPS)


@requires_shared_data
def test_every_shared_clip_probes_and_decodes():
    for path in sorted((SHARED_DATA / "videos").glob("*.mp4")):
        info = video.probe_video(path)
        assert info.num_frames > 0 and info.fps > 0
        first = next(video.iter_frames(path, size=(64, 64)))
        assert first.shape == (3, 64, 64)
