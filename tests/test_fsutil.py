"""fireflyhpc.fsutil.atomic_write: modes, no leftovers, errors that name the target."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fireflyhpc.fsutil import atomic_write


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_text_and_bytes_with_the_exact_mode(tmp_path: Path) -> None:
    old = os.umask(0o077)  # an explicit mode ignores the umask
    try:
        atomic_write(tmp_path / "a.json", "{}\n")
        atomic_write(tmp_path / "b.txt", b"\x00\xff", mode=0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").read_text() == "{}\n" and mode_of(tmp_path / "a.json") == 0o600
    assert (tmp_path / "b.txt").read_bytes() == b"\x00\xff" and mode_of(tmp_path / "b.txt") == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.txt"]


def test_mode_none_follows_the_umask_like_open(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "new", "x", mode=None)
        with open(tmp_path / "plain", "w") as handle:
            handle.write("x")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "new") == mode_of(tmp_path / "plain") == 0o640


def test_replaces_an_existing_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old\n")
    inode = target.stat().st_ino
    atomic_write(target, "new\n")
    assert target.read_text() == "new\n"
    assert target.stat().st_ino != inode  # a new file renamed over, not rewritten in place


def test_a_failed_rename_leaves_the_target_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("kept")
    with pytest.raises(OSError) as info:
        atomic_write(target, "data")
    assert info.value.filename == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert (target / "inside").read_text() == "kept"


def test_a_missing_folder_names_the_target_not_a_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "file.toml"
    with pytest.raises(FileNotFoundError) as info:
        atomic_write(target, "x")
    assert info.value.filename == str(target)
    assert ".tmp" not in str(info.value)


def test_an_interrupt_while_writing_removes_the_temp_file(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "f", "x")
    assert list(tmp_path.iterdir()) == []
