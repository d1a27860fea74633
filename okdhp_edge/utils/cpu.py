"""What this CPU is and can do, read once from /proc/cpuinfo, and how busy other processes
keep it (no torch)."""

from __future__ import annotations

import functools
import math
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from okdhp_edge.utils.board import ARM_FEATURES, arm_tier


def allowed_cpus() -> tuple[int, ...]:
    """The CPU numbers this process may run on (its affinity; all where that is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def available_cores() -> int:
    """How many cores this process may run on (see :func:`allowed_cpus`)."""
    return len(allowed_cpus())


@functools.cache
def cpu_info() -> tuple[str, frozenset[str]]:
    """(model name, flags) of this CPU; the platform's processor name and no flags where
    /proc/cpuinfo is missing."""
    model = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, frozenset()
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    f = re.search(r"^(flags|Features)\s*:\s*(.+)$", text, re.M)
    return (m.group(1).strip() if m else model), frozenset(f.group(2).split() if f else ())


def cpu_has_native_bf16() -> bool:
    """True when the CPU has AMX-BF16 or AVX512-BF16 (fast bf16 matmuls)."""
    flags = cpu_info()[1]
    return "amx_bf16" in flags or "avx512_bf16" in flags


def cpu_has_int8_dot() -> bool:
    """True when the CPU has an int8 dot-product instruction (x86 VNNI or AMX-INT8, Arm
    dotprod); without one, x86 int8 kernels can saturate (see NNCF's overflow fix)."""
    flags = cpu_info()[1]
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})


def isa_tier() -> str:
    """The widest vector ISA of this CPU, as a short tag: amx, avx512bf16, avx512, avx2 on
    x86; sme, sve2, sve, i8mm, dotprod, neon on Arm (``utils.board.ARM_TIERS``); else the
    machine name. Two CPUs of one model name can differ here (a hypervisor shows 'AMD EPYC'
    for several generations), and so do their timings."""
    flags = cpu_info()[1]
    if "asimd" in flags:
        return arm_tier(tuple(v for k, v in ARM_FEATURES.items() if k in flags))
    for tag, flag in (("amx", "amx_tile"), ("avx512bf16", "avx512_bf16"),
                      ("avx512", "avx512f"), ("avx2", "avx2")):
        if flag in flags:
            return tag
    return platform.machine()


# ------------------------------------------------------------------ busy neighbours

def _stat_jiffies() -> tuple[int, int]:
    """(CPU time all processes spent computing since boot, of which the hypervisor stole)
    in jiffies: /proc/stat's 'cpu' line, user + nice + system + irq + softirq + steal."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    steal = v[7] if len(v) > 7 else 0
    return v[0] + v[1] + v[2] + v[5] + v[6] + steal, steal


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, CPU time used: utime + stime in jiffies, command name)."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        fields = text[text.rindex(")") + 2:].split()
        name = text[text.index("(") + 1:text.rindex(")")]
        out[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]), name)
    return out


def _tree(procs: dict[int, tuple[int, int, str]], root: int) -> set[int]:
    """``root`` and every process below it."""
    tree, frontier = {root}, [root]
    while frontier:
        kids = [p for p, (pp, _, _) in procs.items() if pp in frontier and p not in tree]
        tree.update(kids)
        frontier = kids
    return tree


def process_tree(root: int) -> set[int]:
    """``root`` and every process below it, as /proc says now."""
    return _tree(_processes(), root)


@dataclass(frozen=True)
class CpuSnapshot:
    """What the machine had computed at one instant (see :func:`others_between`)."""

    time: float
    busy: int  # all processes, jiffies (user, nice, system, irq, softirq, steal)
    steal: int
    procs: dict[int, tuple[int, int, str]]


def cpu_snapshot() -> Optional[CpuSnapshot]:
    """A snapshot of CPU use, or None where /proc is missing."""
    if not Path("/proc/stat").is_file():
        return None
    busy, steal = _stat_jiffies()
    return CpuSnapshot(time.monotonic(), busy, steal, _processes())


def others_between(a: CpuSnapshot, b: CpuSnapshot, root: Optional[int] = None
                   ) -> tuple[float, list[tuple[str, int, float]]]:
    """Cores other processes (outside ``root``'s tree, default this process) kept busy
    between two snapshots, with the busiest of them as (name, pid, cores), and the
    hypervisor's steal time as ``("steal", 0, cores)`` where it is not negligible."""
    hz, dt = os.sysconf("SC_CLK_TCK"), max(b.time - a.time, 1e-6)
    mine = _tree(b.procs, os.getpid() if root is None else root)
    used = {p: b.procs[p][1] - a.procs.get(p, (0, 0, ""))[1] for p in b.procs}
    own = sum(used[p] for p in mine if p in used)
    others = max(0.0, ((b.busy - a.busy) - own) / hz / dt)
    top = sorted(((b.procs[p][2], p, u / hz / dt) for p, u in used.items()
                  if p not in mine and u > 0), key=lambda t: -t[2])[:3]
    steal = (b.steal - a.steal) / hz / dt
    return others, top + ([("steal", 0, steal)] if steal >= 0.05 else [])


class ThreadGovernor:
    """Compute threads for a run on a shared CPU (``train.threads=0``): all cores while the
    machine is ours, one fewer per core other processes keep busy. Two compute threads on
    two cores wait on each other at every parallel region, so a neighbour on one core cost
    the quickstart 67% of its images/s, while one thread beside it loses 8%.

    Every ``interval_s`` it reads how much CPU time processes outside this run used
    (``/proc/stat`` minus this process tree): at >= ``busy`` of a core it gives that core
    up, below ``idle`` it takes it back. On an idle machine the count never changes, so a
    run keeps the same numerics (thread count changes the summation order, hence the
    bits) as a run pinned to all cores."""

    def __init__(self, cores: int, interval_s: float = 10.0, busy: float = 0.6,
                 idle: float = 0.3) -> None:
        self.cores, self.interval_s, self.busy, self.idle = cores, interval_s, busy, idle
        self.threads = cores
        self.others = 0.0  # cores other processes kept busy over the last interval
        self.available = cores > 1 and Path("/proc/stat").is_file()
        self._last: Optional[CpuSnapshot] = None

    def update(self) -> Optional[int]:
        """The new thread count when it should change now, else None."""
        if not self.available:
            return None
        now = time.monotonic()
        if self._last is not None and now - self._last.time < self.interval_s:
            return None
        last, self._last = self._last, cpu_snapshot()
        if last is None or self._last is None:
            return None
        self.others = others_between(last, self._last)[0]  # this run's tree excluded
        want = self.threads
        if self.others >= self.busy and self.threads > 1:
            want = max(1, self.cores - math.floor(self.others + 1 - self.busy))
        elif self.others < self.idle and self.threads < self.cores:
            want = self.cores
        if want == self.threads:
            return None
        self.threads = want
        return want
