"""The atomic-write helper and the folder lock (cnn.atomic)."""

import multiprocessing as mp
import os

import pytest

from cnn.atomic import FolderBusyError, atomic_write, folder_lock, write_bytes, write_text


def test_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a.txt"
    write_text(p, "one")
    write_text(p, "two")
    assert p.read_text() == "two"
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]


def test_failure_keeps_old_file_and_removes_temp(tmp_path):
    p = tmp_path / "a.bin"
    write_bytes(p, b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert p.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["a.bin"]


def test_planted_symlink_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    # the names an older writer used: a planted link there must not be written through
    for name in (".a.txt.tmp", "a.txt.tmp"):
        (tmp_path / name).symlink_to(victim)
    write_text(tmp_path / "a.txt", "new")
    assert victim.read_text() == "keep"
    assert (tmp_path / "a.txt").read_text() == "new"


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert p.stat().st_mode & 0o777 == 0o644


def _hold(folder, ready, release):
    with folder_lock(folder):
        ready.set()
        release.wait(10)


def test_lock_refuses_second_holder(tmp_path):
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(tmp_path, ready, release))
    p.start()
    try:
        assert ready.wait(10)
        with pytest.raises(FolderBusyError, match=f"process {p.pid}"):
            with folder_lock(tmp_path):
                pass
    finally:
        release.set()
        p.join(10)
    with folder_lock(tmp_path):  # released when the holder ended
        pass


def test_lock_released_when_holder_killed(tmp_path):
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(tmp_path, ready, release))
    p.start()
    assert ready.wait(10)
    p.kill()
    p.join(10)
    with folder_lock(tmp_path):
        pass
