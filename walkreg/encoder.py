"""The CRW walk encoder: the paper's stride-8 ResNet-18 trunk and its node-embedding head.

Architecture (Jabri et al. 2020, official code ``code/resnet.py`` as described in the reference notes):
ResNet-18 basic blocks ``[2, 2, 2, 2]``; stem conv (stride 2), max-pool (stride 2) and ``layer2`` (stride 2)
keep their strides, every convolution in ``layer3`` and ``layer4`` runs at stride 1 without dilation, so the
output stride is 8. Every convolution with padding uses reflect padding; the 1x1 shortcut convolutions and the
max-pool keep zero padding. Training nodes go through ``layer4``, are mean-pooled per patch and projected by a
``Linear(width, 128)`` head; dense test-time features are the L2-normalised output of ``layer3``.

Module names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer3.0.downsample.0`` ...) under ``trunk.``,
and the head is ``head``, so checkpoints of the official code map onto this module key by key.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import load_file
from torch import nn

from walkreg.cells import MIN_FRAME_SIZE, STRIDE


ARCHITECTURES: dict[str, tuple[int, int, int, int]] = {
    # name -> channel widths of layer1..layer4
    "resnet18": (64, 128, 256, 512),  # the paper's trunk
    "resnet18-small": (16, 32, 64, 128),  # same topology at a quarter of the width, for CPU work
}
LAYERS = ("layer1", "layer2", "layer3", "layer4")
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # test-time normalisation of the official code
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # train-time normalisation of the official code
CIFAR_STD = (0.2023, 0.1994, 0.2010)
WEIGHTS_NAME = "model.safetensors"
BUNDLED_ENCODER = Path(__file__).parent / "assets" / "encoder"  # the default encoder shipped in the package


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free conv; reflect padding whenever the kernel needs padding (1x1 shortcuts get none)."""
    pad = kernel // 2
    return nn.Conv2d(in_ch, out_ch, kernel, stride, pad, bias=False, padding_mode="reflect" if pad else "zeros")


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity or 1x1 projection shortcut (torchvision naming)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = _conv(in_ch, out_ch, 3, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv(out_ch, out_ch, 3)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(_conv(in_ch, out_ch, 1, stride), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class ResNetTrunk(nn.Module):
    """Stride-8 ResNet trunk: ``(N, 3, H, W)`` normalised pixels -> ``(N, C, ~H/8, ~W/8)`` for a chosen layer.

    ``num_layers`` residual stages are built (4 for training; 3 suffice for ``layer3`` test-time features).
    """

    def __init__(self, widths: tuple[int, int, int, int], num_layers: int = 4):
        super().__init__()
        stem = widths[0]
        self.conv1 = _conv(3, stem, 7, stride=2)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        strides = (1, 2, 1, 1)  # layer3 and layer4 at stride 1: output stride 8
        in_ch = stem
        self.layers = LAYERS[:num_layers]
        for name, width, stride in zip(self.layers, widths[:num_layers], strides[:num_layers], strict=True):
            setattr(self, name, nn.Sequential(BasicBlock(in_ch, width, stride), BasicBlock(width, width, 1)))
            in_ch = width
        for module in self.modules():  # torchvision's ResNet initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, layer: str = "layer4") -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.layers:
            x = getattr(self, name)(x)
            if name == layer:
                return x
        raise ValueError(f"`layer` must be one of this trunk's {self.layers}, but is {layer!r}.")


class CRWEncoder(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="walkreg",
    tags=["contrastive-random-walk", "video-correspondence"],
    repo_url="https://github.com/walkreg/walkreg",
    paper_url="https://arxiv.org/abs/2006.14613",
):
    """Contrastive Random Walk encoder.

    Args:
        arch: trunk widths, one of ``ARCHITECTURES`` (``"resnet18"`` is the paper's).
        feature_layer: trunk layer whose output :meth:`forward` returns (``"layer3"``, as in label propagation).
        embed_dim: output size of the node head (128 in the paper).
        mean, std: per-channel normalisation applied inside :meth:`forward` to frames in [0, 1].
        with_training_layers: build ``layer4`` and the node head, which only training needs. ``False`` gives the
            smaller inference-only encoder of :meth:`for_inference` (``feature_layer`` must then be at most
            ``layer3``).

    Every argument is written to ``config.json`` by ``save_pretrained`` and restored by ``from_pretrained``.

    A new encoder is in eval mode, like a loaded one: ``CRWEncoder()(frames)`` uses BatchNorm's running statistics
    and leaves them unchanged. Call ``.train()`` to train it (the trainer does); :meth:`iter_features` computes in
    eval mode even then.
    """

    def __init__(
        self,
        arch: str = "resnet18",
        feature_layer: str = "layer3",
        embed_dim: int = 128,
        mean: tuple[float, float, float] | list[float] = IMAGENET_MEAN,
        std: tuple[float, float, float] | list[float] = IMAGENET_STD,
        with_training_layers: bool = True,
    ):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"`arch` must be one of {sorted(ARCHITECTURES)}, but is {arch!r}.")
        if feature_layer not in LAYERS:
            raise ValueError(f"`feature_layer` must be one of {LAYERS}, but is {feature_layer!r}.")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"`mean` and `std` need 3 values each, with `std` > 0, but are {mean} and {std}.")
        if not with_training_layers and feature_layer == "layer4":
            raise ValueError(
                "`feature_layer` must be at most 'layer3' when `with_training_layers` is False, but is 'layer4'."
            )
        self.arch, self.feature_layer, self.embed_dim = arch, feature_layer, embed_dim
        self.with_training_layers = with_training_layers
        widths = ARCHITECTURES[arch]
        self.trunk = ResNetTrunk(widths, num_layers=4 if with_training_layers else 3)
        self.head = nn.Linear(widths[-1], embed_dim) if with_training_layers else None
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.eval()

    stride = STRIDE  # pixels per feature cell, in both directions

    @property
    def feature_dim(self) -> int:
        """Channels of :meth:`forward`'s output."""
        return ARCHITECTURES[self.arch][LAYERS.index(self.feature_layer)]

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """``(..., 3, H, W)`` in [0, 1] -> the same shape, mean/std-normalised with the config's constants."""
        return (frames - self.mean.to(frames.dtype)) / self.std.to(frames.dtype)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Dense features of a clip.

        Args:
            frames: ``(B, T, 3, H, W)`` float RGB in [0, 1].

        Returns:
            ``(B, C, T, ceil(H/8), ceil(W/8))`` features of ``feature_layer``, L2-normalised over ``C``.
        """
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"`frames` must have shape (B, T, 3, H, W), but got {tuple(frames.shape)}.")
        if min(frames.shape[-2:]) < MIN_FRAME_SIZE:
            raise ValueError(
                f"`frames` must be at least {MIN_FRAME_SIZE}x{MIN_FRAME_SIZE} pixels (a 2x2 grid of 8x8 cells), "
                f"but are {frames.shape[-2]}x{frames.shape[-1]}."
            )
        if not frames.is_floating_point():
            raise ValueError(f"`frames` must be float in [0, 1], but have dtype {frames.dtype}.")
        maps = self.trunk(self.normalize(frames.flatten(0, 1)), self.feature_layer)
        return _clip_features(maps, frames.shape[0])

    @torch.no_grad()
    def iter_features(self, frames: Iterable[torch.Tensor], chunk_size: int = 4) -> Iterator[torch.Tensor]:
        """Stream dense features of a clip, ``chunk_size`` frames per forward pass (no gradients).

        Args:
            frames: iterable of ``(3, H, W)`` float frames in [0, 1] (e.g. :func:`walkreg.video.iter_frames`).

        Yields:
            ``(1, C, ceil(H/8), ceil(W/8))`` L2-normalised features per frame, in order, on the encoder's device.
            They are eval-mode features (BatchNorm running statistics) even while the encoder is in train mode;
            the mode is restored afterwards.
        """
        if chunk_size < 1:
            raise ValueError(f"`chunk_size` must be >= 1, but is {chunk_size}.")
        device = self.mean.device
        batch: list[torch.Tensor] = []

        def features() -> tuple[torch.Tensor, ...]:
            training = self.training
            self.eval()
            try:
                return self(torch.stack(batch).to(device)[None]).unbind(2)
            finally:
                self.train(training)

        for frame in frames:
            batch.append(frame)
            if len(batch) == chunk_size:
                yield from features()
                batch = []
        if batch:
            yield from features()

    def node_embeddings(self, patches: torch.Tensor) -> torch.Tensor:
        """Training-time node embeddings, as the paper computes them.

        Args:
            patches: ``(B, T, N, 3, P, P)`` already-normalised patches (N nodes per frame).

        Returns:
            ``(B, embed_dim, T, N)``: trunk through ``layer4``, spatial mean per patch, head, L2 norm over channels.
        """
        self._require_training_layers("node_embeddings")
        if patches.ndim != 6 or patches.shape[3] != 3:
            raise ValueError(f"`patches` must have shape (B, T, N, 3, P, P), but got {tuple(patches.shape)}.")
        b, t, n = patches.shape[:3]
        pooled = self.trunk(patches.flatten(0, 2), "layer4").mean(dim=(-2, -1))
        nodes = F.normalize(self.head(pooled), dim=-1)
        return nodes.view(b, t, n, -1).permute(0, 3, 1, 2)

    def training_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Dense ``layer3`` features of already-normalised frames, the features inference walks on, with gradients.

        Args:
            frames: ``(B, T, 3, H, W)`` already-normalised frames.

        Returns:
            ``(B, C, T, h, w)`` ``layer3`` features, L2-normalised over ``C``.
        """
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"`frames` must have shape (B, T, 3, H, W), but got {tuple(frames.shape)}.")
        return _clip_features(self.trunk(frames.flatten(0, 1), "layer3"), frames.shape[0])

    def cell_embeddings(
        self, frames: torch.Tensor, with_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Whole-frame training mode: every ``layer4`` feature cell is a node.

        Args:
            frames: ``(B, T, 3, H, W)`` already-normalised frames.
            with_features: also return the :meth:`training_features` of the same pass.

        Returns:
            ``(B, embed_dim, T, h * w)`` head embeddings of the cells, row-major, L2-normalised over channels; with
            ``with_features``, the pair ``(embeddings, features)``.
        """
        self._require_training_layers("cell_embeddings")
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"`frames` must have shape (B, T, 3, H, W), but got {tuple(frames.shape)}.")
        b, t = frames.shape[:2]
        inner = self.trunk(frames.flatten(0, 1), "layer3")
        maps = self.trunk.layer4(inner)  # (B*T, C, h, w)
        nodes = F.normalize(self.head(maps.flatten(2).transpose(1, 2)), dim=-1)  # (B*T, h*w, D)
        nodes = nodes.view(b, t, -1, nodes.shape[-1]).permute(0, 3, 1, 2)
        if not with_features:
            return nodes
        return nodes, _clip_features(inner, b)

    def _require_training_layers(self, method: str) -> None:
        if not self.with_training_layers:
            raise ValueError(
                f"`{method}` needs layer4 and the node head, but this encoder was built with "
                "`with_training_layers=False` (an inference-only export); train from the full checkpoint instead."
            )

    def _config(self) -> dict:
        """Constructor arguments of this encoder, less ``with_training_layers``."""
        mean, std = ([round(v, 6) for v in t.flatten().tolist()] for t in (self.mean, self.std))
        return {
            "arch": self.arch,
            "feature_layer": self.feature_layer,
            "embed_dim": self.embed_dim,
            "mean": mean,
            "std": std,
        }

    def for_inference(self, dtype: torch.dtype | None = None) -> CRWEncoder:
        """An inference-only copy (no ``layer4``, no head) with the same :meth:`forward`, in eval mode.

        For ResNet-18 this keeps 2.8 M of the 11.2 M parameters. ``dtype`` (e.g. ``torch.float16``) casts the copy,
        to save smaller files; :meth:`from_pretrained` loads them back into float32.
        """
        if self.feature_layer == "layer4":
            raise ValueError("`for_inference` needs `feature_layer` at most 'layer3', but it is 'layer4'.")
        copy = type(self)(**self._config(), with_training_layers=False)
        kept = copy.state_dict()
        copy.load_state_dict({k: v for k, v in self.state_dict().items() if k in kept})
        return copy.to(dtype=dtype).eval() if dtype is not None else copy.eval()

    def for_training(self) -> CRWEncoder:
        """This encoder if it has ``layer4`` and the node head; for an inference-only export, a full copy (in this
        encoder's mode) whose trunk up to ``layer3`` holds these weights and whose ``layer4`` and head are fresh."""
        if self.with_training_layers:
            return self
        copy = type(self)(**self._config())
        missing, unexpected = copy.load_state_dict(self.state_dict(), strict=False)
        assert not unexpected and all(k.startswith(("trunk.layer4.", "head.")) for k in missing)
        return copy.to(self.mean.device).train(self.training)

    # -- serialisation ------------------------------------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        """Write ``model.safetensors`` through a unique temporary name, so an interrupted save leaves no half file."""
        from safetensors.torch import save_model

        from walkreg.atomic import replace_atomically

        replace_atomically(Path(save_directory) / WEIGHTS_NAME, lambda tmp: save_model(self, str(tmp)))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None = None, **kwargs) -> CRWEncoder:
        """Load an encoder directory (``config.json`` + ``model.safetensors``) or a Hub repo id (``org/name``).

        With no argument, the encoder bundled with walkreg (``walkreg/assets/encoder``, see its model card) loads
        offline.
        """
        if pretrained_model_name_or_path is None:
            if not (BUNDLED_ENCODER / WEIGHTS_NAME).is_file():
                raise FileNotFoundError(
                    f"This walkreg installation has no bundled encoder at {str(BUNDLED_ENCODER)!r}."
                )
            pretrained_model_name_or_path = BUNDLED_ENCODER
        path = str(pretrained_model_name_or_path)
        local = os.path.isabs(path) or path.startswith(".") or path.count("/") != 1 or os.path.exists(path)
        if local and not os.path.isdir(path):
            raise FileNotFoundError(
                f"`pretrained_model_name_or_path` must be an encoder directory, but {path!r} is not one."
            )
        if local:
            _check_config_file(Path(path) / "config.json")
        return super().from_pretrained(path, **kwargs)

    @classmethod
    def _from_pretrained(
        cls, *, model_id: str, map_location: str = "cpu", strict: bool = True, **kwargs
    ) -> CRWEncoder:
        """Strict loading; the error names every missing and unexpected key and every shape mismatch."""
        if os.path.isdir(model_id):
            weights = os.path.join(model_id, WEIGHTS_NAME)
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"Encoder directory {model_id!r} has no {WEIGHTS_NAME}.")
        else:
            from huggingface_hub import hf_hub_download

            hub_args = ("revision", "cache_dir", "force_download", "token", "local_files_only")
            weights = hf_hub_download(model_id, WEIGHTS_NAME, **{k: kwargs[k] for k in hub_args if k in kwargs})
        config_keys = ("arch", "feature_layer", "embed_dim", "mean", "std", "with_training_layers")
        model = cls(**{k: v for k, v in kwargs.items() if k in config_keys})
        try:
            state = load_file(weights, device=str(map_location))
        except Exception as err:  # safetensors raises its own error types for truncated or foreign files
            raise ValueError(f"Cannot read encoder weights {weights!r}: {err}") from err
        load_state_dict_strict(model, state, source=model_id, strict=strict)
        return model.eval()


