"""What this CPU is and can do, read once from /proc/cpuinfo (no torch)."""

from __future__ import annotations

import functools
import platform
import re
from pathlib import Path


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


def isa_tier() -> str:
    """The widest vector ISA of this CPU, as a short tag: amx, avx512bf16, avx512, avx2,
    neon, or the machine name. Two CPUs of one model name can differ here (a hypervisor
    shows 'AMD EPYC' for several generations), and so do their timings."""
    flags = cpu_info()[1]
    for tag, flag in (("amx", "amx_tile"), ("avx512bf16", "avx512_bf16"),
                      ("avx512", "avx512f"), ("avx2", "avx2"), ("neon", "asimd")):
        if flag in flags:
            return tag
    return platform.machine()
