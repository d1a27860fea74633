"""What board this is and which cores it has, as its users name them (no torch).

x86 names its CPU in ``/proc/cpuinfo``'s ``model name``. Arm Linux does not: each processor
has a ``CPU implementer`` / ``CPU part`` pair (0x41 / 0xd0b is a Cortex-A76) and a
``Features`` line; a big.LITTLE chip lists two or three kinds of core. The clusters come
from sysfs (``cpufreq/cpuinfo_max_freq`` or ``cpu_capacity`` per CPU), the board from the
device tree (``/proc/device-tree/model`` and ``compatible``), a Jetson's L4T release from
``/etc/nv_tegra_release``. Every path is read under ``root`` so that the tests read fixture
trees of real boards (``tests/utils/boards/``).

Under QEMU user mode an aarch64 program reads the host's x86 ``/proc/cpuinfo``: the machine
it runs as and the CPU it reads disagree, and the record says the run is emulated (its
timings are not a device's)."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# (implementer, part) -> core name, from the cores' MIDR values in Arm's technical
# reference manuals (and NVIDIA's Carmel)
ARM_CORES: dict[tuple[int, int], str] = {
    (0x41, 0xd03): "Cortex-A53", (0x41, 0xd04): "Cortex-A35", (0x41, 0xd05): "Cortex-A55",
    (0x41, 0xd07): "Cortex-A57", (0x41, 0xd08): "Cortex-A72", (0x41, 0xd09): "Cortex-A73",
    (0x41, 0xd0a): "Cortex-A75", (0x41, 0xd0b): "Cortex-A76", (0x41, 0xd0c): "Neoverse-N1",
    (0x41, 0xd0d): "Cortex-A77", (0x41, 0xd0e): "Cortex-A76AE", (0x41, 0xd40): "Neoverse-V1",
    (0x41, 0xd41): "Cortex-A78", (0x41, 0xd42): "Cortex-A78AE", (0x41, 0xd44): "Cortex-X1",
    (0x41, 0xd46): "Cortex-A510", (0x41, 0xd47): "Cortex-A710", (0x41, 0xd48): "Cortex-X2",
    (0x41, 0xd49): "Neoverse-N2", (0x41, 0xd4b): "Cortex-A78C", (0x41, 0xd4d): "Cortex-A715",
    (0x41, 0xd4e): "Cortex-X3", (0x41, 0xd4f): "Neoverse-V2", (0x41, 0xd80): "Cortex-A520",
    (0x41, 0xd81): "Cortex-A720", (0x41, 0xd82): "Cortex-X4", (0x4e, 0x004): "Carmel",
}
# Arm features that change which kernels the runtimes take, as the kit names them
ARM_FEATURES: dict[str, str] = {
    "asimd": "neon", "asimdhp": "fp16", "asimddp": "dotprod", "i8mm": "i8mm", "bf16": "bf16",
    "sve": "sve", "sve2": "sve2", "sme": "sme",
}
# the widest of them, first match wins: the ISA tier in an Arm device id
ARM_TIERS = ("sme", "sve2", "sve", "i8mm", "dotprod", "neon")
ARM_MACHINES = ("aarch64", "arm64", "armv7l", "armv8l", "armv6l")
# device-tree model -> board id: the name its users know it by
_BOARD_NAMES = (
    (r"raspberry pi (\d+|zero 2|compute module \d+|\d+00)", "raspberry-pi-{0}"),
    (r"jetson (agx orin|orin nx|orin nano|agx xavier|xavier nx|nano|tx2)", "jetson-{0}"),
)
# SoC vendors whose boards are known by their SoC (device-tree compatible "vendor,soc")
_SOC_VENDORS = ("rockchip", "amlogic", "allwinner", "mediatek", "qcom", "nxp", "ti")


@dataclass(frozen=True)
class Cluster:
    """Cores of one kind and speed: their name, their CPU numbers, their top clock."""

    core: str
    cpus: tuple[int, ...]
    max_mhz: Optional[int] = None

    def describe(self) -> str:
        clock = f" @ {self.max_mhz / 1000:.1f} GHz" if self.max_mhz else ""
        return f"{len(self.cpus)}x {self.core}{clock}"


@dataclass(frozen=True)
class Board:
    """The machine as its user knows it: board, clusters (fastest first), the features the
    runtimes care about, and whether what runs here is emulated."""

    machine: str  # what the process runs as (uname): aarch64, x86_64, armv7l
    cpu_arch: str  # what /proc/cpuinfo describes: arm | x86 | unknown
    model: Optional[str] = None  # device-tree model, or the x86 model name
    board_id: Optional[str] = None  # raspberry-pi-5, jetson-orin-nano, rk3588
    clusters: tuple[Cluster, ...] = ()
    features: tuple[str, ...] = ()  # kit names (ARM_FEATURES values); x86: empty
    l4t: Optional[str] = None  # a Jetson's L4T release, e.g. R36.4.7
    emulated: Optional[str] = None  # why the run is emulated; None on real hardware
    guest_cpu: Optional[str] = None  # the core QEMU emulates (QEMU_CPU), when emulated

    @property
    def big(self) -> Cluster:
        return self.clusters[0]

    def describe(self) -> str:
        """``rk3588: 4x Cortex-A76 @ 2.4 GHz + 4x Cortex-A55 @ 1.8 GHz (dotprod, fp16)``"""
        head = self.board_id or self.model or self.machine
        cores = " + ".join(c.describe() for c in self.clusters)
        feats = f" ({', '.join(self.features)})" if self.features else ""
        emu = f" [emulated: {self.emulated}]" if self.emulated else ""
        return f"{head}: {cores}{feats}{emu}"


def _read(root: Path, rel: str) -> Optional[str]:
    try:
        return (root / rel).read_text(errors="replace")
    except OSError:
        return None


def _blocks(cpuinfo: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    """/proc/cpuinfo as one dict per processor, and the lines outside them (an Arm board's
    Hardware / Revision / Model)."""
    procs: list[dict[str, str]] = []
    extra: dict[str, str] = {}
    for block in re.split(r"\n\s*\n", cpuinfo):
        kv = {}
        for line in block.splitlines():
            if ":" in line:
                k, _, v = line.partition(":")
                kv[k.strip()] = v.strip()
        (procs.append(kv) if "processor" in kv and kv["processor"].isdigit()
         else extra.update(kv))
    return procs, extra


def _core_name(p: dict[str, str]) -> str:
    try:
        key = (int(p.get("CPU implementer", ""), 16), int(p.get("CPU part", ""), 16))
    except ValueError:
        return p.get("model name", "unknown")
    return ARM_CORES.get(key, f"arm-{key[0]:#x}-{key[1]:#05x}")


def _max_mhz(root: Path, cpu: int) -> Optional[int]:
    khz = _read(root, f"sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq")
    return int(khz) // 1000 if khz and khz.strip().isdigit() else None


def _speed(root: Path, cpu: int) -> int:
    """A CPU's rank among its siblings: its top clock, else its scheduler capacity."""
    mhz = _max_mhz(root, cpu)
    if mhz:
        return mhz
    cap = _read(root, f"sys/devices/system/cpu/cpu{cpu}/cpu_capacity")
    return int(cap) if cap and cap.strip().isdigit() else 0