def _clip_features(maps: torch.Tensor, batch: int) -> torch.Tensor:
    """``(B * T, C, h, w)`` trunk maps -> ``(B, C, T, h, w)`` features, L2-normalised over ``C``."""
    return F.normalize(maps, dim=1).unflatten(0, (batch, -1)).transpose(1, 2)


def _check_config_file(path: Path) -> None:
    """Refuse an encoder directory whose ``config.json`` is missing, unreadable or not the encoder's settings."""
    if not path.is_file():
        raise FileNotFoundError(f"Encoder directory {str(path.parent)!r} has no config.json.")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"The encoder's {str(path)!r} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(
            f"The encoder's {str(path)!r} must hold a JSON object of settings, but holds a {type(config).__name__}."
        )
    unknown = sorted(set(config) - set(inspect.signature(CRWEncoder.__init__).parameters))
    if unknown:
        raise ValueError(f"The encoder's {str(path)!r} has settings CRWEncoder does not take: {', '.join(unknown)}.")


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = True) -> None:
    """``model.load_state_dict`` with a readable error naming missing keys, unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    if missing and strict:
        problems.append(f"missing {len(missing)} keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected and strict:
        problems.append(
            f"{len(unexpected)} unexpected keys: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}"
        )
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches (checkpoint vs model): {', '.join(mismatched[:8])}")
    if problems:
        raise ValueError(f"Checkpoint {source} does not fit {type(model).__name__}: " + "; ".join(problems) + ".")
    model.load_state_dict(state, strict=strict)
