"""clipcli.store.atomic: outputs appear whole, with the umask's permissions, synced before the rename."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from clipcli.store import atomic
from clipcli.store.atomic import atomic_path, atomic_write


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring the previous one after it."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def permissions(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_outputs_get_the_permissions_the_umask_allows(tmp_path, umask, mask, expected):
    umask(mask)
    with atomic_write(tmp_path / "by_handle.txt", "w") as handle:
        handle.write("text")
    with atomic_path(tmp_path / "by_name.npy") as tmp:
        np.save(tmp, np.arange(3))
    assert permissions(tmp_path / "by_handle.txt") == expected
    assert permissions(tmp_path / "by_name.npy") == expected


def test_overwriting_keeps_a_readable_file_readable(tmp_path, umask):
    target = tmp_path / "out.txt"
    target.write_text("old")
    target.chmod(0o644)
    with atomic_write(target, "w") as handle:
        handle.write("new")
    assert target.read_text() == "new" and permissions(target) == 0o644


def test_data_and_folder_are_synced_around_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        kind = "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append((f"fsync {kind}", os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", os.stat(source).st_ino))
        real_replace(source, target)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    with atomic_path(tmp_path / "by_name.bin") as tmp:
        tmp.write_bytes(b"data")
    written = os.stat(tmp_path / "by_name.bin").st_ino
    assert events == [("fsync file", written), ("replace", written), ("fsync folder", os.stat(tmp_path).st_ino)]


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "out" / "file.bin") as handle:
        handle.write(b"half")
        raise RuntimeError("interrupted")
    assert os.listdir(tmp_path / "out") == []


def test_the_longest_file_name_the_folder_allows_can_be_written(tmp_path):
    longest = os.pathconf(tmp_path, "PC_NAME_MAX")
    target = tmp_path / "out" / ("n" * (longest - len(".png")) + ".png")
    with atomic_write(target) as handle:
        handle.write(b"png")
    assert os.listdir(target.parent) == [target.name]


def test_temp_names_are_hidden_and_keep_stem_and_suffix(tmp_path):
    target = tmp_path / "out" / os.fsdecode(b"caf\xe9_depth.npy")
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".npy"
        assert tmp.name.startswith(os.fsdecode(b".caf\xe9_depth.")) and tmp.name.endswith(".tmp.npy")
        np.save(tmp, np.arange(2))
    assert os.listdir(target.parent) == [target.name]


def test_a_shortened_temp_name_cuts_whole_characters_so_it_stays_utf8(tmp_path):
    target = tmp_path / ("é" * 123 + ".png")  # 246 bytes: the temp name must be cut, not mid-character
    with atomic_path(target) as tmp:
        tmp.name.encode("utf-8")  # raises on a lone surrogate from a split character
        assert len(os.fsencode(tmp.name)) <= 255 and tmp.name.startswith(".éé")
        tmp.write_bytes(b"png")
    assert target.read_bytes() == b"png" and not [name for name in os.listdir(tmp_path) if ".tmp" in name]
