"""``walkreg convert-crw``: the official CRW checkpoint as a walkreg encoder directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from walkreg.convert import convert_crw_checkpoint, save_converted


DESCRIPTION = (
    "Read an ajabri/videowalk checkpoint safely (weights_only, only argparse.Namespace allowed), map every key "
    "explicitly, check every shape and write an encoder directory that CRWEncoder.from_pretrained and --encoder load."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="the official checkpoint, e.g. pretrained.pth")
    parser.add_argument("out_dir", type=Path, help="the encoder directory to write; it must be new or empty")


def run(args: argparse.Namespace) -> int:
    encoder, train_args = convert_crw_checkpoint(args.checkpoint)
    provenance = {
        "source": str(args.checkpoint),
        "format": "ajabri/videowalk checkpoint",
        "arch": encoder.arch,
        "embed_dim": encoder.embed_dim,
        "train_args": train_args,
    }
    save_converted(encoder, args.out_dir, provenance)
    params = sum(p.numel() for p in encoder.parameters())
    sys.stdout.write(f"converted {args.checkpoint} -> {args.out_dir} ({encoder.arch}, {params:,} parameters)\n")
    return 0
