"""Decisions from a bench report that know their own uncertainty: the Pareto frontier
and the pick under a latency budget. No torch.

Accuracy: two rows are tied when the paired bootstrap interval of their difference (both
recomputed on the same resampled images, :mod:`okdhp_edge.evaluation.uncertainty`)
reaches the user's tolerance (0 by default: the interval contains 0). Rows without
per-image results (reports written before intervals) are compared on their points.
Latency: two rows are tied when the bootstrap intervals of their medians overlap.

The pick is the fastest row within the budget whose accuracy is tied with the most
accurate one within the budget; among rows tied with it in latency too, the more accurate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from okdhp_edge.bench.report import STATS, accuracy_of, latency_of, measured, pareto
from okdhp_edge.evaluation.uncertainty import Interval, interval_text, paired_delta
from okdhp_edge.grammar import Request, option
from okdhp_edge.records import BenchReport, BenchRow
from okdhp_edge.utils.cli import UsageError


@dataclass(frozen=True)
class Tie:
    """Why a row stands in for another: ``other`` - row, as a paired interval."""

    other: BenchRow
    delta: Optional[Interval]  # None: compared on the points (no per-image results)
    point: float

    def text(self, stat: str, scope: str) -> str:
        return (f"tied with {self.other.label} at {latency_of(self.other, stat, scope):.2f} ms: "
                f"{self.point:+.4f}{interval_text(self.delta, '+.4f')}")


@dataclass(frozen=True)
class Decision:
    """The pick within a budget (None when none fits), the closest row otherwise, the
    Pareto frontier (fastest first) and the ties behind them."""

    choice: Optional[BenchRow]
    closest: Optional[BenchRow]
    frontier: list[BenchRow]
    tie: Optional[Tie] = None  # the most accurate row the choice is tied with
    frontier_ties: dict[int, str] = field(default_factory=dict)  # frontier index -> note


def accuracy_delta(a: BenchRow, b: BenchRow) -> tuple[float, Optional[Interval]]:
    """``a - b`` in accuracy: the point and, where both rows keep their per-image results
    on the same images, its paired interval."""
    point = accuracy_of(a) - accuracy_of(b)
    boot = a.accuracy.bootstrap or b.accuracy.bootstrap
    return point, paired_delta(a.accuracy.units, b.accuracy.units, boot)


def accuracy_tied(row: BenchRow, best: BenchRow, tolerance: float = 0.0
                  ) -> tuple[bool, Tie]:
    """Whether ``row`` is as accurate as ``best`` as far as the data tell: the interval of
    ``best - row`` reaches ``tolerance`` (the point, without intervals)."""
    point, ci = accuracy_delta(best, row)
    low = point if ci is None else ci.low
    return low <= tolerance + 1e-12, Tie(best, ci, point)


def latency_interval(row: BenchRow, stat: str = "median", scope: str = "engine"
                     ) -> tuple[float, float]:
    """The median's bootstrap interval (the value itself for other stats or old rows)."""
    v = latency_of(row, stat, scope)
    ci = row.latency_ms[scope].ci95_median if stat == "median" else None
    return (float(ci[0]), float(ci[1])) if ci else (v, v)


def latency_tied(a: BenchRow, b: BenchRow, stat: str = "median", scope: str = "engine"
                 ) -> bool:
    """Whether the latency intervals of two rows overlap."""
    (a0, a1), (b0, b1) = latency_interval(a, stat, scope), latency_interval(b, stat, scope)
    return a0 <= b1 and b0 <= a1


def frontier_ties(front: list[BenchRow], stat: str = "median", scope: str = "engine"
                  ) -> dict[int, str]:
    """For each frontier point after the first, what it is tied with on the faster point
    before it: an accuracy gain the data do not support, or a latency that overlaps."""
    notes: dict[int, str] = {}
    for i in range(1, len(front)):
        prev, cur = front[i - 1], front[i]
        parts = []
        tied, tie = accuracy_tied(prev, cur)  # tie: cur - prev, what this point adds
        if tied:
            parts.append(f"accuracy tied with the point above: {tie.point:+.4f}"
                         + interval_text(tie.delta, "+.4f"))
        if latency_tied(prev, cur, stat, scope):
            parts.append("latency tied with the point above")
        if parts:
            notes[i] = "; ".join(parts)
    return notes


