"""Progress bars: one tqdm helper that every long-running walkreg loop uses.

Bars go to stderr, turn themselves off when ``WALKREG_NO_PROGRESS=1`` is set or when ``disable=True`` is passed
(the trainer passes ``disable=not is_main_process``), and otherwise follow tqdm's own defaults.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tqdm.auto import tqdm


def progress(
    iterable: Iterable | None = None,
    *,
    desc: str | None = None,
    total: int | None = None,
    disable: bool = False,
    **kwargs,
) -> tqdm:
    """``tqdm(iterable, ...)`` with walkreg's defaults (units of frames, dynamic width, global off switch)."""
    disable = disable or os.environ.get("WALKREG_NO_PROGRESS", "") not in ("", "0")
    kwargs.setdefault("unit", "frame")
    return tqdm(iterable, desc=desc, total=total, disable=disable, dynamic_ncols=True, **kwargs)
