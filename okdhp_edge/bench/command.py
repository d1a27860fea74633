"""The bench command's options and what they run: the parser (the one definition of every
option, used by ``okdhp bench`` and by :func:`okdhp_edge.api.bench`), the candidates and
targets they select, and the report they measure (not yet written)."""


from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from okdhp_edge.backends.recipe import ALWAYS_SPELLED, QuantRecipe
from okdhp_edge.bench.candidates import Candidate, bundle_candidates, zoo_candidates
from okdhp_edge.bench.device import device_id, fingerprint
from okdhp_edge.bench.load import POLICIES, LoadMonitor
from okdhp_edge.bench.report import decoder_defaults, decoder_lines
from okdhp_edge.bench.run import BenchOptions, bench_candidates, planned_pairs
from okdhp_edge.bench.timing import TimingConfig
from okdhp_edge.errors import QuantizationError
from okdhp_edge.evaluation.uncertainty import MIN_RESAMPLES, N_RESAMPLES
from okdhp_edge.grammar import Request, option
from okdhp_edge.records import BenchReport, BenchRow, BenchStudent
from okdhp_edge.targets import (
    BACKEND_INFO,
    DECODER_FORMS,
    PRECISIONS,
    QUANTIZED,
    default_backends,
    targets_for,
)
from okdhp_edge.utils.board import choose_cpus, this_board
from okdhp_edge.utils.cli import UsageError, request_main
from okdhp_edge.utils.cpu import allowed_cpus

log = logging.getLogger("okdhp_edge.bench")

_SOURCES = ("zoo", "bundles", "plan")


def _default_targets() -> str:
    return "; ".join(f"{b} " + ",".join(t.precision for t in targets_for((b,)))
                     for b in BACKEND_INFO)