def accuracy_drop(row: BenchRow, worst_case: bool = True) -> Optional[float]:
    """How much accuracy the row loses against the same student in PyTorch fp32: the
    paired interval's far end where there is one (``worst_case``), else the point."""
    acc = row.accuracy
    if worst_case and acc.delta_ci95:
        return -float(acc.delta_ci95[0])
    return None if acc.delta_vs_torch_fp32 is None else -float(acc.delta_vs_torch_fp32)


def _choose(ok: list[BenchRow], stat: str, scope: str, tolerance: float
            ) -> tuple[BenchRow, Optional[Tie]]:
    """The fastest row tied in accuracy with the most accurate; among rows tied with it in
    latency too, the more accurate."""
    def lat(r: BenchRow) -> float:
        return latency_of(r, stat, scope)

    best = max(ok, key=lambda r: (accuracy_of(r), -lat(r)))
    ties = {id(best): None}
    for r in ok:  # only a row no slower than the most accurate can stand in for it
        if r is not best and lat(r) <= lat(best):
            tied, tie = accuracy_tied(r, best, tolerance)
            if tied:
                ties[id(r)] = tie
    tied_rows = [r for r in ok if id(r) in ties]
    fastest = min(tied_rows, key=lambda r: (lat(r), -accuracy_of(r)))
    same_speed = [r for r in tied_rows if latency_tied(r, fastest, stat, scope)]
    choice = max(same_speed, key=lambda r: (accuracy_of(r), -lat(r)))
    return choice, ties[id(choice)]


_FRACTION = "accuracy is a fraction: 2 points of AP is 0.02"


@dataclass(frozen=True)
class PickRequest(Request):
    """The student to deploy under a latency budget, from a bench report: the fastest
    student whose accuracy is statistically tied with the most accurate one within the
    budget (the closest row when none fits), and the Pareto frontier. The report is
    ``--report FILE``, or the report of ``--zoo`` on ``--device`` (default: this machine)."""

    COMMAND: ClassVar[str] = "okdhp zoo pick"

    max_latency_ms: float = option(help="the latency budget, milliseconds", minimum=0,
                                   above=True)
    zoo: Optional[Path] = option(None, "a zoo directory: its report on --device is read")
    device: Optional[str] = option(None, "a device id under --reports (default: this "
                                   "machine's)")
    report: Optional[Path] = option(None, "a bench report JSON (any device)")
    reports: Path = option(Path("bench/reports"), "where the devices' reports are")
    stat: str = option("median", "the latency statistic", choices=STATS)
    scope: str = option("engine", "the engine call, or end to end (decode, crop, heatmap "
                        "decoding)", choices=("engine", "e2e"))
    min_accuracy: Optional[float] = option(None, "only rows at least this accurate",
                                           minimum=0, maximum=1, hint=_FRACTION)
    backend: Optional[str] = option(None, "only this backend")
    precision: Optional[str] = option(None, "only this precision (e.g. int8)")
    max_ap_drop: Optional[float] = option(
        None, "at most this much accuracy lost against the same student in PyTorch fp32, "
        "judged on the far end of the paired 95% interval", minimum=0, maximum=1,
        hint=_FRACTION)
    ap_tolerance: float = option(0.0, "a faster row stands in for the most accurate one when "
                                 "their paired interval reaches minus this (0: the interval "
                                 "contains 0)", minimum=0, maximum=1, hint=_FRACTION)
    max_memory_mb: Optional[float] = option(None, "only rows whose model adds at most this "
                                            "many MB to its runtime's resident memory",
                                            minimum=0, above=True)
    json: bool = option(False, "print the pick as JSON")
    allow_emulated: bool = option(False, "pick from an emulated report (QEMU user mode: its "
                                  "timings are the emulator's, not a device's)")

    def decide(self, rows: list[BenchRow]) -> Decision:
        """The decision over ``rows`` (see :func:`pick`)."""
        return _decide(rows, self)

    def decide_report(self, rep: BenchReport, where: str) -> Decision:
        """The decision over a report's rows, refused (UsageError) for a plan of untrained
        students (no accuracy) and for an emulated run unless ``allow_emulated``."""
        if rep.untrained:
            raise UsageError(f"{where}: a plan of untrained students (bench --plan) has "
                             "latencies but no accuracy; pick from a trained zoo's report")
        if rep.emulated and not self.allow_emulated:
            raise UsageError(f"{where}: measured under emulation ({rep.emulated}): its "
                             "latencies are not a device's; bench on the device, or pass "
                             "--allow-emulated to pick from it anyway")
        return self.decide(rep.rows)