def _clusters(root: Path, procs: list[dict[str, str]]) -> tuple[Cluster, ...]:
    """Processors grouped by (core, speed), fastest first (ties: the later CPUs, which is
    where big cores sit on every big.LITTLE board named in the fixtures)."""
    groups: dict[tuple[str, int], list[int]] = {}
    for p in procs:
        cpu = int(p["processor"])
        groups.setdefault((_core_name(p), _speed(root, cpu)), []).append(cpu)
    order = sorted(groups.items(), key=lambda kv: (-kv[0][1], -max(kv[1])))
    return tuple(Cluster(core, tuple(cpus), _max_mhz(root, cpus[0]))
                 for (core, _), cpus in order)


def _board_id(model: Optional[str], compatible: Optional[str]) -> Optional[str]:
    if model:
        for pattern, fmt in _BOARD_NAMES:
            m = re.search(pattern, model, re.I)
            if m:
                return fmt.format(re.sub(r"\s+", "-", m.group(1).lower()))
    for entry in (compatible or "").split("\0"):
        vendor, _, soc = entry.partition(",")
        if vendor in _SOC_VENDORS and soc:
            return soc
    return None


def _l4t(text: Optional[str]) -> Optional[str]:
    m = re.search(r"# R(\d+) \(release\), REVISION: ([\d.]+)", text or "")
    return f"R{m.group(1)}.{m.group(2)}" if m else None


def _cpu_arch(procs: list[dict[str, str]]) -> str:
    first = procs[0] if procs else {}
    if "CPU implementer" in first:
        return "arm"
    return "x86" if "vendor_id" in first or "flags" in first else "unknown"


