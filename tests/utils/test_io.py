"""Atomic writes: full disk, read-only folders, sets of files."""

import shutil
import subprocess
import sys

import pytest


def test_full_disk_and_read_only_folders_are_one_line(tmp_path, monkeypatch):
    import errno

    from okdhp_edge.utils import io
    from okdhp_edge.utils.io import WriteError, atomic_write, atomic_write_set

    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError, match="f.bin: the disk is full"):
        atomic_write(target, full)
    # torch's zip writer says "unexpected pos": the free space tells it was the disk
    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 0))

    def torch_like(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    with pytest.raises(WriteError, match="the disk is full"):
        atomic_write(target, torch_like)
    monkeypatch.undo()
    # a set is written whole or not at all
    with pytest.raises(WriteError):
        atomic_write_set({tmp_path / "a.txt": lambda t: t.write_text("new"), target: full})
    assert not (tmp_path / "a.txt").exists() and target.read_bytes() == b"old"
    assert not list(tmp_path.glob(".*.tmp"))
    # an output folder that cannot be made fails at once (before any measuring)
    proc = subprocess.run([sys.executable, "-m", "okdhp_edge.bench", "--zoo", "nowhere",
                           "--out-root", str(target / "reports")], capture_output=True,
                          text=True)
    assert proc.returncode == 1 and "not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr
