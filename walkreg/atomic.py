"""Atomic file writes: write under a temporary name in the same folder, then rename onto the target.

A failed or interrupted write leaves the previous file (or nothing) behind, never a partial one. Temporary names are
hidden siblings of the target, unique per process and per call (``.<stem>.partial-<pid>-<token><suffix>``), so two
processes writing the same target never share a temporary; the suffix is kept because some writers (video
containers) choose the format from it. A process killed mid-write can leave such a name behind: :func:`leftovers`
finds them and :func:`clean_leftovers` (called before every write) tidies those of processes no longer running.

Single files: :func:`replace_atomically`, :func:`write_text_atomic`. Directories: :func:`replace_directory`,
:func:`fill_new_directory` (and :func:`swap_directory` for a directory built elsewhere). Several files, all or none:
:func:`output_set`. Outputs that would overwrite inputs: :func:`check_outputs_differ`.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar


T = TypeVar("T")
PathLike = str | os.PathLike


def temporary_path(target: PathLike, kind: str = "partial") -> Path:
    """A new hidden sibling name for ``target``: ``.<stem>.<kind>-<pid>-<random hex><suffix>`` (nothing is created)."""
    target = Path(target)
    return target.with_name(f".{target.stem}.{kind}-{os.getpid()}-{secrets.token_hex(4)}{target.suffix}")


def _leftover_pattern(target: Path) -> re.Pattern:
    return re.compile(rf"\.{re.escape(target.stem)}\.(partial|stale)-(\d+)-[0-9a-f]+{re.escape(target.suffix)}")


def leftovers(target: PathLike) -> list[Path]:
    """The temporaries and stale copies of ``target`` (from any process) still in its folder, sorted."""
    target = Path(target)
    pattern = _leftover_pattern(target)
    if not target.parent.is_dir():
        return []
    return sorted(p for p in target.parent.iterdir() if pattern.fullmatch(p.name))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def clean_leftovers(target: PathLike) -> None:
    """Tidy what killed writers of ``target`` left: their temporaries are removed, and a stale copy (the old
    ``target`` of a :func:`swap_directory` killed between its renames) is put back if ``target`` is missing, else
    removed. Leftovers of processes still running are not touched."""
    target = Path(target)
    pattern = _leftover_pattern(target)
    for path in leftovers(target):
        kind, pid = pattern.fullmatch(path.name).groups()
        if _process_alive(int(pid)):
            continue
        if kind == "stale" and not target.exists():
            os.rename(path, target)
        else:
            remove(path)


def remove(path: Path) -> None:
    """Delete ``path`` (a file, link or directory tree) if it exists; errors are ignored."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def _make_parents(path: Path) -> list[Path]:
    """Create the missing folders above ``path``; returns the ones this call created, innermost first."""
    missing, parent = [], path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove those of ``folders`` that are empty, deepest first (others stay)."""
    for folder in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass


def replace_atomically(target: PathLike, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` on a unique temporary sibling of ``target``, then rename it onto ``target``.

    On failure the temporary (and any folder this call created for it) is removed and ``target`` is untouched.
    """
    target = Path(target)
    clean_leftovers(target)
    created = _make_parents(target)
    tmp = temporary_path(target)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        remove(tmp)
        _remove_empty(created)
        raise


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def swap_directory(source: PathLike, target: PathLike) -> None:
    """Rename the finished directory ``source`` onto its sibling ``target``, replacing a ``target`` that exists.

    An existing ``target`` is renamed aside to a unique hidden stale name, ``source`` takes its place and the stale
    copy is deleted; if the second rename fails the old one is renamed back. Between the two renames ``target`` is
    briefly absent: a process killed there leaves the old copy under its stale name (see :func:`leftovers`).
    """
    source, target = Path(source), Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"`target` must be a directory or not exist, but {str(target)!r} is a file.")
    if not target.exists():
        os.rename(source, target)
        return
    stale = temporary_path(target, "stale")
    os.rename(target, stale)
    try:
        os.rename(source, target)
    except BaseException:
        os.rename(stale, target)
        raise
    remove(stale)


def _build_directory(target: Path, write: Callable[[Path], T], move: Callable[[Path, Path], None]) -> T:
    """Run ``write(tmp)`` in a new unique temporary sibling of ``target``, then ``move(tmp, target)``.

    On failure the temporary (and any folder this call created for it) is removed. Returns what ``write`` returns.
    """
    clean_leftovers(target)
    created = _make_parents(target)
    tmp = temporary_path(target)
    tmp.mkdir()
    try:
        result = write(tmp)
        move(tmp, target)
        return result
    except BaseException:
        remove(tmp)
        _remove_empty(created)
        raise


