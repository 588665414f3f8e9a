"""The trainer's data side: discovery, the cached index, clip decoding, augmentation, sampling, bad videos."""

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pytest
import torch
from testing_utils import CLIPS, assert_tensors_close

from walkreg.encoder import CIFAR_MEAN
from walkreg.train import data
from walkreg.train.augment import augment_clip, grid_patches
from walkreg.train.config import TrainConfig
from walkreg.train.data import ClipDataset, ClipSampler, build_index, find_videos, read_clip, source_indices
from walkreg.video import read_video, write_frames


def small_config(**overrides) -> TrainConfig:
    values = {
        "data": [str(CLIPS)],
        "arch": "resnet18-small",
        "frame_size": 64,
        "patch_size": 32,
        "patch_stride": 16,
        "batch_size": 2,
        "clips_per_video": 2,
        "num_workers": 0,
        "report_to": "none",
    }
    return TrainConfig(**{**values, **overrides})


def test_find_videos_tree_list_and_frame_folders(tmp_path):
    tree = tmp_path / "kinetics" / "train"
    for cls, clip in (("cooking", "carphone.mp4"), ("juggling", "cups.mp4")):
        (tree / cls).mkdir(parents=True)
        shutil.copy(CLIPS / clip, tree / cls / clip)
    write_frames(tmp_path / "frames" / "seq", read_video(CLIPS / "carphone.mp4", max_frames=3))
    (tmp_path / "list.txt").write_text("# videos\nkinetics/train/cooking/carphone.mp4 24\nframes/seq\n")

    found = find_videos([str(tmp_path / "kinetics"), str(tmp_path / "frames")])
    assert [p.split("/")[-1] for p in found] == ["carphone.mp4", "cups.mp4", "seq"]
    assert find_videos([str(tmp_path / "list.txt")]) == [
        str(tree / "cooking" / "carphone.mp4"),
        str(tmp_path / "frames" / "seq"),
    ]
    with pytest.raises(ValueError, match="`data`.*does not exist"):
        find_videos([str(tmp_path / "missing")])


def test_index_is_cached_and_only_changed_files_are_probed(tmp_path, monkeypatch):
    shutil.copy(CLIPS / "carphone.mp4", tmp_path / "a.mp4")
    shutil.copy(CLIPS / "cups.mp4", tmp_path / "b.mp4")
    paths = find_videos([str(tmp_path)])
    cache = tmp_path / "index.json"
    first = build_index(paths, cache, disable_progress=True)
    assert [(e.num_frames, e.width) for e in first] == [(24, 176), (16, 428)]

    probed = []
    real_probe = data._probe
    monkeypatch.setattr(data, "_probe", lambda p: probed.append(p) or real_probe(p))
    assert build_index(paths, cache, disable_progress=True) == first
    assert probed == []  # nothing changed: no probe at all
    shutil.copy(CLIPS / "carphone.mp4", tmp_path / "b.mp4")  # b changes size and mtime
    again = build_index(paths, cache, disable_progress=True)
    assert probed == [paths[1]] and again[1].num_frames == 24
    assert json.loads(cache.read_text())["version"] == data.INDEX_VERSION


def test_resampling_to_8_fps():
    assert source_indices(30, 30.0, 8.0) == [0, 3, 7, 11, 15, 18, 22, 26]  # floor(j * 3.75)
    assert source_indices(10, 8.0, 8.0) == list(range(10))
    assert source_indices(4, 4.0, 8.0) == [0, 0, 1, 1, 2, 2, 3, 3]  # slower sources repeat frames
    assert source_indices(5, 30.0, 0) == list(range(5))


@pytest.mark.parametrize("name", ["carphone.mp4", "cups.mp4"])
def test_read_clip_with_seeking_equals_sequential_decoding(name):
    entry = build_index([str(CLIPS / name)], None, disable_progress=True)[0]
    full = read_video(CLIPS / name)
    for indices in ([0, 1, 2, 3], [5, 9, 12, 15], [15, 15, 3]):
        assert_tensors_close(read_clip(entry, indices), full[indices], atol=0, rtol=0)


