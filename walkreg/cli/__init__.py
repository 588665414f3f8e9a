"""The ``walkreg`` command line: argparse subcommands, one thin module per command.

Every command is listed in :data:`COMMANDS` with its module and one-line help, so ``walkreg --help`` lists them all
without importing torch or any command module. Only the module of the command being run is imported; it defines
``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int`` and calls library functions. The commands of
the optional packages (``train``, ``edit``) live in those packages and are imported by name, so the core never
imports them; when their extra is not installed the command still lists itself and says what to install.

Exit codes: 0 success, 1 runtime error (one line on stderr; ``WALKREG_DEBUG=1`` shows the traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from importlib import metadata


# command -> (module, one-line help, the extra its module needs)
COMMANDS: dict[str, tuple[str, str, str | None]] = {
    "demo": (
        "walkreg.cli.demo",
        "edit the bundled clip frame by frame, stabilise it with walkreg, score and report both",
        None,
    ),
    "score": ("walkreg.cli.score", "temporal-consistency scores of an edited clip (CRW walks, optional source)", None),
    "stabilize": ("walkreg.cli.stabilize", "remove flicker from a frame-by-frame edit along the source motion", None),
    "edit": (
        "walkreg.pipelines.cli",
        "edit a video with Stable Diffusion img2img or InstructPix2Pix + walkreg propagation, and score it",
        "diffusers",
    ),
    "train": (
        "walkreg.train.cli",
        "train a CRW walk encoder on unlabeled video (single process or under accelerate)",
        "train",
    ),
    "eval-davis": (
        "walkreg.cli.eval_davis",
        "DAVIS label propagation scored with J and F (the CRW paper's protocol)",
        None,
    ),
    "convert-crw": (
        "walkreg.cli.convert_crw",
        "convert the official CRW checkpoint (pretrained.pth) into an encoder directory",
        None,
    ),
    "env": ("walkreg.cli.env", "print versions, device and video codecs (for bug reports)", None),
}


def version() -> str:
    try:
        return metadata.version("walkreg")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _chosen_command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv``: the first argument that is not an option (the top level has no valued
    options)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _add_command(subparsers, name: str, load: bool) -> None:
    module_name, help_text, extra = COMMANDS[name]
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    if not load:
        return
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        if extra is None:
            raise
        parser.set_defaults(func=_unavailable(name, extra, err))
        return
    parser.description = module.DESCRIPTION
    module.add_arguments(parser)
    parser.set_defaults(func=module.run)


def _unavailable(name: str, extra: str, err: ImportError):
    def run(args: argparse.Namespace) -> int:
        raise ImportError(
            f"`walkreg {name}` needs {err.name or err}, which is not installed: `pip install 'walkreg[{extra}]'`."
        )

    return run


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The CLI parser; only the command that ``argv`` names gets its arguments (and its module imported)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="walkreg", description="Temporally consistent video edits with Contrastive Random Walk correspondences."
    )
    parser.add_argument("--version", action="version", version=f"walkreg {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _chosen_command(argv)
    for name in COMMANDS:
        _add_command(subparsers, name, load=name == chosen)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (so tests can call it in-process)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the command's own parser, so the message names the command
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        (commands.choices.get(args.command) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():  # one line per warning, as errors are
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, *_, **__: sys.stderr.write(
                f"walkreg {args.command}: warning: {message}\n"
            )
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write(f"walkreg {args.command}: interrupted\n")
        return 130
    except (OSError, ValueError, ImportError, RuntimeError) as err:
        if os.environ.get("WALKREG_DEBUG", "") not in ("", "0"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        sys.stderr.write(f"walkreg {args.command}: error: {message} (set WALKREG_DEBUG=1 for the traceback)\n")
        return 1
