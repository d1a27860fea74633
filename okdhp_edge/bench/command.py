"""The bench command's options and what they run: the parser (the one definition of every
option, used by ``okdhp bench`` and by :func:`okdhp_edge.api.bench`), the candidates and
targets they select, and the report they measure (not yet written)."""


from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

from okdhp_edge.bench.candidates import Candidate, bundle_candidates, zoo_candidates
from okdhp_edge.bench.device import device_id, fingerprint
from okdhp_edge.bench.load import POLICIES, LoadMonitor
from okdhp_edge.bench.run import BenchOptions, bench_candidates, cli_command, planned_pairs
from okdhp_edge.bench.timing import TimingConfig
from okdhp_edge.evaluation.uncertainty import MIN_RESAMPLES, N_RESAMPLES
from okdhp_edge.export.quantize import (
    add_recipe_arguments,
    recipe_args,
    recipe_from_args,
)
from okdhp_edge.records import BenchReport, BenchRow
from okdhp_edge.targets import (
    BACKEND_INFO,
    PRECISIONS,
    QUANTIZED,
    default_backends,
    formats_for,
    targets_for,
)
from okdhp_edge.utils.cli import UsageError, count, number
from okdhp_edge.utils.cpu import cpu_has_int8_dot

USAGE = """``okdhp bench [run] --zoo student_zoo/<zoo> [--backends torch,onnxruntime,openvino,
tensorrt,...] [--precisions ...] [--threads N] [--device-name NAME]`` (or ``python -m
okdhp_edge.bench``; ``run`` is the default sub-command)

Exports every student of the zoo, measures latency (engine call and end to end),
throughput, accuracy and parity on each backend and precision, and writes
``bench/reports/<device-id>/<zoo>.json``, ``<zoo>.md`` and ``<zoo>_pareto.png``.

``--plan CONFIG [--plan CONFIG ...] [key=value ...]`` does the same for the students the
configs would train, with random weights (written as one zoo under ``--plan-root``):
latency only, marked untrained.
``merge REPORT.json ... --name NAME`` joins reports of one device (zoos of any family);
``compare REPORT.json ... --out DIR`` charts one zoo across devices; ``calibration --zoo Z``
measures INT8 recipes.
"""

log = logging.getLogger("okdhp_edge.bench")