def test_grid_augmentation_layout_and_normalisation():
    config = small_config(frame_size=256, patch_size=64, patch_stride=32)
    frames = read_video(CLIPS / "cups.mp4", max_frames=4, size=(256, 455))
    clip = augment_clip(frames, config, random.Random(0))["clip"]
    assert clip.shape == (4, 49, 3, 64, 64)
    assert torch.equal(clip, augment_clip(frames, config, random.Random(0))["clip"])
    assert not torch.equal(clip, augment_clip(frames, config, random.Random(1))["clip"])
    # a constant frame stays constant, and normalisation uses the CIFAR mean
    flat = augment_clip(torch.full((4, 3, 100, 120), CIFAR_MEAN[0]), config, random.Random(0))["clip"]
    assert flat[:, :, 0].abs().max() < 1e-5

    frame_mode = augment_clip(frames, small_config(node_mode="frame"), random.Random(0))["clip"]
    assert frame_mode.shape == (4, 3, 64, 64)


def test_patch_grid_without_jitter_is_a_plain_cut():
    frame = torch.rand(3, 96, 96)
    patches = grid_patches(frame, 32, 32, scale=(1.0, 1.0), ratio=(1.0, 1.0), rng=random.Random(0))
    assert patches.shape == (9, 3, 32, 32)
    assert_tensors_close(patches[5], frame[:, 32:64, 64:96], atol=1e-5)  # row 1, column 2 (row-major)


def test_sampler_shards_are_disjoint_deterministic_and_resumable():
    num_clips = [3, 10, 1, 7]
    ranks = [ClipSampler(num_clips, 5, batch_size=2, seed=3, rank=r, world_size=2) for r in range(2)]
    first = [list(s) for s in ranks]
    assert len(first[0]) == len(first[1]) == 10  # 5 clips from each of 4 videos, 10 per rank
    both = first[0] + first[1]
    assert len(set(both)) == 20  # no clip is drawn twice: repeats of a start get new augmentation seeds
    starts = [[s for v, s, _ in both if v == video] for video in range(4)]
    assert set(starts[0]) == {0, 1, 2} and len(starts[0]) == 5 and starts[2] == [0] * 5  # short videos: cycled
    assert len(set(starts[1])) == 5  # long videos: distinct starts
    assert list(ClipSampler(num_clips, 5, batch_size=2, seed=3, rank=0, world_size=2)) == first[0]
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != first[0]
    ranks[0].set_epoch(0, skip=4)
    assert list(ranks[0]) == first[0][4:] and len(ranks[0]) == 6
    with pytest.raises(ValueError, match="`batch_size`"):
        ClipSampler([1], 1, batch_size=2)


def test_bad_videos_are_counted_at_index_time_and_skipped_at_decode_time(tmp_path):
    shutil.copy(CLIPS / "carphone.mp4", tmp_path / "good.mp4")
    (tmp_path / "garbage.mp4").write_bytes(bytes(range(256)) * 40)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "truncated.mp4").write_bytes((CLIPS / "cups.mp4").read_bytes()[:5000])
    frames = write_frames(tmp_path / "broken_frames", read_video(CLIPS / "carphone.mp4", max_frames=8))
    for path in frames[1:]:
        path.write_bytes(b"not a png")  # the index only probes the first frame

    config = small_config(data=[str(tmp_path)], fps=0)
    entries = build_index(find_videos(config.data), None, disable_progress=True)
    dataset = ClipDataset(entries, config)
    assert sorted(e.path.split("/")[-1] for e in dataset.unreadable) == ["empty.mp4", "garbage.mp4", "truncated.mp4"]
    assert len(dataset) == 2
    bad = next(i for i, e in enumerate(dataset.entries) if e.path.endswith("broken_frames"))
    sample = dataset[(bad, 0, 7)]
    assert sample["skipped"] == 1 and sample["clip"].shape == (4, 9, 3, 32, 32)
    assert dataset[(bad, 1, 8)]["skipped"] == 0  # known bad: replaced without another failed decode


def _front_indexed_mp4(path, frames: torch.Tensor) -> None:
    """An mp4 whose index sits before the data: cutting its tail leaves a header that promises every frame."""
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames.shape[-1], frames.shape[-2], "yuv420p"
        for frame in (frames * 255).round().byte().permute(0, 2, 3, 1).numpy():
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


