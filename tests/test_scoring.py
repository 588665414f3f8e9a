import functools
import json

import pytest
import torch
import torch.nn.functional as F
from testing_utils import CLIPS, assert_tensors_close, synthetic_video, tiny_encoder

from walkreg.cli import main
from walkreg.features import CachedFeatures, RGBFeatures
from walkreg.scoring import ScoreConfig, score_clip
from walkreg.video import read_video, write_video
from walkreg.walks import home_mass, leaky, local_transitions


def flicker(frames: torch.Tensor, strength: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    gain = 1 + strength * (torch.rand(frames.shape[0], 3, 1, 1, generator=g) * 2 - 1)
    return (frames * gain).clamp(0, 1)


@pytest.fixture(scope="module")
def clip():
    return synthetic_video(6, 48, 64, shift=(0, 4), seed=1) * 0.8 + 0.1


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("encoder")
    tiny_encoder(0).save_pretrained(path)
    return path


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_leaky_walks_and_home_mass_match_a_dense_reference(depth):
    g = torch.Generator().manual_seed(depth)
    h, w = 9, 11
    config = ScoreConfig(radius=3.5, top_k=5, home_radius=2.5, colour_scale=0.3)
    feats = [F.normalize(torch.randn(1, 8, h, w, generator=g), dim=1) for _ in range(depth + 1)]
    colours = [torch.rand(1, 3, h, w, generator=g) * 0.3 for _ in range(depth + 1)]

    def dense_step(a, b):  # the plain transitions times the leak exp(-|colour difference| / colour_scale)
        plain = local_transitions(feats[a], feats[b], config.temperature, config.radius, config.top_k).to_dense()[0]
        diff = (colours[a].flatten(2)[0][:, :, None] - colours[b].flatten(2)[0][:, None]).abs().mean(0)
        return plain * torch.exp(-diff / config.colour_scale)

    def step(a, b):
        return leaky(config.walk.step(feats[a], feats[b]), colours[a], colours[b], config.colour_scale)

    out = [step(i, i + 1) for i in range(depth)]
    back = [step(i + 1, i) for i in reversed(range(depth))]
    for step, (a, b) in zip(out, [(i, i + 1) for i in range(depth)], strict=True):
        assert_tensors_close(step.to_dense()[0], dense_step(a, b))
    walk = functools.reduce(
        torch.matmul,
        [dense_step(i, i + 1) for i in range(depth)] + [dense_step(i + 1, i) for i in reversed(range(depth))],
    )
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cells = torch.stack([ys, xs], -1).view(-1, 2).float()
    home = torch.cdist(cells, cells) < config.home_radius
    expected = (walk * home).sum(1)
    assert expected.min() > 0 and expected.max() < 1
    assert_tensors_close(home_mass(out, back, w, config.home_radius), expected, atol=1e-6)


def test_unedited_clip_is_fully_consistent_and_flicker_is_monotone(clip):
    encoder = RGBFeatures()
    clean = score_clip(clip, encoder, clip).overall
    assert clean["fidelity"] == pytest.approx(1.0) and clean["agreement"] == pytest.approx(1.0)
    scores = [score_clip(flicker(clip, s), encoder, clip).overall for s in (0.05, 0.1, 0.2)]
    fidelity = [s["fidelity"] for s in scores]
    walk_back = [clean["walk_back"]] + [s["walk_back"] for s in scores]
    assert fidelity[0] > fidelity[1] > fidelity[2]
    assert walk_back == sorted(walk_back, reverse=True)
    for s in scores:
        assert all(0 <= v <= 1 for k, v in s.items() if k != "fidelity_error")


def test_frozen_and_shuffled_edits_cannot_game_the_score(clip):
    encoder = tiny_encoder(0)
    clean = score_clip(clip, encoder, clip).overall
    frozen = score_clip(clip[:1].expand_as(clip), encoder, clip).overall
    shuffled = score_clip(clip[torch.tensor([0, 3, 1, 5, 2, 4])], encoder, clip).overall
    assert frozen["walk_back"] > clean["walk_back"]  # a frozen clip is stable on its own ...
    assert frozen["fidelity"] < 0.9 * clean["fidelity"]  # ... but does not follow the source motion
    assert shuffled["fidelity"] < 0.9 * clean["fidelity"] and shuffled["agreement"] < clean["agreement"]


def test_score_clip_rejects_length_mismatch_and_single_frames(clip):
    with pytest.raises(ValueError, match="`source`"):
        score_clip(clip, RGBFeatures(), clip[:4])
    with pytest.raises(ValueError, match="at least 2 frames"):
        score_clip(clip[:1], RGBFeatures())
    with pytest.raises(ValueError, match="`window`"):
        ScoreConfig(window=1)


@pytest.fixture(scope="module")
def videos(tmp_path_factory, clip):
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "source.mp4", clip, fps=24)
    write_video(root / "edited.mp4", flicker(clip, 0.1), fps=24)
    write_video(root / "short.mp4", clip[:4], fps=24)
    write_video(root / "one.mp4", clip[:1], fps=24)
    write_video(root / "slow.mp4", clip, fps=12)
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 50)
    return root