def _csv(text: Optional[str]) -> Optional[tuple[str, ...]]:
    return tuple(s.strip() for s in text.split(",") if s.strip()) if text else None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m okdhp_edge.bench", description=USAGE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--zoo", type=Path, help="a zoo directory (student_zoo/<zoo>)")
    src.add_argument("--bundles", type=Path, help="a directory written by `zoo export --all`")
    src.add_argument("--plan", type=Path, metavar="CONFIG", action="append",
                     help="bench the untrained students a training config would produce "
                          "(repeat it to plan several configs in one interleaved run)")
    p.add_argument("overrides", nargs="*", help="with --plan: config overrides, section.key=value")
    p.add_argument("--plan-root", type=Path, default=Path("plan_zoo"),
                   help="where --plan writes its untrained students")
    p.add_argument("--backends", default=",".join(default_backends()),
                   help=f"comma list of {', '.join(BACKEND_INFO)} (default: %(default)s)")
    p.add_argument("--precisions", default=None,
                   help=f"comma list of {', '.join(PRECISIONS)} (default: each backend's "
                        f"default targets: {_default_targets()})")
    add_recipe_arguments(p)
    p.add_argument("--students", default=None, help="comma list of student names (default all)")
    p.add_argument("--threads", type=count(0), default=0, help="CPU threads (0: all cores)")
    p.add_argument("--batch", type=count(1), default=8, help="batch for the throughput figure")
    p.add_argument("--device-name", default=None, help="device id to file the report under")
    p.add_argument("--torch-device", choices=("cpu", "cuda"), default="cpu",
                   help="where the PyTorch eager baseline runs (cuda: fp32 / fp16 on the GPU)")
    p.add_argument("--out-root", type=Path, default=Path("bench/reports"))
    p.add_argument("--replace", action="store_true",
                   help="replace the device's report of this zoo even where it measured "
                        "rows this run does not")
    p.add_argument("--min-iters", type=count(1), default=60)
    p.add_argument("--min-time", type=number(0), default=2.0, help="seconds per row, all rounds")
    p.add_argument("--rounds", type=count(1), default=3)
    p.add_argument("--warmup-time", type=number(0), default=TimingConfig.warmup_s, metavar="S",
                   help="seconds of untimed calls before each row is timed (and at least "
                        "--warmup-iters calls)")
    p.add_argument("--warmup-iters", type=count(0), default=TimingConfig.warmup_iters,
                   metavar="N")
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument("--accuracy-max-persons", type=count(0), default=0)
    p.add_argument("--bootstrap", type=count(0), default=N_RESAMPLES, metavar="N",
                   help="resamples of the images (persons for PCKh) behind each accuracy "
                        "interval and each paired difference (0: no intervals)")
    p.add_argument("--flip-test", action="store_true", help="accuracy with flip test")
    p.add_argument("--busy", choices=POLICIES, default="warn",
                   help="other processes busy while timing: wait for a quiet machine, warn "
                        "(flag the rows; default) or refuse (no report)")
    p.add_argument("--busy-wait", type=number(0), default=600.0, metavar="S",
                   help="with --busy wait: the most seconds the whole run waits for a quiet "
                        "machine; then it times without waiting (default %(default)s)")
    p.add_argument("--worker-timeout", type=number(0, above=True), default=900.0, metavar="S",
                   help="the longest one step of a worker may take (a conversion, a load, a "
                        "timing block, the scoring) before it is stopped and its rows failed")
    p.add_argument("--scheduling", action="append", default=[], metavar="KEY=on|off",
                   help="a runtime's thread-waiting setting (allow_spinning: ONNX Runtime; "
                        "cpu_pinning: OpenVINO); default: the measured choice "
                        "(docs/benchmarking.md)")
    return p


def _scheduling(items: list[str]) -> dict[str, bool]:
    """``--scheduling allow_spinning=off`` -> {"allow_spinning": False}, checked against
    the settings the runners have."""
    from okdhp_edge.backends import backend_module

    known = {k for b in BACKEND_INFO for k in backend_module(b).RUNNER.SCHEDULING}
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in known or value not in ("on", "off"):
            raise UsageError(f"--scheduling {item}: expected KEY=on|off with KEY one of "
                             f"{', '.join(sorted(known))}")
        out[key] = value == "on"
    return out


def _default_targets() -> str:
    return "; ".join(f"{b} " + ",".join(t.precision for t in targets_for((b,)))
                     for b in BACKEND_INFO)


def _e2e_sample(c: Candidate):
    """A real image and person box of the candidate's report split (for the e2e scope), read
    by the dataset's own reader (the person's box, its padding taken off again)."""
    import numpy as np

    from okdhp_edge.data.dataset import read_image
    from okdhp_edge.evaluation.datasets import report_dataset

    grey = np.full((480, 640, 3), 127, np.uint8), (200.0, 100.0, 160.0, 300.0)
    if not c.manifest.accuracy.ann:  # an untrained plan: no data named
        return grey
    try:
        rec = report_dataset(c.manifest).records[0]
        w, h = (float(v) / c.manifest.preprocessing.box_padding for v in rec.scale)
        box = (float(rec.center[0]) - w / 2, float(rec.center[1]) - h / 2, w, h)
        return read_image(rec.image_path), box
    except Exception as exc:  # noqa: BLE001
        log.warning("no real image for the end-to-end scope (%s); using a grey one", exc)
        return grey


