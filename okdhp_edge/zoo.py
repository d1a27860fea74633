"""``okdhp zoo list|pick|export``: browse a zoo with its measured numbers, pick the student
to deploy under a latency budget, export deployable bundles. Each sub-command is a typed
request (:class:`ListRequest`, :class:`~okdhp_edge.bench.decide.PickRequest`,
:class:`ExportRequest`)."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from okdhp_edge.backends.recipe import QuantRecipe
from okdhp_edge.bench.decide import Decision, PickRequest, pick_lines
from okdhp_edge.bench.report import latency_of, load_report
from okdhp_edge.errors import ReportError
from okdhp_edge.grammar import Request, option
from okdhp_edge.manifest import load_zoo_manifest, zoo_students
from okdhp_edge.records import BenchReport, BenchRow
from okdhp_edge.targets import BACKEND_INFO, DECODER_FORMS, PRECISIONS, default_backends
from okdhp_edge.utils.cli import Command, UsageError, console_entry, dispatch, request_main, run_cli

log = logging.getLogger("okdhp_edge.zoo")


# ------------------------------------------------------------------------------- list


def _reports_for(zoo: str, root: Path) -> dict[str, BenchReport]:
    out = {}
    for path in sorted(root.glob(f"*/{zoo}.json")):
        try:
            out[path.parent.name] = load_report(path)
        except ReportError as exc:
            log.warning("%s", exc)
    return out


@dataclass(frozen=True)
class ListRequest(Request):
    """The students of each zoo with their size, accuracy and, per device with a report,
    the fastest measured backend (engine median) and the memory its model adds."""

    COMMAND: ClassVar[str] = "okdhp zoo list"

    zoo: Optional[Path] = option(None, "one zoo directory (default: every zoo under --root)")
    root: Path = option(Path("student_zoo"), "where the zoos are")
    reports: Path = option(Path("bench/reports"), "where the devices' reports are")


def cmd_list(args: ListRequest) -> int:
    zoos = [args.zoo] if args.zoo else sorted(p.parent for p in args.root.glob("*/zoo.yaml"))
    if not zoos:
        print(f"no zoo under {args.root}")
        return 0
    for zoo_dir in zoos:
        zoo = load_zoo_manifest(zoo_dir)
        reports = _reports_for(zoo.name, args.reports)
        print(f"zoo {zoo.name} ({zoo_dir}), dataset {zoo.dataset}, run {zoo.run}")
        head = f"  {'student':<12} {'params M':>9} {'GMACs':>7} {'x params':>8} {zoo.metric:>9}"
        print(head + "".join(f"  {d[:36]:>36}" for d in reports))
        for _, man in zoo_students(zoo_dir):
            acc = man.accuracy.value
            line = (f"  {man.name:<12} {man.params / 1e6:9.3f} {man.macs / 1e9:7.3f} "
                    f"{man.compression.params:8.2f} "
                    f"{'-' if acc is None else f'{acc:9.4f}':>9}")
            for rep in reports.values():
                rows = [r for r in rep.rows if r.student == man.name
                        and latency_of(r) is not None]
                best = min(rows, key=latency_of, default=None)
                cell = "-" if best is None else \
                    f"{latency_of(best):.2f} ms {best.backend} {best.precision}" + (
                        f" {best.cost.model_mb:.0f} MB" if best.cost else "")
                line += f"  {cell:>36}"
            print(line)
        if reports:
            print("  (per device: fastest measured backend, engine median, and the memory its "
                  "model adds to the runtime)")
    return 0


# ------------------------------------------------------------------------------- pick


def _report_path(args: PickRequest) -> Path:
    if args.report:
        return args.report
    if not args.zoo:
        raise UsageError("zoo pick needs --report FILE, or --zoo (and --device: default this "
                         "machine)")
    from okdhp_edge.bench.device import this_device_id

    device = args.device or this_device_id()
    zoo = load_zoo_manifest(args.zoo).name
    path = args.reports / device / f"{zoo}.json"
    if not path.is_file():
        have = sorted(p.parent.name for p in args.reports.glob(f"*/{zoo}.json"))
        raise UsageError(f"no report for zoo '{zoo}' on device '{device}' "
                         f"(have: {', '.join(have) or 'none'}); run "
                         f"`okdhp bench --zoo {args.zoo}` on that device or name one of "
                         "those with --device")
    return path


def cmd_pick(args: PickRequest) -> int:
    path = _report_path(args)
    rep = load_report(path)
    d = args.decide_report(rep, str(path))
    if args.json:
        print(json.dumps(_pick_json(rep, d, args), indent=2))
    else:
        print("\n".join(pick_lines(rep, d, args.max_latency_ms, args.stat, args.scope)))
    return 0 if d.choice else 1


def _pick_json(rep: BenchReport, d: Decision, args: PickRequest) -> dict:
    """The pick as JSON: choice, closest, frontier (with its ties), and the row the choice
    is tied with in accuracy, with the paired interval."""
    def brief(r: Optional[BenchRow]) -> Optional[dict]:
        if r is None:
            return None
        return {"student": r.student, "backend": r.backend, "precision": r.precision,
                "latency_ms": latency_of(r, args.stat, args.scope), "stat": args.stat,
                "scope": args.scope, rep.metric: r.accuracy.value,
                f"{rep.metric}_ci95": r.accuracy.ci95, "params": r.params, "macs": r.macs,
                "model_memory_mb": r.cost.model_mb if r.cost else None,
                "peak_memory_mb": r.cost.peak_mb if r.cost else None, "command": r.command}

    tie = None if d.tie is None else {
        "with": brief(d.tie.other), "delta": d.tie.point,
        "delta_ci95": None if d.tie.delta is None else [d.tie.delta.low, d.tie.delta.high]}
    return {"device": rep.device_id, "zoo": rep.zoo, "budget_ms": args.max_latency_ms,
            "choice": brief(d.choice), "tied_with": tie, "closest": brief(d.closest),
            "frontier": [dict(brief(r), tie=d.frontier_ties.get(i))
                         for i, r in enumerate(d.frontier)]}


# ------------------------------------------------------------------------------ export


@dataclass(frozen=True)
class ExportRequest(Request):
    """A deployable bundle of one student (``--student S --backend B``), or of every
    student for each of ``--backends`` (``--all``): the file, its preprocessing and
    decoding, the student's manifest and a parity record, runnable without torch."""

    COMMAND: ClassVar[str] = "okdhp zoo export"

    zoo: Path = option(help="the zoo directory")
    out: Path = option(help="where the bundle (or the bundle set) is written")
    student: Optional[str] = option(None, "the student to export")
    backend: Optional[str] = option(None, "its backend", choices=tuple(BACKEND_INFO))
    precision: str = option("fp32", "its precision", choices=PRECISIONS)
    all: bool = option(False, "every student, for each of --backends")
    backends: tuple[str, ...] = option(default_backends(bundle=True), "with --all: the "
                                       "backends", choices=tuple(BACKEND_INFO))
    precisions: Optional[tuple[str, ...]] = option(None, "with --all: the precisions "
                                                   "(default: each backend's)",
                                                   choices=PRECISIONS)
    students: Optional[tuple[str, ...]] = option(None, "with --all: the students (default "
                                                 "all)")
    allow_parity_failure: bool = option(False, "bundle a file whose parity check against "
                                        "PyTorch fp32 failed (recorded in bundle.yaml)")
    recipe: QuantRecipe = option(factory=QuantRecipe, help="INT8 calibration")
    decoder: str = option("auto", "a light student's decoder in the file: auto (each "
                          "backend's measured choice), transposed or subpixel",
                          choices=("auto", *DECODER_FORMS))

    def check(self) -> None:
        if not self.all and not (self.student and self.backend):
            raise UsageError("zoo export needs --student and --backend (or --all)")