@dataclass(frozen=True)
class BenchRequest(Request):
    """Exports every student of the zoo, measures latency (engine call and end to end),
    throughput, accuracy and parity on each backend and precision, and writes
    ``bench/reports/<device-id>/<zoo>.json``, ``<zoo>.md`` and ``<zoo>_pareto.png``.

    One source: ``--zoo`` (a trained zoo), ``--bundles`` (a set written by ``okdhp zoo
    export --all``, measured without torch) or ``--plan CONFIG`` (the students the configs
    would train, with random weights, written as one zoo under ``--plan-root``: latency
    only, marked untrained; ``section.key=value`` overrides follow). Sub-commands: ``okdhp
    bench merge|compare|calibration``."""

    COMMAND: ClassVar[str] = "okdhp bench"

    zoo: Optional[Path] = option(None, "a zoo directory (student_zoo/<zoo>)")
    bundles: Optional[Path] = option(None, "a directory written by `okdhp zoo export --all`")
    fleet: Optional[Path] = option(None, "with --bundles: bench them on every host of this "
                                   "FLEET.yaml over ssh, in parallel, and compare the reports "
                                   "(docs/fleet.md)", metavar="FLEET.yaml")
    plan: tuple[Path, ...] = option((), "bench the untrained students a training config "
                                    "would produce (repeat it to plan several configs in one "
                                    "interleaved run)", repeat=True, metavar="CONFIG")
    overrides: tuple[str, ...] = option((), "with --plan: config overrides, section.key=value",
                                        positional=True, metavar="SECTION.KEY=VALUE")
    plan_root: Path = option(Path("plan_zoo"), "where --plan writes its untrained students")
    backends: tuple[str, ...] = option(default_backends(), "the backends to measure",
                                       choices=tuple(BACKEND_INFO))
    precisions: Optional[tuple[str, ...]] = option(
        None, f"the precisions (default: each backend's default targets: {_default_targets()})",
        choices=PRECISIONS)
    recipe: QuantRecipe = option(factory=QuantRecipe, help="INT8 (precision int8): "
                                 "calibrated on the training split")
    students: Optional[tuple[str, ...]] = option(None, "student names (default all)")
    threads: int = option(0, "CPU threads (0: one per core of --cores)", minimum=0)
    decoder: str = option("auto", "a light student's decoder in its files: auto (each "
                          "target's measured choice, targets.TARGETS), transposed, "
                          "subpixel, or both (both forms of every light student timed in one "
                          "interleaved run; the report says which each backend keeps)",
                          choices=("auto", "both", *DECODER_FORMS))
    cores: str = option("big", "the CPUs the rows run on: big (the fastest cluster of a "
                        "big.LITTLE chip; every core of a one-cluster CPU), little, all, or "
                        "CPU numbers such as 4-7 or 0,2", metavar="big|little|all|LIST")
    batch: int = option(8, "batch for the throughput figure", minimum=1)
    device_name: Optional[str] = option(None, "device id to file the report under")
    torch_device: str = option("cpu", "where the PyTorch eager baseline runs (cuda: fp32 / "
                               "fp16 on the GPU)", choices=("cpu", "cuda"))
    out_root: Path = option(Path("bench/reports"), "where reports go (<out_root>/<device-id>/)")
    replace: bool = option(False, "replace the device's report of this zoo even where it "
                           "measured rows this run does not")
    min_iters: int = option(TimingConfig.min_iters, "timed calls per row, all rounds",
                            minimum=1)
    min_time: float = option(TimingConfig.min_time_s, "seconds per row, all rounds", minimum=0)
    rounds: int = option(TimingConfig.rounds, "interleaved timing rounds", minimum=1)
    warmup_time: float = option(TimingConfig.warmup_s, "seconds of untimed calls before each "
                                "row is timed (and at least warmup_iters calls)", minimum=0)
    warmup_iters: int = option(TimingConfig.warmup_iters, "untimed calls before timing",
                               minimum=0)
    accuracy: bool = option(True, "score each row on the report split (--no-accuracy: "
                            "latency only)")
    accuracy_max_persons: int = option(0, "score at most this many persons (0: all)",
                                       minimum=0)
    bootstrap: int = option(N_RESAMPLES, "resamples of the images (persons for PCKh) behind "
                            "each accuracy interval and paired difference (0: no intervals)",
                            minimum=0, maximum=100_000)
    flip_test: bool = option(False, "accuracy with flip test")
    busy: str = option("warn", "other processes busy while timing: wait for a quiet machine, "
                       "warn (flag the rows) or refuse (no report)", choices=POLICIES)
    busy_wait: float = option(600.0, "with busy wait: the most seconds the whole run waits "
                              "for a quiet machine; then it times without waiting", minimum=0)
    worker_timeout: float = option(900.0, "the longest one step of a worker may take (a "
                                   "conversion, a load, a timing block, the scoring) before "
                                   "it is stopped and its rows failed", minimum=0, above=True)
    scheduling: tuple[str, ...] = option(
        (), "a runtime's thread-waiting setting, KEY=on|off (allow_spinning: ONNX Runtime; "
        "cpu_pinning: OpenVINO); default: the measured choice (docs/benchmarking.md)",
        repeat=True, metavar="KEY=on|off")

    def check(self) -> None:
        given = [s for s in _SOURCES if getattr(self, s)]
        if len(given) != 1:
            raise UsageError(f"{self.COMMAND} needs exactly one of --zoo, --bundles, --plan "
                             f"(got {', '.join('--' + s for s in given) or 'none'})")
        if self.fleet and not self.bundles:
            raise UsageError("fleet (--fleet): give the bundle set the hosts bench with "
                             "--bundles (okdhp zoo export --all makes one)")
        if self.overrides and not self.plan:
            raise UsageError(f"'{self.overrides[0]}': config overrides go with --plan only")
        if self.bootstrap and self.bootstrap < MIN_RESAMPLES:
            raise UsageError(f"bootstrap (--bootstrap) {self.bootstrap}: give 0 (no "
                             f"intervals) or {MIN_RESAMPLES}..100000 resamples")
        _scheduling(self.scheduling)
        cpus = self.cpus()
        if self.threads > len(cpus):
            raise UsageError(f"threads (--threads) {self.threads}: this machine has "
                             f"{len(cpus)} core(s) for this process under --cores "
                             f"{self.cores} (0: one thread per core)")

    def cpus(self) -> tuple[int, ...]:
        """The CPU numbers ``--cores`` names on this machine."""
        try:
            return choose_cpus(self.cores, this_board(), allowed_cpus())
        except ValueError as exc:
            raise UsageError(f"cores (--cores) {self.cores}: {exc}") from None


def _scheduling(items: tuple[str, ...]) -> dict[str, bool]:
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


