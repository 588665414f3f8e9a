"""Arguments that several commands share, spelled and explained once."""

from __future__ import annotations

import argparse
import math


ENCODER_HELP = (
    "features to walk on: an encoder directory (CRWEncoder.save_pretrained or walkreg convert-crw), 'default' (the "
    "encoder bundled with walkreg), 'random-resnet18' or 'random-resnet18-small' (untrained, seed 0), 'lab' (raw "
    "Lab pixels of each 8x8 cell) or 'rgb' (raw RGB pixels of each cell, mean-centred) (default: %(default)s)"
)


def finite_float(text: str) -> float:
    """argparse ``type`` for a real number: refuses ``nan`` and ``inf`` (which ``float`` accepts)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, but is {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse ``type`` for a finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, but is {text!r}")
    return value


def add_encoder_argument(parser: argparse.ArgumentParser, default: str | None = "default") -> None:
    """``--encoder NAME_OR_DIR``, resolved by :func:`walkreg.features.create_features`."""
    parser.add_argument("--encoder", default=default, metavar="NAME_OR_DIR", help=ENCODER_HELP)


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: replace output files that exist (refused otherwise, so an earlier result is not lost)."""
    parser.add_argument(
        "--overwrite", action="store_true", help="replace output files that already exist (default: refuse them)"
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device``: a torch device; the default is the first CUDA GPU when there is one, else the CPU."""
    parser.add_argument(
        "--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available, else cpu)"
    )


def resolve_device(name: str | None):
    """The torch device ``--device`` names (see :func:`add_device_argument`)."""
    import torch

    try:
        device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as err:
        raise ValueError(f"`--device` must be a torch device such as cpu or cuda:0, but is {name!r}.") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`--device` {name!r} is not available: this torch sees no CUDA GPU.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"`--device` {name!r} is not available: {torch.cuda.device_count()} CUDA GPU(s) are visible.")
    return device
