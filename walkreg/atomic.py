"""Atomic file writes: write under a temporary name in the same folder, then rename onto the target.

A failed or interrupted write leaves the previous file (or nothing) behind, never a partial one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


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
