"""Device fingerprint and a stable, readable device id (no torch import)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
import re
import subprocess
from typing import Any, Optional

from okdhp_edge.targets import BACKEND_INFO
from okdhp_edge.utils.board import ARM_MACHINES, Board, this_board
from okdhp_edge.utils.cpu import available_cores, cpu_info, isa_tier
from okdhp_edge.utils.provenance import git_commit

_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
          "amx_bf16", "amx_int8", "fma", "neon", "asimd", "sve")
# the kit's own libraries, then each backend's (the targets table names them)
_LIBS = ("numpy", "opencv-python-headless", "pycocotools",
         *(p for b in BACKEND_INFO.values() for p in b.packages))


def _gpu() -> Optional[dict[str, str]]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    name, driver, mem = (s.strip() for s in out.stdout.strip().splitlines()[0].split(","))
    return {"name": name, "driver": driver, "memory": mem}


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for lib in _LIBS:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def slug(text: str) -> str:
    s = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*$", "", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-")


def fingerprint(threads: int, cpus: Optional[tuple[int, ...]] = None) -> dict[str, Any]:
    """CPU model and flags, cores, threads used and the CPUs they ran on, the board (Arm
    clusters and features; whether the run is emulated), GPU and driver, OS, library
    versions, git commit."""
    model, flags = cpu_info()
    board = this_board()
    return {
        **_id_facts(board), "cpu_flags": sorted(flags & set(_FLAGS)), "threads": threads,
        "cpus": list(cpus) if cpus else None, "board": dataclasses.asdict(board),
        "os": f"{platform.system()} {platform.release()}",
        "versions": _versions(), "git_commit": git_commit(),
    }


def _id_facts(board: Board) -> dict[str, Any]:
    """What a device id is made of (see :func:`device_id`)."""
    return {"cpu_model": cpu_info()[0], "cores": available_cores(), "isa": isa_tier(),
            "machine": platform.machine(), "gpu": _gpu(), "emulated": board.emulated,
            "board_id": board.board_id, "guest_cpu": board.guest_cpu,
            "big_core": board.big.core if board.clusters else None}


def this_device_id() -> str:
    """The id this machine's reports are filed under (no ``--device-name``)."""
    return device_id(_id_facts(this_board()))


def device_id(fp: dict[str, Any], name: Optional[str] = None) -> str:
    """Readable, stable id: ``--device-name`` if given, else the board (Arm: its name or
    its big core, ``raspberry-pi-5-4c-dotprod``) or the CPU model (x86: a hypervisor names
    several CPU generations alike, and their timings differ) + cores + ISA tier (+ GPU).
    An emulated run is filed as such (``qemu-aarch64-cortex-a76-2c``), never as a board."""
    if name:
        return slug(name)
    if fp.get("emulated"):
        return "-".join(("qemu", fp["machine"], slug(fp.get("guest_cpu") or "max"),
                         f"{fp['cores']}c"))
    if fp.get("machine") in ARM_MACHINES:
        head = fp.get("board_id") or slug(fp.get("big_core") or "") or fp["machine"]
    else:
        head = slug(fp["cpu_model"]) or fp["machine"]
    parts = [head, f"{fp['cores']}c", fp.get("isa", "")]
    if fp.get("gpu"):
        parts.append(slug(fp["gpu"]["name"]))
    return "-".join(p for p in parts if p)
