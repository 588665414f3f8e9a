"""walkreg.atomic: single files, directories and sets of files are replaced whole or not at all."""

import os
import subprocess
import sys

import pytest

from walkreg import atomic


def _fail(_tmp):
    raise RuntimeError("write failed")


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("write failed")

    with pytest.raises(RuntimeError, match="write failed"):
        atomic.replace_atomically(target, half_then_fail)
    assert target.read_text() == "old" and _hidden(tmp_path) == []
    atomic.write_text_atomic(target, "new")
    assert target.read_text() == "new" and _hidden(tmp_path) == []


def test_a_failing_write_into_a_new_folder_removes_the_folder(tmp_path):
    with pytest.raises(RuntimeError):
        atomic.replace_atomically(tmp_path / "a" / "b" / "out.txt", _fail)
    assert list(tmp_path.iterdir()) == []


def test_temporary_names_are_hidden_siblings_unique_per_call_and_process(tmp_path):
    target = tmp_path / "clip.mp4"
    names = {atomic.temporary_path(target) for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert name.parent == tmp_path and name.name.startswith(".clip.partial-") and name.suffix == ".mp4"
        assert f"-{os.getpid()}-" in name.name
    code = "import sys; from walkreg import atomic; print(atomic.temporary_path(sys.argv[1]))"
    other = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, check=True)
    child = other.stdout.strip()
    assert child not in {str(n) for n in names} and f"-{os.getpid()}-" not in child


def test_the_writer_sees_the_temporary_with_the_target_suffix(tmp_path):
    seen = []
    atomic.replace_atomically(tmp_path / "video.mkv", lambda tmp: seen.append(tmp) or tmp.write_bytes(b"x"))
    assert seen[0].suffix == ".mkv" and seen[0] != tmp_path / "video.mkv"
    assert (tmp_path / "video.mkv").read_bytes() == b"x"


def test_leftovers_finds_temporaries_of_killed_writers(tmp_path):
    target = tmp_path / "encoder"
    left = [atomic.temporary_path(target), atomic.temporary_path(target, "stale")]
    for path in left:
        path.mkdir()
    (tmp_path / ".encoder-other.partial-1-ab").mkdir()
    (tmp_path / "encoder").mkdir()
    assert atomic.leftovers(target) == sorted(left)


def _write_dir(files):
    def write(folder):
        for name, text in files.items():
            (folder / name).write_text(text)
        return "done"

    return write


def test_replace_directory_swaps_in_a_new_tree(tmp_path):
    target = tmp_path / "encoder"
    assert atomic.replace_directory(target, _write_dir({"a.txt": "1", "b.txt": "2"})) == "done"
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "b.txt"]
    atomic.replace_directory(target, _write_dir({"c.txt": "3"}))
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]
    assert _hidden(tmp_path) == []


def test_replace_directory_keeps_the_old_tree_when_the_write_fails(tmp_path):
    target = tmp_path / "encoder"
    atomic.replace_directory(target, _write_dir({"a.txt": "old"}))

    def half_then_fail(folder):
        (folder / "a.txt").write_text("half")
        raise RuntimeError("write failed")

    with pytest.raises(RuntimeError, match="write failed"):
        atomic.replace_directory(target, half_then_fail)
    assert (target / "a.txt").read_text() == "old" and _hidden(tmp_path) == []


def test_swap_directory_puts_the_old_tree_back_when_the_rename_fails(tmp_path, monkeypatch):
    target, source = tmp_path / "checkpoint-3", tmp_path / ".checkpoint-3.partial"
    target.mkdir()
    (target / "old.txt").write_text("old")
    source.mkdir()
    real_rename = os.rename

    def rename(a, b):
        if str(a) == str(source):
            raise OSError("disk gone")
        real_rename(a, b)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="disk gone"):
        atomic.swap_directory(source, target)
    assert (target / "old.txt").read_text() == "old" and _hidden(tmp_path) == [".checkpoint-3.partial"]


