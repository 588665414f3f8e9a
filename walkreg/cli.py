"""The ``walkreg`` command line: argparse subcommands.

Core subcommands are defined here. Optional parts of walkreg (the trainer, the Diffusers integration) add theirs
through the ``walkreg.commands`` entry-point group: each entry point is a ``register(subparsers)`` function, so
the core never imports them. A command whose extra is not installed still shows up and says what to install.

Exit codes: 0 success, 1 runtime error (one line on stderr; ``WALKREG_DEBUG=1`` shows the traceback), 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from importlib import metadata


def _cmd_env(args: argparse.Namespace) -> int:
    """Print versions, devices and video codecs, for bug reports."""
    import av
    import torch

    lines = [f"walkreg {_version('walkreg')}", f"python {platform.python_version()} ({platform.platform()})"]
    for package in ("torch", "numpy", "av", "safetensors", "huggingface_hub", "diffusers", "transformers", "accelerate"):
        lines.append(f"{package} {_version(package)}")
    cuda = torch.cuda.is_available()
    device = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} visible)" if cuda else "cpu"
    lines.append(f"device {device}; torch threads {torch.get_num_threads()}")
    wanted = {"libx264": "encode H.264", "h264": "decode H.264", "hevc": "decode H.265", "vp9": "decode VP9", "mpeg4": "decode MPEG-4", "png": "PNG"}
    available = av.codecs_available
    lines.append("PyAV codecs: " + ", ".join(f"{name} ({what}) {'yes' if name in available else 'NO'}" for name, what in wanted.items()))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _register_core(subparsers) -> None:
    env = subparsers.add_parser("env", help="print versions, device and video codecs (for bug reports)")
    env.set_defaults(func=_cmd_env)


def _register_plugins(subparsers) -> None:
    """Add the subcommands that optional walkreg packages declare as ``walkreg.commands`` entry points."""
    for entry in sorted(metadata.entry_points(group="walkreg.commands"), key=lambda e: e.name):
        try:
            register = entry.load()
        except ImportError as err:
            missing = subparsers.add_parser(entry.name, help=f"(unavailable: {err.name or err} is not installed)")
            missing.set_defaults(func=_unavailable(entry.name, err))
            continue
        register(subparsers)


def _unavailable(name: str, err: ImportError):
    def run(args: argparse.Namespace) -> int:
        raise ImportError(f"`walkreg {name}` needs a missing package ({err}); install it with `pip install 'walkreg[dev]'`.")

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="walkreg",
        description="Temporally consistent video edits with Contrastive Random Walk correspondences.",
    )
    parser.add_argument("--version", action="version", version=f"walkreg {_version('walkreg')}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _register_core(subparsers)
    _register_plugins(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (so tests can call it in-process)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
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
