"""``python -m okdhp_edge.bench merge REPORT.json [REPORT.json ...] --name NAME``

Joins bench reports of one device (zoos of any family: hourglass and light students) into
one report, table and Pareto chart, ``bench/reports/<device-id>/<NAME>.{json,md,png}``, so
that ``zoo pick --report`` chooses across them. Reports of untrained (plan) students and
reports of different devices or metrics are refused. No torch.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from okdhp_edge.bench.report import load_report, write_report
from okdhp_edge.grammar import Request, option
from okdhp_edge.records import BenchReport, ReportError
from okdhp_edge.utils.cli import UsageError, request_main, run_cli
from okdhp_edge.utils.io import sha256_file
from okdhp_edge.utils.values import is_plain_name


def merge_reports(paths: list[Path], name: str, request: Optional[MergeRequest] = None
                  ) -> BenchReport:
    """One report of every row of ``paths`` (same device and metric, all trained); each row
    keeps its ``zoo``, a student name shared by two zoos becomes ``zoo/student``."""
    reps = [load_report(p) for p in paths]
    for p, r in zip(paths, reps):
        if r.untrained:
            raise ReportError(f"{p}: a plan of untrained students has no accuracy; it is "
                              "never merged with trained zoos")
    for key in ("device_id", "metric"):
        values = {getattr(r, key) for r in reps}
        if len(values) > 1:
            raise ReportError(f"reports of different {key}s cannot be merged: "
                              f"{', '.join(sorted(map(str, values)))}")
    names = [s.name for r in reps for s in r.students]
    clash = {n for n in names if names.count(n) > 1}
    rows, students = [], []
    for r in reps:
        rename = {s.name: (f"{r.zoo}/{s.name}" if s.name in clash else s.name)
                  for s in r.students}
        students += [dataclasses.replace(s, name=rename[s.name], zoo=r.zoo) for s in r.students]
        rows += [dataclasses.replace(row, student=rename.get(row.student, row.student),
                                     zoo=r.zoo) for row in r.rows]
    first = reps[0]
    return BenchReport(
        report_version=first.report_version, zoo=name, device_id=first.device_id,
        device=first.device, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        command=(request or MergeRequest.build(reports=paths, name=name)).command(),
        metric=first.metric, flip_test=all(r.flip_test for r in reps), timing=first.timing,
        students=students, rows=rows, wall_s=sum(r.wall_s for r in reps), untrained=False,
        merged_from=[{"zoo": r.zoo, "report": str(p), "sha256": sha256_file(p),
                      "created": r.created, "command": r.command}
                     for p, r in zip(paths, reps)])


@dataclass(frozen=True)
class MergeRequest(Request):
    """Joins bench reports of one device (zoos of any family) into one report, charted and
    picked from like any other."""

    COMMAND: ClassVar[str] = "okdhp bench merge"

    reports: tuple[Path, ...] = option(help="bench report JSON files (two or more)",
                                       positional=True, metavar="REPORT_JSON")
    name: str = option(help="the merged report's name")
    out_root: Path = option(Path("bench/reports"), "where reports go")

    def check(self) -> None:
        if len(self.reports) < 2:
            raise UsageError("merge needs at least two reports")
        if not is_plain_name(self.name):
            raise UsageError(f"--name '{self.name}' must be a plain name (no '/', not '..'): "
                             "the report is written under --out-root/<device>/")


def _run(args: MergeRequest) -> int:
    rep = merge_reports(list(args.reports), args.name, args)
    paths = write_report(rep, args.out_root / rep.device_id)
    for k, path in paths.items():
        print(f"{k}: {path}")
    return 0


main = request_main(MergeRequest, _run)


if __name__ == "__main__":
    run_cli(main)