def _untrained(cands: list[Candidate]) -> bool:
    """Whether the candidates are a plan's untrained students (all of them, or none)."""
    flags = {c.manifest.untrained for c in cands}
    if len(flags) > 1:
        raise UsageError("untrained (plan) and trained students cannot be benched together")
    return flags.pop()


def _targets(args: argparse.Namespace) -> tuple[tuple, Optional[list[str]], list, Any]:
    """(backends, precisions, targets, quantization recipe) asked for on the command line."""
    backends, precisions = _csv(args.backends) or (), _csv(args.precisions)
    bad = [p for p in precisions or () if p not in PRECISIONS]
    if bad:
        raise UsageError(f"unknown precision '{bad[0]}'; expected some of "
                         f"{', '.join(PRECISIONS)}")
    targets, recipe = targets_for(backends, precisions), recipe_from_args(args)
    if any(t.quantized for t in targets):
        recipe.check_honoured({t.backend for t in targets if t.quantized})
    if (any(t.quantized and "overflow_fix" in BACKEND_INFO[t.backend].recipe_fields
            for t in targets)
            and recipe.overflow_fix == "first_layer" and not cpu_has_int8_dot()):
        log.info("this CPU has no VNNI: its int8 kernels can saturate; "
                 "--int8-overflow-fix enable cut OpenVINO INT8's AP loss on the "
                 "reference zoo here (docs/int8.md)")
    return backends, precisions, targets, recipe


def _candidates(args: argparse.Namespace, targets: list, recipe: Any,
                backends: tuple) -> tuple[list, str, tuple]:
    """(candidates, zoo name, backends) from --zoo, --plan (an untrained zoo written first)
    or --bundles (no torch: the backends whose runners need it are dropped)."""
    if args.overrides and not args.plan:
        raise UsageError(f"'{args.overrides[0]}': config overrides go with --plan only")
    if args.plan:
        from okdhp_edge.plan import write_plan_zoo

        try:
            args.zoo = write_plan_zoo(args.plan, args.overrides, args.plan_root)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.zoo:
        formats = formats_for(targets, throughput=args.batch > 1)
        cands = zoo_candidates(args.zoo, _csv(args.students), formats, recipe,
                               args.worker_timeout)
        return cands, args.zoo.resolve().name, backends
    cands, zoo_name = bundle_candidates(args.bundles, _csv(args.students))
    return cands, zoo_name, tuple(b for b in backends if BACKEND_INFO[b].torch_free) or backends


def _row_command(args: argparse.Namespace, threads: int, recipe: Any) -> Any:
    """The command that re-measures one row alone."""
    src = ["--zoo", str(args.zoo)] if args.zoo else ["--bundles", str(args.bundles)]

    def command_of(row: BenchRow) -> str:
        extra = ["--students", row.student, "--backends", row.backend, "--precisions",
                 row.precision, "--threads", str(threads), "--batch", str(args.batch)]
        if args.device_name:
            extra += ["--device-name", args.device_name]
        if args.torch_device != "cpu":
            extra += ["--torch-device", args.torch_device]
        if row.precision in QUANTIZED:
            extra += recipe_args(recipe)
        return cli_command(src + extra)

    return command_of


def _other_training(old: BenchReport, cands: list[Candidate]) -> Optional[str]:
    """The first student whose weights differ from those the report measured (its sha256
    where both record one, else its manifest accuracy): the report is of another training
    of this zoo, and nothing in it describes these students."""
    now = {c.name: c.manifest for c in cands}
    for entry in old.students:
        man = now.get(entry.get("name"))
        if man is None:
            continue
        if entry.get("weights_sha256") and man.weights.sha256:
            if entry["weights_sha256"] != man.weights.sha256:
                return man.name
        elif entry.get("accuracy_torch_manifest") != man.accuracy.value:
            return man.name
    return None