def _targets(req: BenchRequest) -> list:
    """The targets asked for (the recipe checked against the backends that quantize)."""
    targets = targets_for(req.backends, req.precisions)
    quantizing = {t.backend for t in targets if t.quantized}
    if quantizing:
        try:
            req.recipe.check_honoured(quantizing)
        except QuantizationError as exc:
            raise UsageError(str(exc)) from None
        for line in req.recipe.advice(quantizing):
            log.info("%s", line)
    return targets


def _source(req: BenchRequest) -> BenchRequest:
    """The request with its students on disk: a plan's untrained zoo written first and
    named as ``zoo`` (what the rows' commands re-measure)."""
    if not req.plan:
        return req
    from okdhp_edge.plan import write_plan_zoo

    try:
        zoo = write_plan_zoo(list(req.plan), list(req.overrides), req.plan_root)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return dataclasses.replace(req, zoo=zoo, plan=(), overrides=())


def _candidates(req: BenchRequest, targets: list) -> tuple[list, str, tuple]:
    """(candidates, zoo name, backends) of a zoo, or of bundles (no torch: the backends
    whose runners need it are dropped)."""
    if req.zoo:
        cands = zoo_candidates(req.zoo, req.students, targets, req.recipe, req.worker_timeout,
                               req.decoder, throughput=req.batch > 1)
        return cands, req.zoo.resolve().name, req.backends
    cands, zoo_name = bundle_candidates(req.bundles, req.students)
    if req.backends != default_backends():  # named: each gets its rows (or says why not)
        return cands, zoo_name, req.backends
    free = tuple(b for b in req.backends if BACKEND_INFO[b].torch_free)
    log.info("bundles: benched on the torch-free runtimes (%s); name others with --backends",
             ", ".join(free))
    return cands, zoo_name, free


def _row_command(req: BenchRequest, threads: int) -> Any:
    """The command that re-measures one row alone (a quantized row spells its calibration
    out; another row leaves the recipe out)."""

    def command_of(row: BenchRow) -> str:
        quantized = row.precision in QUANTIZED
        one = dataclasses.replace(
            req, students=(row.student,), backends=(row.backend,), precisions=(row.precision,),
            threads=threads, recipe=req.recipe if quantized else QuantRecipe(),
            decoder=row.decoder or req.decoder)
        return one.command(spell=("batch",) + (ALWAYS_SPELLED if quantized else ()))

    return command_of


def _other_training(old: BenchReport, cands: list[Candidate]) -> Optional[str]:
    """The first student whose weights differ from those the report measured (its sha256
    where both record one, else its manifest accuracy): the report is of another training
    of this zoo, and nothing in it describes these students."""
    now = {c.name: c.manifest for c in cands}
    for entry in old.students:
        man = now.get(entry.name)
        if man is None:
            continue
        if entry.weights_sha256 and man.weights.sha256:
            if entry.weights_sha256 != man.weights.sha256:
                return man.name
        elif entry.accuracy_torch_manifest != man.accuracy.value:
            return man.name
    return None


def _keep_a_fuller_report(req: BenchRequest, zoo: str, planned: set, device: str,
                          cands: list[Candidate]) -> set:
    """Refuse, before measuring, to replace a report holding measured rows this run does
    not plan (a re-bench of one student would drop the others) unless ``--replace``; a
    report of another training of the zoo (retrained students) is replaced. Returns the
    rows the report to be replaced measured (:func:`_keep_measured_rows` checks them)."""
    from okdhp_edge.bench.report import load_report
    from okdhp_edge.errors import ReportError

    path = req.out_root / device / f"{zoo}.json"
    if req.replace or not path.is_file():
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


