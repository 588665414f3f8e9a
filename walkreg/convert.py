"""Conversion of the official CRW checkpoint (ajabri/videowalk ``pretrained.pth``) into a walkreg encoder directory.

The official training script saves ``{"model": state_dict, "optimizer": ..., "args": argparse.Namespace, ...}``;
a bare state dict is accepted too. The file is read with ``torch.load(weights_only=True)``, allow-listing only
``argparse.Namespace``, so no other pickled object can run code. Keys are mapped explicitly:

===========================================  =====================
official                                     walkreg
===========================================  =====================
``encoder.model.<torchvision ResNet name>``  ``trunk.<same name>``
``selfsim_fc.0.weight`` / ``.bias``          ``head.weight`` / ``.bias``
===========================================  =====================

after stripping a ``module.`` prefix (``nn.DataParallel``) and renaming the older ``...conv1.1.weight`` /
``...conv2.1.weight`` (convolutions that sat at index 1 of a padding ``Sequential``) to ``...conv1.weight`` /
``...conv2.weight``, as the official test script does. Every checkpoint tensor must map to a walkreg parameter or
buffer of the same shape and every walkreg tensor must be covered; anything else is an error that names the keys.
The architecture (``resnet18`` or ``resnet18-small``) and the head size are read from the shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import zipfile
from pathlib import Path

import torch

from walkreg.atomic import fill_new_directory
from walkreg.encoder import ARCHITECTURES, CRWEncoder, load_state_dict_strict


_PREFIXES = (("encoder.model.", "trunk."), ("selfsim_fc.0.", "head."))
_OLD_CONV = re.compile(r"\.(conv[12])\.1\.weight$")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_START = b"\x80"  # PROTO, the first opcode of every pickle of protocol >= 2 (torch's legacy format too)


def _checkpoint_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a ``torch.save`` file, judged from its size and first bytes (``None`` if it may be one).

    ``torch.save`` writes a zip archive with a ``<name>/data.pkl`` member (or, in the legacy format, a pickle, which
    starts with byte 0x80); a zip archive is complete only with its central directory, which sits at its very end.
    """
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    with path.open("rb") as file:
        head = file.read(4)
    if head == _ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return f"is truncated or damaged ({size:,} bytes): it starts as a zip archive but has no central directory"
        if not any(name.endswith("/data.pkl") for name in names):
            return "is a zip archive without the data.pkl entry that torch.save writes"
        return None
    if head[:1] != _PICKLE_START:
        return f"starts with {head!r}: neither a zip archive (torch.save's format, PK) nor a pickle (0x80)"
    return None


def _load_error_reason(err: Exception) -> str:
    """A one-line reason for a ``torch.load`` failure: the weights-only unpickler's own sentence where it gives one."""
    text = " ".join(str(err).split())
    found = re.search(r"WeightsUnpickler error: (.*?)(?: Please use| Check the documentation|$)", text)
    return ((found.group(1).strip() if found else "") or text or type(err).__name__)[:300]


def load_crw_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read an official CRW checkpoint safely.

    Returns:
        ``(state_dict, args)``: the model's tensors and the training arguments as a plain dict (empty for a bare
        state dict).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is empty, truncated or not a torch checkpoint, holds objects other than tensors,
            containers and ``argparse.Namespace``, or has neither a ``model`` entry nor the layout of a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist.")
    if not hasattr(torch.serialization, "safe_globals"):
        raise ImportError(
            f"Reading CRW checkpoints safely needs torch >= 2.5 (torch.serialization.safe_globals), "
            f"but torch is {torch.__version__}."
        )
    problem = _checkpoint_file_problem(path)
    if problem:
        raise ValueError(f"Cannot read {str(path)!r} as a torch checkpoint: it {problem}.")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or zipfile errors for foreign files
        raise ValueError(
            f"Cannot read {str(path)!r} as a safe torch checkpoint (weights_only=True, only "
            f"argparse.Namespace allowed): {_load_error_reason(err)}"
        ) from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f"Checkpoint {str(path)!r} must hold a dict, but holds a {type(checkpoint).__name__}.")
    args = {}
    if "model" in checkpoint:
        state, namespace = checkpoint["model"], checkpoint.get("args")
        if isinstance(namespace, argparse.Namespace):
            args = {
                k: v for k, v in vars(namespace).items() if isinstance(v, (str, int, float, bool, list, type(None)))
            }
    else:
        state = checkpoint
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"Checkpoint {str(path)!r} must be a state dict of tensors or a dict with one under `model`, "
            f"but has entries {sorted(map(str, checkpoint))[:8]}."
        )
    return state, args


def map_crw_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename official CRW keys to walkreg's (see the module docstring); unknown keys raise ``ValueError``."""
    mapped, unmapped = {}, []
    for key, tensor in state.items():
        name = key.removeprefix("module.")
        name = _OLD_CONV.sub(r".\1.weight", name)
        for source, target in _PREFIXES:
            if name.startswith(source):
                new = target + name[len(source) :]
                if new in mapped:
                    raise ValueError(f"Checkpoint keys collide: two keys map to {new!r} (the second is {key!r}).")
                mapped[new] = tensor
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise ValueError(
            f"Checkpoint has {len(unmapped)} keys with no walkreg counterpart: "
            f"{', '.join(unmapped[:8])}{' ...' if len(unmapped) > 8 else ''}."
        )
    return mapped


def _architecture(state: dict[str, torch.Tensor]) -> tuple[str, int]:
    """``(arch, embed_dim)`` read from the mapped tensors' shapes."""
    widths = tuple(
        state[f"trunk.{layer}.0.conv1.weight"].shape[0] if f"trunk.{layer}.0.conv1.weight" in state else -1
        for layer in ("layer1", "layer2", "layer3", "layer4")
    )
    arch = next((name for name, w in ARCHITECTURES.items() if w == widths), None)
    if arch is None:
        raise ValueError(
            f"Checkpoint layer widths {widths} match no walkreg architecture "
            f"({', '.join(f'{k}: {v}' for k, v in ARCHITECTURES.items())})."
        )
    if "head.weight" not in state:
        raise ValueError("Checkpoint has no node-embedding head (`selfsim_fc.0.weight`).")
    return arch, state["head.weight"].shape[0]


def convert_crw_checkpoint(path: str | os.PathLike) -> tuple[CRWEncoder, dict]:
    """Official checkpoint -> ``(CRWEncoder in eval mode, training args)``; shapes and key sets are checked."""
    raw, args = load_crw_checkpoint(path)
    state = map_crw_keys(raw)
    arch, embed_dim = _architecture(state)
    encoder = CRWEncoder(arch=arch, embed_dim=embed_dim)
    load_state_dict_strict(
        encoder, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, str(path)
    )
    return encoder.eval(), args


def save_converted(encoder: CRWEncoder, out_dir: str | os.PathLike, provenance: dict) -> None:
    """Write ``encoder`` and ``conversion.json`` to a new or empty ``out_dir`` atomically, then verify a reload."""

    def write(tmp: Path) -> None:
        encoder.save_pretrained(tmp)
        (tmp / "conversion.json").write_text(json.dumps(provenance, indent=2))
        reloaded = CRWEncoder.from_pretrained(tmp).state_dict()
        if any(not torch.equal(v, reloaded[k]) for k, v in encoder.state_dict().items()):
            raise RuntimeError(f"The encoder written to {str(tmp)!r} does not reload identically.")

    fill_new_directory(out_dir, write, "`out_dir`")
