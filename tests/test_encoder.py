import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from testing_utils import assert_tensors_close, tiny_encoder

from walkreg import CRWEncoder
from walkreg.encoder import CIFAR_MEAN, CIFAR_STD


def test_paper_resnet18_has_the_official_parameter_count():
    # 11,242,176 = ResNet-18 without fc (11,176,512) + Linear(512, 128) head (reference notes §1)
    assert sum(p.numel() for p in CRWEncoder().parameters()) == 11_242_176


def test_trunk_follows_the_paper():
    encoder = CRWEncoder()
    for name in ("layer3", "layer4"):
        for conv in getattr(encoder.trunk, name).modules():
            if isinstance(conv, torch.nn.Conv2d):
                assert conv.stride == (1, 1) and conv.dilation == (1, 1)
    for conv in encoder.modules():
        if isinstance(conv, torch.nn.Conv2d):
            assert conv.padding_mode == ("reflect" if conv.kernel_size[0] > 1 else "zeros")


@pytest.mark.parametrize(("h", "w"), [(64, 96), (60, 100)])
def test_dense_features_shape_and_norm(h, w):
    encoder = tiny_encoder()
    feats = encoder(torch.rand(2, 3, 3, h, w))
    assert feats.shape == (2, encoder.feature_dim, 3, -(-h // 8), -(-w // 8))
    assert_tensors_close(feats.norm(dim=1), torch.ones(2, 3, *feats.shape[-2:]), atol=1e-5)


def test_batch_equals_single_and_streaming():
    encoder = tiny_encoder()
    clip = torch.rand(2, 3, 3, 48, 64)
    both = encoder(clip)
    assert_tensors_close(encoder(clip[1:]), both[1:], atol=1e-5)
    streamed = torch.stack(list(encoder.iter_features(clip[0], chunk_size=2)), dim=2)
    assert_tensors_close(streamed, both[:1], atol=1e-5)


def test_inference_entry_points_use_running_statistics_and_leave_them_unchanged():
    encoder = CRWEncoder(arch="resnet18-small")
    assert not encoder.training  # a new encoder is an inference model, as a loaded one is
    stats = {k: v.clone() for k, v in encoder.state_dict().items() if "running" in k}
    clip = torch.rand(1, 3, 3, 48, 64)
    reference = encoder(clip)
    batch_stats = encoder.train()(clip)
    assert (batch_stats - reference).abs().max() > 1e-3  # train mode would give other features
    encoder.load_state_dict({**encoder.state_dict(), **stats})
    streamed = torch.stack(list(encoder.iter_features(clip[0], chunk_size=2)), dim=2)
    assert encoder.training  # the mode is restored
    assert_tensors_close(streamed, reference, atol=1e-5)
    encoder.eval()(clip)
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in stats.items())
    assert encoder.for_inference().for_training().training is False


def test_node_embeddings_are_trunk_mean_head():
    encoder = tiny_encoder()
    patches = torch.randn(2, 3, 5, 3, 32, 32)
    nodes = encoder.node_embeddings(patches)
    assert nodes.shape == (2, 128, 3, 5)
    expected = F.normalize(encoder.head(encoder.trunk(patches[1, 2, 4][None], "layer4").mean((-2, -1))), dim=-1)[0]
    assert_tensors_close(nodes[1, :, 2, 4], expected, atol=1e-5)
    cells = encoder.cell_embeddings(torch.randn(1, 2, 3, 32, 32))
    assert cells.shape == (1, 128, 2, 16)
    assert_tensors_close(cells.norm(dim=1), torch.ones(1, 2, 16), atol=1e-5)


def test_save_load_round_trip(tmp_path):
    encoder = tiny_encoder(feature_layer="layer2", mean=CIFAR_MEAN, std=CIFAR_STD)
    encoder.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["arch"] == "resnet18-small" and config["feature_layer"] == "layer2"
    assert config["mean"] == pytest.approx(list(CIFAR_MEAN)) and config["std"] == pytest.approx(list(CIFAR_STD))
    loaded = CRWEncoder.from_pretrained(tmp_path)
    clip = torch.rand(1, 2, 3, 40, 40)
    assert torch.equal(loaded(clip), encoder(clip))
    assert not loaded.training


def test_strict_loading_names_missing_and_unexpected_keys(tmp_path):
    tiny_encoder().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state.pop("head.bias")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="missing 1 keys: head.bias.*1 unexpected keys: extra.weight"):
        CRWEncoder.from_pretrained(tmp_path)


