"""Tests for common.files: atomic writes leave either the old file or the new one, never a part."""
from __future__ import annotations

import os
import time

import pytest

from common import files
from common.files import atomic_open, atomic_write_json, atomic_write_text


def test_write_replaces_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["out.txt"]


def test_failure_keeps_old_file_and_removes_part(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"run": 1})
    with pytest.raises(RuntimeError), atomic_open(target, "w") as handle:
        handle.write('{"run": 2, "half')
        raise RuntimeError("interrupted")
    assert target.read_text() == '{\n  "run": 1\n}\n'
    assert os.listdir(tmp_path) == ["out.json"]


def test_parts_left_by_a_killed_run_are_removed_but_not_a_fresh_one(tmp_path):
    """kill -9 skips every cleanup; the next write of the same file removes what it left once it
    is old enough to be certain no run is still writing it."""
    target = tmp_path / "model.npz"
    stale = tmp_path / ".model.npz.part-deadbeef"
    fresh = tmp_path / ".model.npz.part-0badf00d"
    other = tmp_path / ".metrics.json.part-deadbeef"
    for part in (stale, fresh, other):
        part.write_bytes(b"half")
    old = time.time() - files.STALE_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    with atomic_open(target) as handle:
        handle.write(b"whole")
    assert sorted(os.listdir(tmp_path)) == sorted([".metrics.json.part-deadbeef", ".model.npz.part-0badf00d",
                                                   "model.npz"])


def test_data_is_synced_before_the_rename(tmp_path, monkeypatch):
    """fsync comes before os.replace: after a crash the name never points at unwritten data."""
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    atomic_write_text(tmp_path / "out.txt", "x")
    assert calls[:2] == ["fsync", "replace"]