def run_bench(req: BenchRequest) -> BenchReport:
    """Measure what the request asks for; the report (not yet written)."""
    targets = _targets(req)
    cpus = req.cpus()
    threads = req.threads or len(cpus)
    req = _source(req)
    cands, zoo_name, backends = _candidates(req, targets)
    untrained = _untrained(cands)
    img, box = _e2e_sample(cands[0])
    opts = BenchOptions(
        backends=backends, precisions=req.precisions, threads=threads, cpus=cpus,
        batch=req.batch,
        timing=TimingConfig(min_iters=req.min_iters, min_time_s=req.min_time,
                            rounds=req.rounds, warmup_s=req.warmup_time,
                            warmup_iters=req.warmup_iters),
        accuracy=req.accuracy and not untrained,
        accuracy_max_persons=req.accuracy_max_persons, bootstrap=req.bootstrap,
        busy=req.busy, scheduling=_scheduling(req.scheduling),
        flip_test=req.flip_test, e2e_image=img, e2e_box=box, torch_device=req.torch_device,
        worker_timeout_s=req.worker_timeout, decoder=req.decoder)
    fp = fingerprint(threads, cpus)
    device = device_id(fp, req.device_name)
    measured = _keep_a_fuller_report(req, zoo_name, {(c.name, b, p) for c in cands
                                                     for b, p in planned_pairs(opts)},
                                     device, cands)
    t0 = time.time()
    monitor = LoadMonitor(req.busy, max_wait_s=req.busy_wait)
    rows = bench_candidates(cands, opts, _row_command(req, threads), monitor=monitor)
    busy_rows = _say_what_was_busy(rows, monitor)
    for line in decoder_lines(rows, decoder_defaults(rows, _works(cands)) or {}):
        log.info("decoder forms: %s", line)
    if not any(r.status == "ok" for r in rows):  # a report of nothing replaces none
        reasons = sorted({f"{r.backend} {r.precision}: {r.reason}" for r in rows})
        raise UsageError("nothing could be measured, so no report was written (an earlier "
                         "one stays as it was): " + "; ".join(reasons))
    _keep_measured_rows(rows, measured)
    return _report(req, opts, cands, rows, zoo_name, device, fp, untrained, targets,
                   round(time.time() - t0, 1), monitor.record(busy_rows))


def _report(req: BenchRequest, opts: BenchOptions, cands: list[Candidate],
            rows: list[BenchRow], zoo_name: str, device: str, fp: dict, untrained: bool,
            targets: list, wall_s: float, load: Any) -> BenchReport:
    metric = next((c.manifest.accuracy.metric for c in cands), "accuracy")
    return BenchReport(
        report_version=BenchReport.VERSION, zoo=zoo_name,
        device_id=device, device=fp,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"), command=req.command(), metric=metric,
        flip_test=req.flip_test, untrained=untrained,
        timing={"warmup_iters": opts.timing.warmup_iters, "warmup_s": opts.timing.warmup_s,
                "min_iters": opts.timing.min_iters, "min_time_s": opts.timing.min_time_s,
                "rounds": opts.timing.rounds, "interleaved": True, "batch_latency": 1,
                "batch_throughput": req.batch},
        students=[BenchStudent(c.name, c.manifest.params, c.manifest.macs,
                               c.manifest.accuracy.value, c.manifest.weights.sha256 or None)
                  for c in cands],
        quantization=req.recipe.as_dict() if any(t.quantized for t in targets) else None,
        rows=rows, wall_s=wall_s, load=load,
        decoder_defaults=decoder_defaults(rows, _works(cands)))


def _works(cands: list[Candidate]) -> dict[str, Optional[int]]:
    """Each student's decoder work, what a target's size rule reads."""
    return {c.name: c.work for c in cands}


def _say_what_was_busy(rows: list[BenchRow], monitor: LoadMonitor) -> int:
    """One warning line when rows were timed under load; their number."""
    busy = [r for r in rows if any(s.busy for s in r.latency_ms.values())]
    if busy:
        worst = max(s.others_cores_max or 0.0 for r in busy for s in r.latency_ms.values())
        log.warning("%d of %d rows were timed while %s; their medians are flagged in the "
                    "report (rerun on a quiet machine, or with --busy wait)", len(busy),
                    len(rows), monitor.culprit_text(worst))
    return len(busy)


def measure_and_write(req: BenchRequest) -> tuple[BenchReport, dict[str, Path]]:
    """Measure what ``req`` asks for and write the report set under
    ``out_root/<device-id>/`` (the folder checked writable before measuring)."""
    from okdhp_edge.bench.report import write_report
    from okdhp_edge.utils.io import check_writable

    check_writable(req.out_root)  # before the measuring, not after it
    report = run_bench(req)
    return report, write_report(report, req.out_root / report.device_id)


def _run(req: BenchRequest) -> int:
    if req.fleet:
        from okdhp_edge.bench.fleet import fleet_lines, run_fleet

        run = run_fleet(req)
        print("\n".join(fleet_lines(run)))
        print(f"fleet: {req.out_root / 'fleet'}")
        return 0 if all(h.status == "ok" for h in run.hosts) else 1
    _, paths = measure_and_write(req)
    for k, path in paths.items():
        print(f"{k}: {path}")
    return 0


main = request_main(BenchRequest, _run)  # okdhp bench run: measure, write, say where