def pick(rows: list[BenchRow], max_latency_ms: float, stat: str = "median",
         scope: str = "engine", min_accuracy: Optional[float] = None,
         backend: Optional[str] = None, precision: Optional[str] = None,
         max_drop: Optional[float] = None, ap_tolerance: float = 0.0,
         max_memory_mb: Optional[float] = None) -> Decision:
    """The pick within the budget (see the module), the closest row when none fits, and
    the Pareto frontier of the filtered rows with its ties. Precision is a dimension like
    any other: ``precision`` restricts it, ``max_drop`` bounds each row's accuracy loss
    against its own student in PyTorch fp32, judged on the paired interval's far end
    (rows without that reference are left out); ``max_memory_mb`` bounds the memory a
    row's model adds to its runtime (:attr:`okdhp_edge.records.RowCost.model_mb`; rows
    measured without it are left out). A bound outside its range (a latency that is not a
    positive finite number, an accuracy figure outside [0, 1]: AP and PCKh are fractions)
    is a UsageError naming it: the bounds are :class:`PickRequest`'s, whether they came
    from the command line or the API."""
    return PickRequest.build(
        max_latency_ms=max_latency_ms, stat=stat, scope=scope, min_accuracy=min_accuracy,
        backend=backend, precision=precision, max_ap_drop=max_drop,
        ap_tolerance=ap_tolerance, max_memory_mb=max_memory_mb).decide(rows)


def _decide(rows: list[BenchRow], q: PickRequest) -> Decision:
    stat, scope = q.stat, q.scope
    cand = [r for r in measured(rows, stat, scope)
            if (q.backend is None or r.backend == q.backend)
            and (q.precision is None or r.precision == q.precision)
            and (q.max_ap_drop is None or (accuracy_drop(r) is not None
                                           and accuracy_drop(r) <= q.max_ap_drop + 1e-12))
            and (q.max_memory_mb is None or (r.cost is not None
                                             and r.cost.model_mb <= q.max_memory_mb))]
    front = pareto(cand, stat, scope)
    notes = frontier_ties(front, stat, scope)
    ok = [r for r in cand if latency_of(r, stat, scope) <= q.max_latency_ms
          and (q.min_accuracy is None or accuracy_of(r) >= q.min_accuracy)]
    if ok:
        choice, tie = _choose(ok, stat, scope, q.ap_tolerance)
        return Decision(choice, None, front, tie, notes)
    acc_ok = [r for r in cand if q.min_accuracy is None or accuracy_of(r) >= q.min_accuracy]
    closest = min(acc_ok or cand, key=lambda r: latency_of(r, stat, scope), default=None)
    return Decision(None, closest, front, None, notes)


def _accuracy_text(rep: BenchReport, row: BenchRow) -> str:
    return f"{rep.metric} {row.accuracy.value:.4f}" + interval_text(row.accuracy.ci95)


def memory_text(row: BenchRow) -> str:
    """``model 34 MB (process peak 120 MB)``, or what says it was not measured."""
    if row.cost is None:
        return "memory not measured"
    return f"model {row.cost.model_mb:.0f} MB (process peak {row.cost.peak_mb:.0f} MB)"


def pick_lines(rep: BenchReport, d: Decision, budget_ms: float, stat: str = "median",
               scope: str = "engine") -> list[str]:
    """The pick (or the closest row when none fits) and the frontier, as text."""
    best = d.choice
    if best is not None:
        why = ("the most accurate within the budget" if d.tie is None
               else d.tie.text(stat, scope))
        lines = [f"pick on {rep.device_id}: {best.label} - {latency_of(best, stat, scope):.2f} "
                 f"ms {scope} {stat} <= {budget_ms} ms, {_accuracy_text(rep, best)}, "
                 f"{memory_text(best)} ({why})"
                 + (" - timed under load" if best.latency_ms[scope].busy else "")]
    else:
        lines = ["no student meets the budget" + (
            "" if d.closest is None else f"; closest: {d.closest.label} at "
            f"{latency_of(d.closest, stat, scope):.2f} ms, {_accuracy_text(rep, d.closest)}")]
    lines.append("frontier (latency -> accuracy; ties: what the data cannot tell apart):")
    for i, r in enumerate(d.frontier):
        note = d.frontier_ties.get(i)
        lines.append(f"  {latency_of(r, stat, scope):8.2f} ms  {r.accuracy.value:.4f}  {r.label}"
                     + (" <- pick" if r is best else "") + (f"  ({note})" if note else ""))
    return lines
