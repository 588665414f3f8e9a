"""Training checkpoints: ``<output_dir>/checkpoint-<step>/``, written atomically, found again for resuming.

A checkpoint holds what ``accelerator.save_state`` writes (model, optimizer, registered objects such as the LR
scheduler and the edge-dropout generator, every process's RNG state), an ``encoder/`` directory that
``CRWEncoder.from_pretrained`` loads, and ``trainer_state.json`` (``global_step``). It is assembled under a hidden
temporary name (shared by the processes of one run) and swapped into place with :func:`walkreg.atomic.swap_directory`,
so a run killed at any moment leaves either a complete checkpoint or none; :func:`leftovers` finds what it left.

Resuming unpickles some of these files, and accelerate does so with ``torch.load(weights_only=False)`` for the
registered objects (older torch and accelerate versions for every file): :func:`check_safe_to_load` refuses a
checkpoint whose pickles hold anything but tensors, plain containers and numpy RNG states.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from walkreg import atomic


PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest (lowest step) first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and PATTERN.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(PATTERN.match(p.name).group(1)))


def resolve_checkpoint(output_dir: str | Path, value: str | None) -> Path | None:
    """``None`` -> None; ``"latest"`` -> the newest checkpoint (None when there is none yet); a path -> that path."""
    if value is None:
        return None
    if value == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(value)
    if not (path / STATE_FILE).is_file():
        raise ValueError(
            f"`resume_from_checkpoint` must be 'latest' or a checkpoint-<step> directory holding {STATE_FILE}, "
            f"but {value!r} is not one."
        )
    return path


def read_state(checkpoint: Path) -> dict:
    """The ``trainer_state.json`` of ``checkpoint``."""
    return json.loads((checkpoint / STATE_FILE).read_text())


def temporary_path(output_dir: str | Path, step: int) -> Path:
    """Where the processes of a run assemble ``checkpoint-<step>`` (one name for all of them)."""
    return Path(output_dir) / f".checkpoint-{step}.partial"


def leftovers(output_dir: str | Path) -> list[Path]:
    """Temporary and stale checkpoint directories that a run killed while saving left in ``output_dir``."""
    folder = Path(output_dir)
    return sorted([*folder.glob(".checkpoint-*.partial"), *folder.glob(".checkpoint-*.stale-*")])


def publish(tmp: Path, step: int, state: dict, total_limit: int | None) -> Path:
    """Write ``trainer_state.json`` into ``tmp``, swap it in as ``checkpoint-<step>`` and prune old checkpoints.

    A ``checkpoint-<step>`` that exists (a run resumed from an earlier checkpoint reaches this step again) is replaced.
    """
    (tmp / STATE_FILE).write_text(json.dumps({"global_step": step, **state}, indent=2) + "\n")
    final = tmp.parent / f"checkpoint-{step}"
    atomic.swap_directory(tmp, final)
    if total_limit is not None:
        for old in list_checkpoints(tmp.parent)[:-total_limit]:
            shutil.rmtree(old)
    return final


NOT_PICKLES = {".safetensors", ".json", ".jsonl", ".md", ".txt"}
"""Suffixes of checkpoint files that are never unpickled; every other file is checked by :func:`check_safe_to_load`."""


def _allowed_globals() -> list:
    """What accelerate's RNG-state files hold besides tensors and plain containers: numpy arrays and their dtypes."""
    core = getattr(np, "_core", None) or np.core
    allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    if hasattr(np, "dtypes"):  # numpy >= 1.25 pickles a dtype through its class
        allowed.append(np.dtypes.UInt32DType)
    return allowed


def _allowing(allowed: list) -> contextlib.AbstractContextManager:
    """A context in which ``torch.load(weights_only=True)`` also accepts ``allowed`` (torch >= 2.5; else nothing)."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    return safe_globals(allowed) if safe_globals is not None else contextlib.nullcontext()


def _reason(err: Exception) -> str:
    """One line of a ``torch.load`` error: the line naming the refused global when there is one."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [""]
    line = next((line for line in lines if "GLOBAL" in line), lines[0])
    return f"{type(err).__name__}: {line[:200]}"


def check_safe_to_load(checkpoint: Path) -> None:
    """Refuse ``checkpoint`` when one of its pickles could run code as it is loaded.

    Every file except safetensors, text (:data:`NOT_PICKLES`) and hidden files (which accelerate never reads) is
    loaded here with ``torch.load(weights_only=True)``, which accepts only tensors, plain containers and
    :func:`_allowed_globals`. A file that passes holds nothing else, so the full unpickling that
    ``accelerator.load_state`` may do afterwards calls nothing but those. Raises a
    ``ValueError`` naming the first file that fails; ``--trust-checkpoint`` skips this check.
    """
    files = sorted(
        p
        for p in Path(checkpoint).rglob("*")
        if p.is_file() and p.suffix not in NOT_PICKLES and not p.name.startswith(".")
    )
    for path in files:
        try:
            with _allowing(_allowed_globals()):
                torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"`resume_from_checkpoint` must hold only tensors and plain data, but {str(path)!r} cannot be loaded "
                f"without running pickled code ({_reason(err)}). Resume from it only if you trust its source, with "
                "`--trust-checkpoint`."
            ) from err