def cmd_export(args: ExportRequest) -> int:
    if args.all:
        from okdhp_edge.export.bundles import export_all

        out = export_all(args.zoo, args.out, args.backends, args.precisions, args.recipe,
                         args.allow_parity_failure, args.students, args.decoder)
        print(f"bundles: {out}")
        return 0
    students = {m.name: d for d, m in zoo_students(args.zoo)}
    if args.student not in students:
        raise UsageError(f"no student '{args.student}' in {args.zoo} "
                         f"(have: {', '.join(students)})")
    from okdhp_edge.export.bundles import export_bundle

    out = export_bundle(students[args.student] / "student.yaml", args.backend, args.precision,
                        args.out, recipe=args.recipe,
                        allow_parity_failure=args.allow_parity_failure, decoder=args.decoder)
    print(f"bundle: {out}")
    return 0


# --------------------------------------------------------------------------------- cli


list_main = request_main(ListRequest, cmd_list)
pick_main = request_main(PickRequest, cmd_pick)
export_main = request_main(ExportRequest, cmd_export)

COMMANDS = {
    "list": Command("okdhp_edge.zoo:list_main", "the students with their measured numbers"),
    "pick": Command("okdhp_edge.zoo:pick_main", "the student to deploy under a latency "
                    "budget, from a bench report"),
    "export": Command("okdhp_edge.zoo:export_main", "deployable, torch-free bundles"),
}


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return dispatch(argv, COMMANDS, "okdhp zoo", __doc__.split(". Each")[0] + ".")


cli = console_entry(main)  # the console script: as python -m, one-line errors


if __name__ == "__main__":
    run_cli(main)
