"""The line every benchmark prints first: what was run, on which machine, with which torch, when.

Absolute figures hold only for the machine they were measured on; ratios measured side by side in one run carry
over better. Every ``bench/*.py`` script prints :func:`describe` before its results so that a figure copied into the
README keeps its provenance.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_features() -> str:
    """Whether the CPU has the instructions that decide bf16 speed: AVX-512, native bf16 (avx512_bf16), AMX."""
    import torch

    checks = {
        "avx512": "_is_avx512_supported",
        "avx512_bf16": "_is_avx512_bf16_supported",
        "amx": "_is_amx_tile_supported",
    }
    found = [name for name, probe in checks.items() if getattr(torch.cpu, probe, lambda: False)()]
    return ", ".join(found) if found else "no AVX-512, no native bf16"


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def describe() -> str:
    """``# command | machine | torch | walkreg revision | date`` for the running benchmark."""
    import torch

    gpu = f"; GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "; no GPU"
    command = shlex.join(["python", *sys.argv])
    return (
        f"# {command}\n# {cpu_model()} ({os.cpu_count()} cores; {cpu_features()}){gpu}; torch {torch.__version__}; "
        f"walkreg {git_revision()}; {datetime.date.today().isoformat()}"
    )
