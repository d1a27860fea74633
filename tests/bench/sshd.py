"""A real OpenSSH server for the fleet tests: Debian's ``sshd`` on 127.0.0.1, a free port,
host and client keys made for the test, keys only; started and stopped by the fixture."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class Sshd:
    port: int
    key: Path  # the client's private key (authorized)
    other_key: Path  # a key the server does not know
    user: str
    chroot_port: Optional[int] = None  # a second port whose sessions run in ``chroot``


HOST_PYTHON = getattr(sys, "_base_executable", sys.executable)  # a venv's own base Python


def fleet_host(sshd: Sshd, name: str, work: Path, **extra: object) -> dict:
    """A fleet file's host entry for this server (``extra`` overrides or adds keys)."""
    return {"name": name, "address": "127.0.0.1", "port": sshd.port, "user": sshd.user,
            "key": str(sshd.key), "python": HOST_PYTHON, "work": str(work), **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(folder: Path, chroot: Optional[Path] = None,
               env: Optional[dict[str, str]] = None) -> Iterator[Sshd]:
    """Start sshd on 127.0.0.1 with keys made here; yield it; stop it. ``chroot``: a
    second port whose sessions run with that folder as their root (sshd's own
    ``ChrootDirectory``), ``env`` set in every session."""
    if not Path(SSHD).is_file() or shutil.which("ssh") is None:
        pytest.skip("OpenSSH server or client absent (apt-get install openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("sshd needs root here (privilege separation)")
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("host", "client", "stranger"):
        _keygen(folder / name)
    (folder / "authorized_keys").write_text((folder / "client.pub").read_text())
    port = free_port()
    other = free_port() if chroot else None
    extra = "".join(f"SetEnv {k}={v}\n" for k, v in (env or {}).items())
    if chroot:
        extra = f"Port {other}\n{extra}Match LocalPort {other}\n    ChrootDirectory {chroot}\n"
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        f"PidFile {folder / 'sshd.pid'}\n{extra}")
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation folder
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
                            stderr=open(folder / "sshd.log", "wb"))
    try:
        for p in (port, other) if other else (port,):
            _wait_listening(p, proc)
        yield Sshd(port, folder / "client", folder / "stranger", "root", other)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_listening(port: int, proc: subprocess.Popen) -> None:
    for _ in range(100):
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("sshd did not listen within 5 s")