def replace_directory(target: PathLike, write: Callable[[Path], T]) -> T:
    """Build a directory with ``write(tmp)`` under a unique temporary name, then swap it in for ``target``.

    An existing ``target`` is replaced as :func:`swap_directory` says; on failure the temporary is removed and
    ``target`` is untouched. Returns what ``write`` returns.
    """
    return _build_directory(Path(target), write, swap_directory)


def fill_new_directory(target: PathLike, write: Callable[[Path], T], argument: str) -> T:
    """Run ``write(tmp_dir)`` in a unique temporary sibling directory, then rename it onto ``target``.

    ``target`` must be new or empty (``argument`` names it in the error); on failure nothing is left behind.
    Returns what ``write`` returns.
    """
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"{argument} must be a new or empty directory, but {str(target)!r} exists and is not empty.")
    return _build_directory(target, write, os.replace)


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: equal once resolved (links, ``..``, ``./``) or one inode (hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


class OutputSet:
    """The files of one :func:`output_set` block: each is written to its temporary at once, renamed at the end."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []  # (temporary, target)
        self._created: list[Path] = []  # folders made for the temporaries

    def write(self, target: PathLike, write: Callable[[Path], None]) -> Path:
        """Run ``write(tmp)`` on a unique temporary sibling of ``target`` now; ``target`` is replaced at the end.

        Returns the temporary, which holds the new file until the block ends (so it can be read back meanwhile).
        """
        target = Path(target)
        for _, other in self._pending:
            if _same_file(target, other):
                raise ValueError(
                    f"The outputs of one command must be different files, but {str(other)!r} and {str(target)!r} "
                    "are the same file."
                )
        clean_leftovers(target)
        self._created += _make_parents(target)
        tmp = temporary_path(target)
        self._pending.append((tmp, target))
        write(tmp)
        return tmp

    def write_text(self, target: PathLike, text: str) -> Path:
        """Write ``text`` (UTF-8) for ``target`` (see :meth:`write`)."""
        return self.write(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def _commit(self) -> None:
        """Rename every temporary onto its target; if a rename fails, the temporaries not yet renamed are removed."""
        try:
            while self._pending:
                tmp, target = self._pending[0]
                os.replace(tmp, target)
                self._pending.pop(0)
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        """Remove every temporary and the folders made for them; no target is touched."""
        for tmp, _ in self._pending:
            remove(tmp)
        self._pending.clear()
        _remove_empty(self._created)


@contextmanager
def output_set() -> Iterator[OutputSet]:
    """Write several files all or none: ``with output_set() as out: out.write_text(path, text); out.write(path, fn)``.

    Each file is written to a unique temporary sibling when ``out.write`` / ``out.write_text`` is called. Leaving the
    block normally renames every temporary onto its target; leaving it with an exception removes every temporary and
    touches no target. Two outputs naming the same file are refused with a ``ValueError``. Each rename is atomic;
    the set is all-or-none up to those final renames.
    """
    out = OutputSet()
    try:
        yield out
    except BaseException:
        out._discard()
        raise
    out._commit()


def check_outputs_differ(
    outputs: Mapping[str, PathLike | None], inputs: Mapping[str, PathLike | None] | None = None
) -> None:
    """Refuse a command whose output would overwrite one of its inputs or another of its outputs.

    Keys name the arguments as the user wrote them (``"--json"``, ``"EDITED"``); ``None`` values and ``"-"`` (the
    standard streams) are skipped. Paths are compared after resolving links, ``..`` and ``./`` spellings and, when
    both exist, as one inode (hard links). Raises a ``ValueError`` naming both arguments and both paths.
    """

    def given(named: Mapping[str, PathLike | None] | None) -> list[tuple[str, str]]:
        pairs = [(name, os.fspath(value)) for name, value in (named or {}).items() if value is not None]
        return [(name, value) for name, value in pairs if value != "-"]

    earlier = given(inputs)
    for name, path in given(outputs):
        for other, other_path in earlier:
            if _same_file(Path(path), Path(other_path)):
                raise ValueError(
                    f"`{name}` {path!r} is the same file as `{other}` {other_path!r}: an output must not overwrite an "
                    "input or another output; choose another path."
                )
        earlier.append((name, path))


def check_outputs_new(outputs: Mapping[str, PathLike | None], overwrite: bool) -> None:
    """Refuse to replace an existing file unless ``overwrite`` (the user's ``--overwrite``): a command's earlier
    result may be somebody's work. Keys name the arguments; ``None`` values and ``"-"`` are skipped."""
    if overwrite:
        return
    for name, value in outputs.items():
        if value is not None and os.fspath(value) != "-" and Path(value).exists():
            raise ValueError(f"`{name}` {os.fspath(value)!r} exists; pass `--overwrite` to replace it.")