def _keep_a_fuller_report(args: argparse.Namespace, zoo: str, planned: set, device: str,
                          cands: list[Candidate]) -> set:
    """Refuse, before measuring, to replace a report holding measured rows this run does
    not plan (a re-bench of one student would drop the others) unless ``--replace``; a
    report of another training of the zoo (retrained students) is replaced. Returns the
    rows the report to be replaced measured (:func:`_keep_measured_rows` checks them)."""
    from okdhp_edge.bench.report import load_report
    from okdhp_edge.errors import ReportError

    path = args.out_root / device / f"{zoo}.json"
    if args.replace or not path.is_file():
        return set()
    try:
        old = load_report(path)
    except ReportError:
        return set()  # unreadable: nothing to keep
    retrained = _other_training(old, cands)
    if retrained:
        log.info("%s measured another training of zoo '%s' (student %s differs): replacing "
                 "it", path, zoo, retrained)
        return set()
    measured = {(r.student, r.backend, r.precision) for r in old.rows if r.status == "ok"}
    lost = sorted(measured - planned)
    if lost:
        raise UsageError(f"{path} holds {len(lost)} measured row(s) this run would drop ("
                         + _first_few([f"{s} {b} {p}" for s, b, p in lost], ", ")
                         + "): bench them too, write elsewhere (--out-root / --device-name) "
                         "or pass --replace")
    return measured


def _first_few(items: list[str], sep: str, n: int = 3) -> str:
    """The first ``n`` of ``items`` joined by ``sep``, with ``, ...`` when there are more."""
    return sep.join(items[:n]) + (", ..." if len(items) > n else "")


def _keep_measured_rows(rows: list[BenchRow], measured: set) -> None:
    """Refuse, after measuring, to replace rows the earlier report measured with rows that
    could not be measured now (a backend gone, a conversion that fails today): the report
    would hold less than it had."""
    turned = [r for r in rows if (r.student, r.backend, r.precision) in measured
              and r.status != "ok"]
    if turned:
        raise UsageError(
            f"{len(turned)} row(s) the earlier report measured could not be measured now ("
            + _first_few([f"{r.student} {r.backend} {r.precision}: {r.reason}"
                          for r in turned], "; ")
            + "), so no report was written (the earlier one stays as it was): fix that, "
            "write elsewhere (--out-root / --device-name) or pass --replace")


def run_bench(args: argparse.Namespace, argv: list[str]) -> BenchReport:
    """Measure what the command line asks for; the report (not yet written)."""
    if args.bootstrap != 0 and not MIN_RESAMPLES <= args.bootstrap <= 100_000:
        raise UsageError(f"--bootstrap {args.bootstrap}: give 0 (no intervals) or "
                         f"{MIN_RESAMPLES}..100000 resamples")
    backends, precisions, targets, recipe = _targets(args)
    threads = args.threads or len(os.sched_getaffinity(0))
    cands, zoo_name, backends = _candidates(args, targets, recipe, backends)
    untrained = _untrained(cands)
    img, box = _e2e_sample(cands[0])
    opts = BenchOptions(
        backends=backends, precisions=precisions, threads=threads, batch=args.batch,
        timing=TimingConfig(min_iters=args.min_iters, min_time_s=args.min_time,
                            rounds=args.rounds, warmup_s=args.warmup_time,
                            warmup_iters=args.warmup_iters),
        accuracy=not (args.no_accuracy or untrained),
        accuracy_max_persons=args.accuracy_max_persons, bootstrap=args.bootstrap,
        busy=args.busy, scheduling=_scheduling(args.scheduling),
        flip_test=args.flip_test, e2e_image=img, e2e_box=box, torch_device=args.torch_device,
        worker_timeout_s=args.worker_timeout)
    fp = fingerprint(threads)
    device = device_id(fp, args.device_name)
    measured = _keep_a_fuller_report(args, zoo_name, {(c.name, b, p) for c in cands
                                                      for b, p in planned_pairs(opts)},
                                     device, cands)
    t0 = time.time()
    monitor = LoadMonitor(args.busy, max_wait_s=args.busy_wait)
    rows = bench_candidates(cands, opts, _row_command(args, threads, recipe), monitor=monitor)
    busy_rows = _say_what_was_busy(rows, monitor)
    if not any(r.status == "ok" for r in rows):  # a report of nothing replaces none
        reasons = sorted({f"{r.backend} {r.precision}: {r.reason}" for r in rows})
        raise UsageError("nothing could be measured, so no report was written (an earlier "
                         "one stays as it was): " + "; ".join(reasons))
    _keep_measured_rows(rows, measured)
    metric = next((c.manifest.accuracy.metric for c in cands), "accuracy")
    return BenchReport(
        report_version=BenchReport.VERSION, zoo=zoo_name,
        device_id=device, device=fp,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"), command=cli_command(argv), metric=metric,
        flip_test=bool(args.flip_test), untrained=untrained,
        timing={"warmup_iters": opts.timing.warmup_iters, "warmup_s": opts.timing.warmup_s,
                "min_iters": opts.timing.min_iters, "min_time_s": opts.timing.min_time_s,
                "rounds": opts.timing.rounds, "interleaved": True, "batch_latency": 1,
                "batch_throughput": args.batch},
        students=[{"name": c.name, "params": c.manifest.params, "macs": c.manifest.macs,
                   "accuracy_torch_manifest": c.manifest.accuracy.value,
                   "weights_sha256": c.manifest.weights.sha256} for c in cands],
        quantization=recipe.as_dict() if any(t.quantized for t in targets) else None,
        rows=rows, wall_s=round(time.time() - t0, 1), load=monitor.record(busy_rows))


