"""``walkreg train``: the CRW trainer's subcommand (also reached by ``accelerate launch -m walkreg train``).

Every :class:`~walkreg.train.config.TrainConfig` field is a flag (``output_dir`` -> ``--output-dir``); ``--config
FILE.json`` sets defaults and the flags given on the command line override them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import typing

from .config import TrainConfig


def _flag_kwargs(hint, default) -> dict:
    """argparse keyword arguments for a config field of type ``hint``."""
    origin, args = typing.get_origin(hint), [a for a in typing.get_args(hint) if a is not type(None)]
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is list:
        return {"nargs": "+", "type": args[0]}
    if origin is tuple:
        return {"nargs": "+" if Ellipsis in args else len(args), "type": args[0]}
    if args:  # X | None
        return {"type": args[0]}
    return {"type": hint}


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a CRW walk encoder on unlabeled video (single process or under `accelerate launch`)",
        description=(
            "Train a Contrastive Random Walk encoder. Defaults are the official recipe; --config FILE.json sets "
            "defaults and flags override them. Multi-GPU / multi-node: `accelerate launch -m walkreg train ...`. "
            "Resume a killed run with --resume-from-checkpoint latest."
        ),
    )
    parser.add_argument("--config", help="JSON file of TrainConfig fields")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        parser.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, default=argparse.SUPPRESS,
            help=f"default: {default}", **_flag_kwargs(hints[f.name], default),
        )
    parser.set_defaults(func=run)


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    logger = logging.getLogger("walkreg")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def run(args: argparse.Namespace) -> int:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    config = TrainConfig.from_file(args.config, **overrides) if args.config else TrainConfig(**overrides)
    try:
        from .loop import train  # accelerate is imported only when a run starts
    except ImportError as err:
        raise ImportError(f"`walkreg train` needs accelerate ({err}); install it with `pip install 'walkreg[train]'`.") from err

    _setup_logging()
    result = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        sys.stdout.write(f"trained {result.global_step} steps; encoder: {os.path.join(config.output_dir, 'encoder')}\n")
    return 0