def test_cli_writes_json_schema(videos, encoder_dir, tmp_path, capsys):
    out = tmp_path / "scores.json"
    rc = main(
        [
            "score",
            str(videos / "edited.mp4"),
            "--source",
            str(videos / "source.mp4"),
            "--encoder",
            str(encoder_dir),
            "--json",
            str(out),
            "--flow-baseline",
        ]
    )
    assert rc == 0
    body = json.loads(out.read_text())
    assert body["schema"] == "walkreg.score/1" and body["num_frames"] == 6 and len(body["pairs"]) == 5
    assert set(body["overall"]) == {
        "consistency",
        "walk_back",
        "fidelity",
        "fidelity_error",
        "agreement",
        "flow_warp_error",
    }
    assert body["overall"]["fidelity"] < 1 and "consistency=" in capsys.readouterr().out


@pytest.mark.parametrize(
    "edited, message",
    [("short.mp4", "same length"), ("slow.mp4", "frame rate"), ("corrupt.mp4", "corrupt.mp4"), ("one.mp4", "1 frame")],
)
def test_cli_bad_inputs_one_line_error_and_no_output(videos, tmp_path, capsys, edited, message):
    out = tmp_path / "scores.json"
    source = [] if edited == "one.mp4" else ["--source", str(videos / "source.mp4")]
    rc = main(["score", str(videos / edited), *source, "--encoder", "rgb", "--json", str(out)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("walkreg score: error")]
    assert rc == 1 and len(errors) == 1 and message in errors[0]
    assert list(tmp_path.iterdir()) == []


def test_cli_size_mismatch(videos, tmp_path, capsys):
    carphone = CLIPS / "carphone.mp4"
    rc = main(["score", str(videos / "source.mp4"), "--source", str(carphone), "--encoder", "rgb"])
    assert rc == 1 and "same size" in capsys.readouterr().err


def test_cli_batch_mode(videos, tmp_path):
    edits, sources = tmp_path / "edits", tmp_path / "sources"
    clip = read_video(videos / "source.mp4")
    for name, strength in (("a.mp4", 0.0), ("b.mp4", 0.2)):
        write_video(edits / name, flicker(clip, strength), fps=24)
        write_video(sources / name, clip, fps=24)
    out = tmp_path / "batch.json"
    assert (
        main(["score", str(edits), "--batch", "--source", str(sources), "--encoder", "rgb", "--json", str(out)]) == 0
    )
    body = json.loads(out.read_text())
    assert body["schema"] == "walkreg.score-batch/1" and [c["edited"].split("/")[-1] for c in body["clips"]] == [
        "a.mp4",
        "b.mp4",
    ]
    assert body["clips"][0]["overall"]["fidelity"] > body["clips"][1]["overall"]["fidelity"]


@pytest.mark.parametrize("with_source", [True, False])
def test_the_worst_pairs_are_the_lowest_scoring_ones_with_or_without_a_source(clip, with_source):
    edited = flicker(clip, 0.0).clone()
    edited[3] = (edited[3] * 0.5).clamp(0, 1)  # one dark frame: pairs 2 and 3 are the inconsistent ones
    config = ScoreConfig(num_worst=2, preview_frames=3)
    out = score_clip(edited, RGBFeatures(), clip if with_source else None, config)
    order = sorted(range(len(out.pairs)), key=lambda t: out.pairs[t]["consistency"])
    assert sorted(v.index for v in out.worst) == sorted(order[:2]) == [2, 3]
    assert [v.score for v in out.worst] == [out.pairs[v.index]["consistency"] for v in out.worst]
    assert out.to_dict()["worst_pairs"] == [v.index for v in out.worst]
    assert [v.score for v in out.preview] == [out.pairs[v.index]["consistency"] for v in out.preview]


def test_cached_features_compute_each_frame_once_and_give_the_same_scores(clip):
    class Counting(RGBFeatures):
        calls = 0

        def iter_features(self, frames):
            for frame in frames:
                Counting.calls += 1
                yield from super().iter_features([frame])

    cached = CachedFeatures(Counting())
    edited = flicker(clip, 0.2)
    first = score_clip(edited, cached, clip)
    assert Counting.calls == 2 * len(clip)
    again = score_clip(edited, cached, clip)
    assert Counting.calls == 2 * len(clip)  # replayed, not recomputed
    assert again.overall == first.overall == score_clip(edited, RGBFeatures(), clip).overall