def _emulated(root: Path, machine: str, arch: str, procs: list[dict[str, str]]
              ) -> Optional[str]:
    """Why the run is emulated, else None: the machine and the CPU it reads disagree (QEMU
    user mode shows the host's /proc/cpuinfo), or this machine's own binaries are run by a
    binfmt_misc handler (``qemu-aarch64`` enabled: a native kernel registers none for its
    own architecture; this catches an emulated user space shown an Arm /proc/cpuinfo)."""
    qemu_cpu = os.environ.get("QEMU_CPU")
    cpu = f", guest CPU {qemu_cpu} (QEMU_CPU)" if qemu_cpu else ""
    if arch != "unknown" and (machine in ARM_MACHINES) != (arch == "arm"):
        host = procs[0].get("model name", "an x86 CPU") if procs else "another CPU"
        return f"{machine} user space on {host} (QEMU user mode{cpu})"
    handler = _read(root, f"proc/sys/fs/binfmt_misc/qemu-{machine}") or ""
    if handler.startswith("enabled"):
        m = re.search(r"^interpreter (\S+)", handler, re.M)
        return (f"{machine} binaries run by {m.group(1) if m else 'QEMU'} (binfmt_misc; "
                f"QEMU user mode{cpu})")
    return None


@functools.lru_cache(maxsize=1)
def this_board() -> Board:
    """This machine's board, read once per process (the device id, the fingerprint and
    ``bench --cores`` all ask)."""
    return read_board()


def read_board(root: Path = Path("/"), machine: Optional[str] = None) -> Board:
    """This machine's board record, read under ``root`` (fixtures); ``machine`` defaults to
    the running interpreter's (``platform.machine()``)."""
    import platform

    machine = machine or platform.machine()
    procs, extra = _blocks(_read(root, "proc/cpuinfo") or "")
    arch = _cpu_arch(procs)
    dt_model = (_read(root, "proc/device-tree/model") or "").strip("\0\n ") or None
    model = dt_model or extra.get("Model") or (procs[0].get("model name") if procs else None)
    feats: tuple[str, ...] = ()
    if arch == "arm" and procs:
        have = set(procs[0].get("Features", "").split())
        feats = tuple(v for k, v in ARM_FEATURES.items() if k in have)
    return Board(
        machine=machine, cpu_arch=arch, model=model,
        board_id=_board_id(dt_model or extra.get("Model"),
                           _read(root, "proc/device-tree/compatible")),
        clusters=_clusters(root, procs) if procs else (),
        features=feats, l4t=_l4t(_read(root, "etc/nv_tegra_release")),
        emulated=(emu := _emulated(root, machine, arch, procs)),
        guest_cpu=(os.environ.get("QEMU_CPU") or "max") if emu else None)


def arm_tier(features: tuple[str, ...]) -> str:
    """The widest Arm vector tier among ``features`` (kit names), or 'arm'."""
    return next((t for t in ARM_TIERS if t in features), "arm")


def choose_cpus(spec: str, board: Board, allowed: tuple[int, ...]) -> tuple[int, ...]:
    """The CPUs ``spec`` names among ``allowed`` (this process's affinity): ``big`` (the
    fastest cluster; every allowed CPU on a one-cluster machine), ``little`` (the slowest),
    ``all``, or a list such as ``4-7`` or ``0,2``. ValueError with the reason otherwise."""
    spec = spec.strip().lower()
    if spec == "all" or (spec in ("big", "little") and len(board.clusters) < 2):
        return allowed
    if spec in ("big", "little"):
        cluster = board.clusters[0 if spec == "big" else -1]
        chosen = tuple(c for c in cluster.cpus if c in allowed)
        return chosen or allowed
    chosen_set: set[int] = set()
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not m:
            raise ValueError(f"'{part}': give big, little, all or CPU numbers like 4-7 or 0,2")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        chosen_set.update(range(lo, hi + 1))
    missing = sorted(chosen_set - set(allowed))
    if missing:
        raise ValueError(f"CPU(s) {', '.join(map(str, missing))} are not available to this "
                         f"process (it may run on {_ranges(allowed)})")
    return tuple(sorted(chosen_set))


def _ranges(cpus: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) -> '0-2,5'"""
    spans: list[list[int]] = []
    for c in sorted(cpus):
        if spans and c == spans[-1][1] + 1:
            spans[-1][1] = c
        else:
            spans.append([c, c])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in spans)


def board_from_dict(data: dict) -> Board:
    """A :class:`Board` back from a report's fingerprint (``dataclasses.asdict`` of one)."""
    clusters = tuple(Cluster(c["core"], tuple(c["cpus"]), c.get("max_mhz"))
                     for c in data.get("clusters", ()))
    return Board(**{**data, "clusters": clusters, "features": tuple(data.get("features", ()))})
