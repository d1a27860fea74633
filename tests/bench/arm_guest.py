"""The aarch64 user space of ``make arm-check`` (bench/arm_check.sh) made ready to be a fleet
host: this checkout's aarch64 wheels beside it, the host's /proc, /sys and /dev bound in
(with the emulated core's /proc/cpuinfo, as arm-check shows it) and a host folder bound at
``/fleet``; everything undone on the way out. sshd (tests/bench/sshd.py) then chroots one
port's sessions into it: every program they run is aarch64, under QEMU user mode."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

ARM_CHECK = Path(__file__).resolve().parents[2] / "bench" / "arm_check.sh"
CACHE = Path(os.environ.get("OKDHP_ARM_CACHE", "~/.cache/okdhp_edge/arm64")).expanduser()
QEMU_CPU = os.environ.get("QEMU_CPU", "cortex-a76")


@dataclass(frozen=True)
class ArmGuest:
    rootfs: Path
    wheels: str  # the aarch64 wheels' folder, as the guest sees it
    fleet: str  # the host folder bound in, as the guest sees it
    python: str  # the guest's Python


def _skip_unless_ready(rootfs: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the Arm user space needs root (chroot, bind mounts)")
    if not (rootfs / "opt" / "venv" / "bin" / "python").exists():
        pytest.skip(f"no Arm user space in {rootfs}: `make arm-check` builds it once "
                    "(about 5 min and 1 GB)")
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        pytest.skip("no qemu-aarch64 binfmt handler (apt-get install qemu-user-static)")


def _prepare() -> dict[str, str]:
    """``arm_check.sh prepare``: the user space and this checkout's aarch64 wheels."""
    env = {**os.environ, "PY": sys.executable, "QEMU_CPU": QEMU_CPU}
    res = subprocess.run([str(ARM_CHECK), "prepare"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return dict(ln.split("=", 1) for ln in res.stdout.splitlines() if "=" in ln and
                not ln.startswith("["))


@contextmanager
def arm_guest(host_folder: Path) -> Iterator[ArmGuest]:
    """The guest, mounted for as long as the block runs (holding arm-check's lock)."""
    rootfs = CACHE / "rootfs-bookworm"
    _skip_unless_ready(rootfs)
    paths = _prepare()
    wheels = Path(paths["wheels"])
    cpuinfo = host_folder / "cpuinfo"
    host_folder.mkdir(parents=True, exist_ok=True)
    cpuinfo.write_text(subprocess.run([str(ARM_CHECK), "cpuinfo"], capture_output=True,
                                      text=True, check=True,
                                      env={**os.environ, "QEMU_CPU": QEMU_CPU}).stdout)
    (host_folder / "fleet").mkdir(exist_ok=True)
    mounts: list[Path] = []
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one user of the user space at a time
        try:
            for src, dst, how in (("/proc", "/proc", "--rbind"), (cpuinfo, "/proc/cpuinfo",
                                  "--bind"), ("/sys", "/sys", "--rbind"),
                                  ("/dev", "/dev", "--rbind"), (wheels, "/wheels", "--bind"),
                                  (host_folder / "fleet", "/fleet", "--bind")):
                target = rootfs / dst.lstrip("/")
                if not target.exists():
                    target.mkdir(parents=True)
                subprocess.run(["mount", how, str(src), str(target)], check=True)
                mounts.insert(0, target)
            yield ArmGuest(rootfs, "/wheels", "/fleet", "/usr/bin/python3")
        finally:
            for m in mounts:
                if subprocess.run(["umount", "-R", str(m)], capture_output=True).returncode:
                    subprocess.run(["umount", "-l", str(m)], capture_output=True)
