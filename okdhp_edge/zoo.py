"""``python -m okdhp_edge.zoo {list,pick,export}``: browse a zoo with its measured numbers,
pick the student to deploy under a latency budget, export deployable bundles.

    zoo list [--root student_zoo] [--reports bench/reports]
    zoo pick --zoo Z (--device DEVICE_ID | --report FILE) --max-latency-ms X
             [--stat median|p90|p99] [--scope engine|e2e] [--min-accuracy Y]
             [--backend B] [--precision P] [--max-ap-drop X] [--json]
    zoo export --zoo Z --student NAME --backend B [--precision P] --out DIR [--calib-...]
    zoo export --zoo Z --all [--backends B,...] --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Optional

from okdhp_edge.bench.decide import Decision, pick, pick_lines
from okdhp_edge.bench.report import latency_of, load_report
from okdhp_edge.errors import ReportError
from okdhp_edge.export.quantize import add_recipe_arguments
from okdhp_edge.manifest import load_zoo_manifest, zoo_students
from okdhp_edge.records import BenchReport, BenchRow
from okdhp_edge.targets import default_backends
from okdhp_edge.utils.cli import UsageError, console_entry, number, run_cli, setup_logging

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


def cmd_list(args: argparse.Namespace) -> int:
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


def _report_path(args: argparse.Namespace) -> Path:
    if args.report:
        return args.report
    if not (args.zoo and args.device):
        raise UsageError("zoo pick needs --report FILE, or --zoo and --device")
    zoo = load_zoo_manifest(args.zoo).name
    path = args.reports / args.device / f"{zoo}.json"
    if not path.is_file():
        have = sorted(p.parent.name for p in args.reports.glob(f"*/{zoo}.json"))
        raise UsageError(f"no report for zoo '{zoo}' on device '{args.device}' "
                         f"(have: {', '.join(have) or 'none'}); run "
                         f"`python -m okdhp_edge.bench --zoo {args.zoo}` on that device")
    return path


def cmd_pick(args: argparse.Namespace) -> int:
    path = _report_path(args)
    rep = load_report(path)
    if rep.untrained:
        raise UsageError(f"{path}: a plan of untrained students (bench --plan) has latencies "
                         "but no accuracy; pick from a trained zoo's report")
    d = pick(rep.rows, args.max_latency_ms, args.stat, args.scope, args.min_accuracy,
             args.backend, args.precision, args.max_ap_drop, args.ap_tolerance,
             args.max_memory_mb)
    if args.json:
        print(json.dumps(_pick_json(rep, d, args), indent=2))
    else:
        print("\n".join(pick_lines(rep, d, args.max_latency_ms, args.stat, args.scope)))
    return 0 if d.choice else 1


def _pick_json(rep: BenchReport, d: Decision, args: argparse.Namespace) -> dict:
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


def cmd_export(args: argparse.Namespace) -> int:
    from okdhp_edge.export.quantize import recipe_from_args

    recipe = recipe_from_args(args)
    if args.all:
        from okdhp_edge.export.bundles import export_all

        out = export_all(args.zoo, args.out, tuple(args.backends.split(",")),
                         tuple(args.precisions.split(",")) if args.precisions else None, recipe,
                         args.allow_parity_failure,
                         tuple(args.students.split(",")) if args.students else None)
        print(f"bundles: {out}")
        return 0
    if not args.student or not args.backend:
        raise UsageError("zoo export needs --student and --backend (or --all)")
    students = {m.name: d for d, m in zoo_students(args.zoo)}
    if args.student not in students:
        raise UsageError(f"no student '{args.student}' in {args.zoo} "
                         f"(have: {', '.join(students)})")
    from okdhp_edge.export.bundles import export_bundle

    out = export_bundle(students[args.student] / "student.yaml", args.backend, args.precision,
                        args.out, recipe=recipe, allow_parity_failure=args.allow_parity_failure)
    print(f"bundle: {out}")
    return 0


# --------------------------------------------------------------------------------- cli


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m okdhp_edge.zoo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="students with their measured numbers")
    ls.add_argument("--zoo", type=Path)
    ls.add_argument("--root", type=Path, default=Path("student_zoo"))
    ls.add_argument("--reports", type=Path, default=Path("bench/reports"))
    pk = sub.add_parser("pick", help="the most accurate student within a latency budget")
    pk.add_argument("--zoo", type=Path)
    pk.add_argument("--device", help="a device id under --reports")
    pk.add_argument("--report", type=Path, help="a bench report JSON (any device)")
    pk.add_argument("--reports", type=Path, default=Path("bench/reports"))
    pk.add_argument("--max-latency-ms", type=number(0, above=True), required=True)
    pk.add_argument("--stat", choices=("median", "p90", "p99"), default="median")
    pk.add_argument("--scope", choices=("engine", "e2e"), default="engine")
    pk.add_argument("--min-accuracy", type=number())
    pk.add_argument("--backend")
    pk.add_argument("--precision", help="restrict to one precision (e.g. int8)")
    pk.add_argument("--max-ap-drop", type=number(0), metavar="X",
                    help="at most X accuracy lost against the same student in PyTorch fp32, "
                         "judged on the far end of the paired 95%% interval")
    pk.add_argument("--ap-tolerance", type=number(0), default=0.0, metavar="T",
                    help="a faster row stands in for the most accurate one when their paired "
                         "interval reaches -T (default 0: the interval contains 0)")
    pk.add_argument("--max-memory-mb", type=number(0, above=True), metavar="MB",
                    help="only rows whose model adds at most MB to its runtime's resident "
                         "memory (measured per row in a worker of its own)")
    pk.add_argument("--json", action="store_true")
    ex = sub.add_parser("export", help="write deployable bundles")
    ex.add_argument("--zoo", type=Path, required=True)
    ex.add_argument("--student")
    ex.add_argument("--backend")
    ex.add_argument("--precision", default="fp32")
    ex.add_argument("--all", action="store_true", help="every student, for --backends")
    ex.add_argument("--backends", default=",".join(default_backends(bundle=True)),
                    help="with --all (default: %(default)s)")
    ex.add_argument("--precisions", default=None)
    ex.add_argument("--students", default=None,
                    help="with --all: a comma list of the students to export (default all)")
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument("--allow-parity-failure", action="store_true",
                    help="bundle a file whose parity check against PyTorch fp32 failed "
                         "(recorded in bundle.yaml)")
    add_recipe_arguments(ex)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging()
    return {"list": cmd_list, "pick": cmd_pick, "export": cmd_export}[args.cmd](args)


cli = console_entry(main)  # the console script: as python -m, one-line errors


if __name__ == "__main__":
    run_cli(main)