def test_truncated_videos_keep_their_decodable_head_when_decoded_or_preloaded(tmp_path):
    shutil.copy(CLIPS / "carphone.mp4", tmp_path / "good.mp4")
    _front_indexed_mp4(tmp_path / "front.mp4", read_video(CLIPS / "carphone.mp4"))
    data = (tmp_path / "front.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.8)])  # about 12 of 24 frames decode
    (tmp_path / "front.mp4").unlink()
    frames = write_frames(tmp_path / "short", read_video(CLIPS / "carphone.mp4", max_frames=8))
    frames[2].write_bytes(b"not a png")  # only frames 0-1 decode: fewer than a clip
    config = small_config(data=[str(tmp_path)], fps=0)
    entries = build_index(find_videos(config.data), None, disable_progress=True)
    decoded, preloaded = ClipDataset(entries, config), ClipDataset(entries, config)
    good, cut, short = (
        next(i for i, e in enumerate(entries) if e.path.endswith(n)) for n in ("good.mp4", "cut.mp4", "short")
    )
    assert len(decoded.frames[cut]) == 24  # the header promises all 24 frames

    held = preloaded.preload(disable_progress=True)
    head = len(preloaded.frames[cut])
    assert config.clip_len <= head < 24 and preloaded.preloaded[cut].shape[0] == head
    assert preloaded.bad == {short} and preloaded.preloaded[short] is None
    assert all(f.dtype == torch.uint8 and f.is_shared() for f in (preloaded.preloaded[good], preloaded.preloaded[cut]))
    assert held == preloaded.preloaded[good].numel() + preloaded.preloaded[cut].numel()

    # decoding clip by clip finds the same head when a clip crosses its end, and draws a start inside it
    sample = decoded[(cut, 20, 5)]
    assert sample["skipped"] == 0 and cut not in decoded.bad and decoded.frames[cut] == preloaded.frames[cut]
    assert decoded[(short, 0, 7)]["skipped"] == 1 and short in decoded.bad
    assert preloaded[(short, 0, 7)]["skipped"] == 0  # known bad since preloading: replaced without a failed decode
    for video, start in ((good, 0), (good, decoded.num_clips[good] - 1), (cut, 0), (cut, head - config.clip_len)):
        assert_tensors_close(preloaded[(video, start, 3)]["clip"], decoded[(video, start, 3)]["clip"], atol=1e-5)


def test_prepared_footage_has_the_trainers_frames_and_keeps_a_truncated_videos_head(tmp_path):
    (tmp_path / "src").mkdir()
    shutil.copy(CLIPS / "carphone.mp4", tmp_path / "src" / "carphone.mp4")
    (tmp_path / "src" / "garbage.mp4").write_bytes(bytes(range(256)) * 40)
    frames = write_frames(tmp_path / "src" / "cut", read_video(CLIPS / "cups.mp4"))
    frames[12].write_bytes(b"not a png")
    script = Path(__file__).parents[1] / "examples" / "prepare_training_footage.py"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "src"),
            "--out",
            str(tmp_path / "out"),
            "--fps",
            "8",
            "--short-side",
            "128",
            "--frame-folder-fps",
            "8",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "cut: keeping the frames before the error" in result.stderr and "garbage.mp4: left out" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["carphone.mp4", "cut.mp4"]

    config = small_config(fps=8, frame_size=128)
    source = ClipDataset(build_index([str(CLIPS / "carphone.mp4")], None, disable_progress=True), config)
    expected = read_clip(source.entries[0], source.frames[0], short_side=128)
    copy = read_video(tmp_path / "out" / "carphone.mp4")
    assert copy.shape[0] == expected.shape[0] and copy.shape[2] == 128  # 176x144 -> 156x128
    assert (copy[..., : expected.shape[-1]] - expected).abs().mean() < 0.03  # x264 at CRF 20
    assert read_video(tmp_path / "out" / "cut.mp4").shape[0] == 12  # frames 0-11 of 16; frame 12 does not decode