def _say_what_was_busy(rows: list[BenchRow], monitor: LoadMonitor) -> int:
    """One warning line when rows were timed under load; their number."""
    busy = [r for r in rows if any(s.busy for s in r.latency_ms.values())]
    if busy:
        worst = max(s.others_cores_max or 0.0 for r in busy for s in r.latency_ms.values())
        log.warning("%d of %d rows were timed while %s; their medians are flagged in the "
                    "report (rerun on a quiet machine, or with --busy wait)", len(busy),
                    len(rows), monitor.culprit_text(worst))
    return len(busy)


def bench_argv(base: list[str], options: dict[str, Any]) -> tuple[argparse.Namespace, list[str]]:
    """Parsed bench options from ``base`` flags plus ``options`` by their Python names
    (``min_time=1.0``, ``backends="torch,openvino"``, ``flip_test=True``); an unknown name
    is refused with the closest valid one."""
    from okdhp_edge.schema import closest

    actions = {a.dest: a for a in parser()._actions if a.option_strings}
    argv = list(base)
    for name, value in options.items():
        if name not in actions:
            raise UsageError(f"unknown bench option '{name}'; did you mean "
                             f"'{closest(name, list(actions))}'?")
        flag = actions[name].option_strings[-1]
        if isinstance(actions[name], argparse._StoreTrueAction):
            argv += [flag] if value else []
        elif value is not None:
            argv += [flag, ",".join(map(str, value)) if isinstance(value, (list, tuple))
                     else str(value)]
    return parser().parse_args(argv), argv


def measure_and_write(args: argparse.Namespace, argv: list[str]
                      ) -> tuple[BenchReport, dict[str, Path]]:
    """Measure what ``args`` ask for and write the report set under
    ``out_root/<device-id>/`` (the folder checked writable before measuring)."""
    from okdhp_edge.bench.report import write_report
    from okdhp_edge.utils.io import check_writable

    check_writable(args.out_root)  # before the measuring, not after it
    report = run_bench(args, argv)
    return report, write_report(report, args.out_root / report.device_id)


def main(argv: Optional[list[str]] = None) -> int:
    """``okdhp bench run``: measure, write the report set, print where it is."""
    import sys

    from okdhp_edge.utils.cli import setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    setup_logging()
    _, paths = measure_and_write(args, argv)
    for k, path in paths.items():
        print(f"{k}: {path}")
    return 0
