"""``walkreg train``: the CRW trainer's subcommand (also reached by ``accelerate launch -m walkreg train``).

Every :class:`~walkreg.train.config.TrainConfig` field is a flag (``output_dir`` -> ``--output-dir``) whose help is
the field's entry in the ``TrainConfig`` docstring plus its default; ``--config FILE.json`` sets defaults (relative
paths in it are relative to its folder) and the flags given on the command line override them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import typing

from .config import PATH_FIELDS, TrainConfig, field_docs


DESCRIPTION = (
    "Train a Contrastive Random Walk encoder. Defaults are the official recipe; --config FILE.json sets defaults and "
    "options override them. Multi-GPU / multi-node: accelerate launch -m walkreg train ... Resume a killed run with "
    "--resume-from-checkpoint latest."
)


def _flag_kwargs(hint) -> dict:
    """argparse keyword arguments for a config field of type ``hint``."""
    origin, args = typing.get_origin(hint), [a for a in typing.get_args(hint) if a is not type(None)]
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is typing.Literal:
        return {"choices": args, "type": type(args[0])}
    if origin is list:
        return {"nargs": "+", "type": args[0]}
    if origin is tuple:
        return {"nargs": "+" if Ellipsis in args else len(args), "type": args[0]}
    if args:  # X | None
        return _flag_kwargs(args[0])
    return {"type": hint}


def _show_default(value) -> str:
    """A field's default as it is typed on the command line."""
    if value is None or value in ([], ()):
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _flag_help(field: dataclasses.Field) -> str:
    """The field's docstring entry, the rule for relative paths in config files, and the default."""
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    sentence = field_docs().get(field.name, "")
    if field.name in PATH_FIELDS:
        sentence += " In a --config file, a relative path is relative to the file's folder."
    return f"{sentence} Default: {_show_default(default)}.".strip().replace("%", "%%")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` and one option per :class:`TrainConfig` field, with its docstring entry and default as help."""
    parser.add_argument(
        "--config",
        metavar="FILE.json",
        help="JSON object of TrainConfig fields (the options below, with underscores) used as defaults; options given "
        "on the command line override them. Relative paths in it are relative to the file's folder.",
    )
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=argparse.SUPPRESS,
            help=_flag_help(f),
            **_flag_kwargs(hints[f.name]),
        )


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
        raise ImportError(
            f"`walkreg train` needs accelerate ({err}); install it with `pip install 'walkreg[train]'`."
        ) from err

    _setup_logging()
    result = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        sys.stdout.write(
            f"trained {result.global_step} steps; encoder: {os.path.join(config.output_dir, 'encoder')}\n"
        )
    return 0