def test_wrong_architecture_checkpoint_names_shape_mismatch(tmp_path):
    tiny_encoder().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "arch": "resnet18"}))
    with pytest.raises(ValueError, match="shape mismatches.*trunk.conv1.weight"):
        CRWEncoder.from_pretrained(tmp_path)


def test_missing_or_truncated_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="must be an encoder directory"):
        CRWEncoder.from_pretrained(tmp_path / "nope")
    tiny_encoder().save_pretrained(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="Cannot read encoder weights"):
        CRWEncoder.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "resnet50"}, "`arch` must be one of"),
        ({"feature_layer": "layer5"}, "`feature_layer` must be one of"),
        ({"std": (1, 0, 1)}, "`std`"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CRWEncoder(**kwargs)


def test_bad_frames():
    encoder = tiny_encoder()
    with pytest.raises(ValueError, match=r"`frames` must have shape \(B, T, 3, H, W\), but got \(2, 4, 32, 32\)"):
        encoder(torch.rand(2, 4, 32, 32))
    with pytest.raises(ValueError, match="float"):
        encoder(torch.zeros(1, 1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="`patches` must have shape"):
        encoder.node_embeddings(torch.rand(1, 2, 3, 32, 32))


def test_inference_export_keeps_forward_drops_training_layers_and_round_trips_in_half_precision(tmp_path):
    encoder = tiny_encoder()
    export = encoder.for_inference()
    frames = torch.rand(1, 2, 3, 40, 56)
    assert torch.equal(export(frames), encoder(frames))
    assert not any(k.startswith(("trunk.layer4", "head")) for k in export.state_dict())
    with pytest.raises(ValueError, match="`node_embeddings` needs layer4 and the node head"):
        export.node_embeddings(torch.rand(1, 2, 3, 3, 32, 32))
    export_half = encoder.for_inference(torch.float16)
    export_half.save_pretrained(tmp_path / "half")
    loaded = CRWEncoder.from_pretrained(tmp_path / "half")
    assert not loaded.with_training_layers and next(loaded.parameters()).dtype == torch.float32
    assert_tensors_close(loaded(frames), encoder(frames), atol=2e-3)
    with pytest.raises(
        ValueError, match="does not fit CRWEncoder: 32 unexpected keys: trunk.layer4"
    ):  # a full checkpoint is refused
        encoder.save_pretrained(tmp_path / "full")
        CRWEncoder._from_pretrained(model_id=str(tmp_path / "full"), with_training_layers=False, arch="resnet18-small")


def test_the_bundled_encoder_loads_offline_with_no_arguments():
    encoder = CRWEncoder.from_pretrained()
    assert not encoder.training
    feats = encoder(torch.rand(1, 2, 3, 32, 48))
    assert feats.shape == (1, encoder.feature_dim, 2, 4, 6) and torch.isfinite(feats).all()


def test_frames_too_small_for_the_trunk_get_a_clear_error():
    encoder = CRWEncoder(arch="resnet18-small").eval()
    with pytest.raises(ValueError, match=r"at least 9x9 pixels .* but are 8x12"):
        encoder(torch.rand(1, 1, 3, 8, 12))
    assert encoder(torch.rand(1, 1, 3, 9, 9)).shape[-2:] == (2, 2)
