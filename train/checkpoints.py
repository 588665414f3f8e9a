"""Training checkpoints: ``<output_dir>/checkpoint-<step>/``, written atomically, found again for resuming.

A checkpoint holds what ``accelerator.save_state`` writes (model, optimizer, registered objects such as the LR
scheduler and the edge-dropout generator, every process's RNG state), an ``encoder/`` directory that
``CRWEncoder.from_pretrained`` loads, and ``trainer_state.json`` (``global_step``). It is assembled under a hidden
temporary name and renamed into place, so a run killed at any moment leaves either a complete checkpoint or none.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path


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
    return json.loads((checkpoint / STATE_FILE).read_text())


def temporary_path(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f".checkpoint-{step}.partial"


def publish(tmp: Path, step: int, state: dict, total_limit: int | None) -> Path:
    """Write ``trainer_state.json`` into ``tmp``, rename it to ``checkpoint-<step>`` and prune old checkpoints."""
    (tmp / STATE_FILE).write_text(json.dumps({"global_step": step, **state}, indent=2) + "\n")
    final = tmp.parent / f"checkpoint-{step}"
    if final.exists():  # a run resumed from an earlier checkpoint reaches this step again
        stale = tmp.parent / f".checkpoint-{step}.stale"
        shutil.rmtree(stale, ignore_errors=True)
        final.rename(stale)
        shutil.rmtree(stale)
    tmp.rename(final)
    if total_limit is not None:
        for old in list_checkpoints(tmp.parent)[:-total_limit]:
            shutil.rmtree(old)
    return final
