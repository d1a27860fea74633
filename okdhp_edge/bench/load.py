"""What else ran while the bench timed: the CPU time other processes used during each
timing block, read from /proc (:func:`okdhp_edge.utils.cpu.others_between`), and the
bench's policy on a busy machine (``--busy wait|warn|refuse``).

On two cores, intra-op threads that share a core with a neighbour wait on each other at
every parallel region (ONNX Runtime's spinning threads worst of all), so a median timed
under load ranks backends by their neighbours. Every row records the cores others kept
busy while it was timed; a row that saw at least :data:`BUSY_CORES` is flagged.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any, Optional

from okdhp_edge.errors import MachineBusy
from okdhp_edge.utils.cpu import CpuSnapshot, cpu_snapshot, others_between

log = logging.getLogger(__name__)

BUSY_CORES = 0.25  # others this busy during a timing block flag its row (idle: ~0.01)
POLICIES = ("wait", "warn", "refuse")


class LoadMonitor:
    """Measures other processes' CPU use around each timing block of the bench.

    ``wait``: before each block, wait until a ``probe_s`` probe finds the machine quiet,
    ``max_wait_s`` at most for the whole run (once that budget is spent, the remaining
    blocks are timed without waiting, flagged where busy); ``warn``: measure and flag;
    ``refuse``: raise :class:`MachineBusy` at the first busy probe or block (no report is
    written)."""

    def __init__(self, policy: str = "warn", threshold: float = BUSY_CORES,
                 max_wait_s: float = 600.0, probe_s: float = 1.0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"busy policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.policy, self.threshold = policy, threshold
        self.max_wait_s, self.probe_s = max_wait_s, probe_s
        self.samples: dict[Any, list[float]] = defaultdict(list)
        self.culprits: dict[str, float] = {}  # process name -> the most cores it used
        self.waited_s = 0.0
        self.scope = "engine"  # samples are kept per (scope, key)
        self._start: Optional[CpuSnapshot] = None
        self._last_busy = True  # wait: probe before the first block

    def probe(self) -> tuple[float, list[tuple[str, int, float]]]:
        """Cores others use over one probe interval (0 where /proc is missing)."""
        a = cpu_snapshot()
        time.sleep(self.probe_s)
        b = cpu_snapshot()
        return (0.0, []) if a is None or b is None else others_between(a, b)

    def before(self) -> None:
        """Called before a timing block."""
        if self.policy == "wait" and self._last_busy:
            self._wait_until_quiet()
        self._start = cpu_snapshot()

    def after(self, key: Any) -> None:
        """Called after the timing block of ``key``."""
        end = cpu_snapshot()
        if self._start is None or end is None:
            return
        others, top = others_between(self._start, end)
        self.samples[(self.scope, key)].append(others)
        self._last_busy = others >= self.threshold
        if self._last_busy:
            self._blame(top)
            if self.policy == "refuse":
                raise MachineBusy(f"refused (--busy refuse): {self.culprit_text(others)}")

    def check_quiet(self) -> None:
        """``refuse``: one probe before anything is measured."""
        if self.policy == "refuse":
            others, top = self.probe()
            if others >= self.threshold:
                self._blame(top)
                raise MachineBusy(f"refused (--busy refuse): {self.culprit_text(others)}")

    def _wait_until_quiet(self) -> None:
        """Wait for a quiet machine within what is left of the run's waiting budget."""
        if self.waited_s >= self.max_wait_s:
            return  # the budget is spent (said once): time without waiting
        t0, said = time.monotonic(), False
        while True:
            others, top = self.probe()
            if others < self.threshold:
                break
            if not said:
                log.warning("waiting for a quiet machine (--busy wait; %.0f s of the run's "
                            "%.0f s budget left): %s", self.max_wait_s - self.waited_s,
                            self.max_wait_s, self.culprit_text(others, top))
                said = True
            if self.waited_s + time.monotonic() - t0 >= self.max_wait_s:
                log.warning("still busy after waiting %.0f s in all (--busy-wait): timing "
                            "every remaining block without waiting; rows timed under load "
                            "are flagged", self.max_wait_s)
                break
        self.waited_s += time.monotonic() - t0

    def _blame(self, top: list[tuple[str, int, float]]) -> None:
        for name, pid, cores in top:
            label = name if pid == 0 else f"{name} (pid {pid})"
            self.culprits[label] = max(cores, self.culprits.get(label, 0.0))

    def culprit_text(self, others: float, top: Optional[list] = None) -> str:
        """One line: how busy others kept the CPU, and the busiest of them."""
        named = ([(n if p == 0 else f"{n} (pid {p})", c) for n, p, c in top] if top
                 else sorted(self.culprits.items(), key=lambda kv: -kv[1]))
        who = ", ".join(f"{n} {c:.2f}" for n, c in named[:3]) or "unknown processes"
        return f"other processes kept {others:.2f} cores busy ({who})"

    def stats(self, key: Any, scope: str = "engine") -> dict[str, Any]:
        """The LatencyStats fields of a row's load: mean and max cores others used."""
        s = self.samples.get((scope, key))
        if not s:
            return {}
        return {"others_cores_mean": round(sum(s) / len(s), 3),
                "others_cores_max": round(max(s), 3), "busy": max(s) >= self.threshold}

    def record(self, busy_rows: int) -> dict[str, Any]:
        """The report's ``load`` block."""
        every = [v for s in self.samples.values() for v in s]
        return {"policy": self.policy, "threshold_cores": self.threshold,
                "busy_rows": busy_rows, "others_cores_max": round(max(every, default=0.0), 3),
                "culprits": {k: round(v, 2) for k, v in sorted(
                    self.culprits.items(), key=lambda kv: -kv[1])[:5]},
                "waited_s": round(self.waited_s, 1)}