def test_fill_new_directory_refuses_a_full_target_and_leaves_nothing_on_failure(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    with pytest.raises(ValueError, match="`--out` must be a new or empty directory"):
        atomic.fill_new_directory(full, _write_dir({}), "`--out`")
    with pytest.raises(RuntimeError):
        atomic.fill_new_directory(tmp_path / "new", _fail, "`--out`")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    empty = tmp_path / "empty"
    empty.mkdir()
    atomic.fill_new_directory(empty, _write_dir({"a.txt": "1"}), "`--out`")
    assert (empty / "a.txt").read_text() == "1" and _hidden(tmp_path) == []


def test_output_set_writes_every_file_on_success(tmp_path):
    (tmp_path / "a.json").write_text("old a")
    with atomic.output_set() as out:
        out.write_text(tmp_path / "a.json", "new a")
        out.write(tmp_path / "sub" / "b.bin", lambda tmp: tmp.write_bytes(b"b"))
        assert (tmp_path / "a.json").read_text() == "old a"  # nothing is renamed before the block ends
    assert (tmp_path / "a.json").read_text() == "new a" and (tmp_path / "sub" / "b.bin").read_bytes() == b"b"
    assert _hidden(tmp_path) == [] and _hidden(tmp_path / "sub") == []


def test_output_set_writes_nothing_when_the_block_fails(tmp_path):
    (tmp_path / "a.json").write_text("old a")
    with pytest.raises(RuntimeError, match="later step"):
        with atomic.output_set() as out:
            out.write_text(tmp_path / "a.json", "new a")
            out.write_text(tmp_path / "new" / "b.json", "new b")
            raise RuntimeError("later step")
    assert (tmp_path / "a.json").read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporary, no folder made for one


def test_output_set_writes_nothing_when_one_writer_fails(tmp_path):
    (tmp_path / "a.json").write_text("old a")
    with pytest.raises(RuntimeError, match="write failed"):
        with atomic.output_set() as out:
            out.write_text(tmp_path / "a.json", "new a")
            out.write(tmp_path / "b.mp4", _fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"] and (tmp_path / "a.json").read_text() == "old a"


def test_output_set_refuses_one_file_twice(tmp_path):
    with pytest.raises(ValueError, match="same file") as caught:
        with atomic.output_set() as out:
            out.write_text(tmp_path / "a.json", "1")
            out.write_text(tmp_path / "sub" / ".." / "a.json", "2")
    assert "a.json" in str(caught.value) and "sub" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_check_outputs_differ_catches_equal_paths_and_other_spellings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    edited = tmp_path / "edited.mp4"
    edited.write_bytes(b"video")
    with pytest.raises(ValueError, match="`--json` 'edited.mp4' is the same file as `EDITED`"):
        atomic.check_outputs_differ({"--json": "edited.mp4"}, {"EDITED": str(edited)})
    with pytest.raises(ValueError, match="`--json` './x/../edited.mp4' is the same file as `EDITED`"):
        atomic.check_outputs_differ({"--json": "./x/../edited.mp4"}, {"EDITED": "edited.mp4"})
    (tmp_path / "link.mp4").symlink_to(edited)
    with pytest.raises(ValueError, match="`--out` 'link.mp4' is the same file as `--source`"):
        atomic.check_outputs_differ({"--out": "link.mp4"}, {"--source": "edited.mp4"})
    os.link(edited, tmp_path / "hard.mp4")
    with pytest.raises(ValueError, match="`--out` 'hard.mp4' is the same file as `--source`"):
        atomic.check_outputs_differ({"--out": "hard.mp4"}, {"--source": "edited.mp4"})
    with pytest.raises(ValueError, match="`--report` 'r.html' is the same file as `--json` './r.html'"):
        atomic.check_outputs_differ({"--json": "./r.html", "--report": "r.html"}, {"EDITED": "edited.mp4"})
    atomic.check_outputs_differ({"--json": "scores.json", "--report": None, "--log": "-"}, {"EDITED": "edited.mp4"})


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_clean_leftovers_tidies_what_killed_writers_left_and_spares_running_ones(tmp_path):
    target = tmp_path / "out"
    dead, alive = _dead_pid(), os.getpid()
    (tmp_path / f".out.partial-{dead}-0badc0de").mkdir()  # a killed eval-davis run
    (tmp_path / f".out.partial-{alive}-0000beef").mkdir()  # a run still going
    (tmp_path / f".out.stale-{dead}-00c0ffee").mkdir()  # the old target of a swap killed between its renames
    (tmp_path / f".out.stale-{dead}-00c0ffee" / "keep.txt").write_text("old")
    atomic.clean_leftovers(target)
    assert (target / "keep.txt").read_text() == "old"  # put back, since the target was missing
    assert [p.name for p in atomic.leftovers(target)] == [f".out.partial-{alive}-0000beef"]


def test_a_new_directory_write_removes_a_killed_runs_temporary(tmp_path):
    (tmp_path / f".out.partial-{_dead_pid()}-0badc0de").mkdir()
    atomic.fill_new_directory(tmp_path / "out", lambda tmp: (tmp / "a.txt").write_text("a"), "`--out`")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
