"""``walkreg env``: versions, device and video codecs, for bug reports."""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata

from walkreg.cli import version


DESCRIPTION = "Print the versions of walkreg and its dependencies, the torch device and the PyAV codecs walkreg uses."
PACKAGES = ("torch", "numpy", "av", "safetensors", "huggingface_hub", "diffusers", "transformers", "accelerate")
CODECS = {"libx264": "encode H.264", "h264": "decode H.264", "hevc": "decode H.265", "vp9": "decode VP9",
          "mpeg4": "decode MPEG-4", "png": "PNG"}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def run(args: argparse.Namespace) -> int:
    import av
    import torch

    lines = [f"walkreg {version()}", f"python {platform.python_version()} ({platform.platform()})"]
    lines += [f"{package} {_package_version(package)}" for package in PACKAGES]
    cuda = torch.cuda.is_available()
    device = f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} visible)" if cuda else "cpu"
    lines.append(f"device {device}; torch threads {torch.get_num_threads()}")
    available = av.codecs_available
    found = (f"{name} ({what}) {'yes' if name in available else 'NO'}" for name, what in CODECS.items())
    lines.append("PyAV codecs: " + ", ".join(found))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
