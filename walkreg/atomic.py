"""Atomic file writes: write under a temporary name in the same folder, then rename onto the target.

A failed or interrupted write leaves the previous file (or nothing) behind, never a partial one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar


T = TypeVar("T")


def replace_atomically(target: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp_path)``, then rename the result onto ``target``; the temporary is removed on failure."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.partial{target.suffix}")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def fill_new_directory(target: str | os.PathLike, write: Callable[[Path], T], argument: str) -> T:
    """Run ``write(tmp_dir)`` in a sibling temporary directory, then rename it onto ``target``.

    ``target`` must be new or empty (``argument`` names it in the error); on failure nothing is left behind.
    Returns what ``write`` returns.
    """
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"{argument} must be a new or empty directory, but {str(target)!r} exists and is not empty.")
    tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        result = write(tmp)
        os.replace(tmp, target)
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
