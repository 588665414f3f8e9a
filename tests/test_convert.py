"""`walkreg convert-crw`: official-layout checkpoints built here convert into encoders that compute the same things.

The official architecture is re-stated below independently of walkreg/encoder.py, the way the official code builds
it: a torchvision-style ResNet-18, then modified in place (stride 1 for every conv of layer3 and layer4, reflect
padding for every conv with padding, fc and avgpool removed), wrapped so its keys are ``encoder.model.*``, with the
head ``selfsim_fc = Sequential(Linear(512, 128))``.
"""

from __future__ import annotations

import argparse
import collections
import zipfile

import pytest
import torch
import torch.nn.functional as F
from testing_utils import assert_tensors_close
from torch import nn

from walkreg import CRWEncoder
from walkreg.cli import main
from walkreg.convert import convert_crw_checkpoint, load_crw_checkpoint, map_crw_keys


IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class OfficialBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class OfficialResNet18(nn.Module):
    """torchvision's ResNet-18 layout (fc and avgpool already removed), before the CRW modifications."""

    def __init__(self):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 1)
        self.layer2 = self._make_layer(128, 2)
        self.layer3 = self._make_layer(256, 2)
        self.layer4 = self._make_layer(512, 2)

    def _make_layer(self, planes, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        blocks = [OfficialBlock(self.inplanes, planes, stride, downsample), OfficialBlock(planes, planes)]
        self.inplanes = planes
        return nn.Sequential(*blocks)

    def modify(self):
        """The CRW changes, applied in place as the official code does."""
        for layer in (self.layer3, self.layer4):
            for module in layer.modules():
                if isinstance(module, nn.Conv2d):
                    module.stride = (1, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module.padding != (0, 0):
                module.padding_mode = "reflect"
        return self

    def forward(self, x, upto="layer4"):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            if name == upto:
                return x


class OfficialEncoderWrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = OfficialResNet18().modify()


class OfficialCRW(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = OfficialEncoderWrapper()
        self.selfsim_fc = nn.Sequential(nn.Linear(512, 128))

    def nodes(self, patches):
        """``(N, 3, P, P)`` normalised patches -> ``(N, 128)``: layer4, spatial mean, head, L2 norm."""
        return F.normalize(self.selfsim_fc(self.encoder.model(patches).mean(dim=(-2, -1))), dim=-1)

    def dense(self, frames):
        """``(N, 3, H, W)`` frames in [0, 1] -> layer3 features with ImageNet normalisation and L2 norm."""
        return F.normalize(self.encoder.model((frames - IMAGENET_MEAN) / IMAGENET_STD, upto="layer3"), dim=1)


@pytest.fixture(scope="module")
def official():
    torch.manual_seed(0)
    model = OfficialCRW()
    with torch.no_grad():  # non-trivial BN statistics, so a mis-mapped BN buffer cannot go unnoticed
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(1234)
    return model.eval()


def official_checkpoint(model, path, *, bare=False, old_conv_names=False, data_parallel=False):
    state = collections.OrderedDict()
    for key, value in model.state_dict().items():
        if old_conv_names:
            key = key.replace(".conv1.weight", ".conv1.1.weight").replace(".conv2.weight", ".conv2.1.weight")
        state[("module." if data_parallel else "") + key] = value.clone()
    if bare:
        torch.save(state, path)
    else:
        args = argparse.Namespace(model_type="scratch", temp=0.05, clip_len=4, frame_aug="grid", dropout=0.1, lr=1e-4)
        optimizer = {"state": {}, "param_groups": [{"lr": 1e-4, "params": list(range(len(state)))}]}
        torch.save({"model": state, "optimizer": optimizer, "args": args, "epoch": 24}, path)
    return path


def test_official_checkpoint_converts_to_identical_embeddings(official, tmp_path):
    path = official_checkpoint(official, tmp_path / "pretrained.pth")
    assert main(["convert-crw", str(path), str(tmp_path / "crw")]) == 0
    encoder = CRWEncoder.from_pretrained(tmp_path / "crw")
    assert encoder.arch == "resnet18"
    assert sum(p.numel() for p in encoder.parameters()) == sum(p.numel() for p in official.parameters()) == 11_242_176

    g = torch.Generator().manual_seed(1)
    patches = torch.randn(1, 2, 3, 3, 32, 32, generator=g)  # (B, T, N, 3, P, P), already normalised
    with torch.no_grad():
        ours = encoder.node_embeddings(patches)  # (B, 128, T, N)
        theirs = official.nodes(patches.flatten(0, 2)).view(1, 2, 3, 128).permute(0, 3, 1, 2)
        assert_tensors_close(ours, theirs, atol=1e-5, rtol=1e-4)

        frames = torch.rand(1, 2, 3, 45, 70, generator=g)  # odd size: the ceil(H/8) grid and reflect padding matter
        dense = encoder(frames)  # (B, C, T, h, w)
        reference = official.dense(frames[0]).permute(1, 0, 2, 3)[None]
        assert dense.shape == (1, 256, 2, 6, 9)
        assert_tensors_close(dense, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ["bare", "old_conv_names", "data_parallel"])
def test_layout_variants_map_to_the_same_state(official, tmp_path, variant):
    path = official_checkpoint(official, tmp_path / "a.pth", **{variant: True})
    encoder, args = convert_crw_checkpoint(path)
    assert args == {} if variant == "bare" else args["temp"] == 0.05
    expected = {
        k.replace("encoder.model.", "trunk.").replace("selfsim_fc.0.", "head."): v
        for k, v in official.state_dict().items()
    }
    state = encoder.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_training_args_are_kept_as_provenance(official, tmp_path):
    path = official_checkpoint(official, tmp_path / "a.pth")
    assert main(["convert-crw", str(path), str(tmp_path / "out")]) == 0
    provenance = (tmp_path / "out" / "conversion.json").read_text()
    assert '"temp": 0.05' in provenance and '"frame_aug": "grid"' in provenance


def test_unmapped_missing_and_misshaped_keys_fail_loudly(official, tmp_path):
    state = dict(official.state_dict())
    with pytest.raises(ValueError, match="no walkreg counterpart: extra.weight"):
        map_crw_keys({**state, "extra.weight": torch.zeros(1)})

    missing = {k: v for k, v in state.items() if "layer4.1.bn2" not in k}
    torch.save({"model": missing}, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing 5 keys: trunk\.layer4\.1\.bn2"):
        convert_crw_checkpoint(tmp_path / "missing.pth")

    misshaped = {**state, "encoder.model.layer2.0.bn1.running_mean": torch.zeros(7)}
    torch.save(misshaped, tmp_path / "misshaped.pth")
    with pytest.raises(ValueError, match=r"shape mismatches.*layer2\.0\.bn1\.running_mean \(7,\) vs \(128,\)"):
        convert_crw_checkpoint(tmp_path / "misshaped.pth")

    deep_head = {k: v for k, v in state.items() if not k.startswith("selfsim_fc")}
    deep_head.update({"selfsim_fc.0.weight": torch.zeros(512, 512), "selfsim_fc.2.weight": torch.zeros(128, 512)})
    with pytest.raises(ValueError, match="selfsim_fc.2.weight"):
        map_crw_keys(deep_head)


class Payload:
    """A pickled object a safe load must refuse to build."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_unsafe_pickles_are_refused_not_executed(tmp_path, capsys):
    torch.save({"model": {"encoder.model.conv1.weight": torch.zeros(1)}, "hook": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="safe torch checkpoint"):
        load_crw_checkpoint(tmp_path / "evil.pth")
    assert "this must never run" not in capsys.readouterr().out


def test_cli_errors_are_one_line_and_leave_no_output(tmp_path, capsys):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    assert main(["convert-crw", str(tmp_path / "junk.pth"), str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("walkreg convert-crw: error: Cannot read") and "\n" not in err
    assert main(["convert-crw", str(tmp_path / "absent.pth"), str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists() and not any(p.name.startswith(".out.partial") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("empty", "it is empty (0 bytes)."),
        ("truncated", "it is truncated or damaged ("),
        ("text", "it starts with b'not ': neither a zip archive"),
        ("foreign zip", "it is a zip archive without the data.pkl entry that torch.save writes."),
    ],
)
def test_files_that_are_no_checkpoint_get_a_one_line_reason(official, tmp_path, capsys, kind, reason):
    path = tmp_path / "pretrained.pth"
    if kind == "truncated":
        official_checkpoint(official, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "foreign zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "hello")
    else:
        path.write_bytes(b"not a checkpoint" if kind == "text" else b"")
    assert main(["convert-crw", str(path), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"walkreg convert-crw: error: Cannot read {str(path)!r} as a torch checkpoint: ")
    assert reason in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def test_refused_pickle_reason_is_the_unpicklers_sentence(tmp_path):
    torch.save({"model": {"encoder.model.conv1.weight": torch.zeros(1)}, "hook": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"allowed\): Unsupported global: GLOBAL print was not an allowed global"):
        load_crw_checkpoint(tmp_path / "evil.pth")


def test_existing_output_is_not_overwritten(official, tmp_path, capsys):
    path = official_checkpoint(official, tmp_path / "a.pth")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert main(["convert-crw", str(path), str(tmp_path / "out")]) == 1
    assert "new or empty directory" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]
