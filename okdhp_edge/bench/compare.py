"""``python -m okdhp_edge.bench compare bench/reports/*/<zoo>.json --out DIR``: one table
(students x devices x backends) and one chart with a Pareto frontier per device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from okdhp_edge.bench.report import (
    accuracy_of,
    chart,
    device_label,
    latency_of,
    load_report,
    pareto,
)
from okdhp_edge.grammar import Request, option
from okdhp_edge.records import BenchReport
from okdhp_edge.utils.cli import UsageError, request_main
from okdhp_edge.utils.io import atomic_write_text


def combine(reports: list[BenchReport]) -> str:
    """Markdown table of every measured (student, device, backend, precision)."""
    zoo = reports[0].zoo
    metric = reports[0].metric
    lines = [f"# Zoo `{zoo}` across {len(reports)} devices", "",
             "| student | device | backend | precision | median ms | p90 ms | "
             f"{metric} | on frontier |", "|---|---|---|---|---|---|---|---|"]
    students = [s.name for s in reports[0].students]
    for s in students:
        for rep in reports:
            front = {id(r) for r in pareto(rep.rows)}
            for r in rep.rows:
                if r.student != s or r.status != "ok":
                    continue
                acc = accuracy_of(r)
                lines.append(
                    f"| {s} | {device_label(rep)} | {r.backend} | {r.precision} | "
                    f"{latency_of(r):.2f} | {latency_of(r, 'p90'):.2f} | "
                    f"{'-' if acc is None else f'{acc:.4f}'} | "
                    f"{'yes' if id(r) in front else ''} |")
    emulated = [f"- **{rep.device_id}** was emulated ({rep.emulated}): its timings are the "
                "emulator's, not a device's; its accuracies are the runtime's on that "
                "architecture" for rep in reports if rep.emulated]
    if emulated:
        lines += ["", *emulated]
    return "\n".join(lines) + "\n\n![frontiers](compare_pareto.png)\n"


def check_compatible(reports: list[BenchReport], paths: list[Path]) -> None:
    """Refuse reports of different zoos, students or report versions."""
    first = reports[0]
    names = [s.name for s in first.students]
    for rep, path in zip(reports[1:], paths[1:]):
        if rep.zoo != first.zoo:
            raise UsageError(f"{path}: zoo '{rep.zoo}' differs from '{first.zoo}' "
                             f"({paths[0]}); compare reports of one zoo")
        if [s.name for s in rep.students] != names:
            raise UsageError(f"{path}: its students differ from {paths[0]}'s (another "
                             "training run under the same zoo name?)")


@dataclass(frozen=True)
class CompareRequest(Request):
    """Charts one zoo across devices: one table and one Pareto chart from the devices'
    reports of that zoo."""

    COMMAND: ClassVar[str] = "okdhp bench compare"

    reports: tuple[Path, ...] = option(help="the devices' report JSON files of one zoo",
                                       positional=True, metavar="REPORT_JSON")
    out: Path = option(help="the folder the table and chart are written to")

    def check(self) -> None:
        if not self.reports:
            raise UsageError("compare needs at least one report")


def _run(args: CompareRequest) -> int:
    reports = [load_report(r) for r in args.reports]
    check_compatible(reports, list(args.reports))
    args.out.mkdir(parents=True, exist_ok=True)
    chart(reports, args.out / "compare_pareto.png")
    md = args.out / "compare.md"
    atomic_write_text(md, combine(reports))
    print(f"md: {md}\npng: {args.out / 'compare_pareto.png'}")
    return 0


main = request_main(CompareRequest, _run)
