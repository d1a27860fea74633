"""Bench a zoo (or exported bundles): latency per scope, throughput, accuracy and parity
per (student, backend, precision), measured in interleaved rounds."""

from __future__ import annotations

import dataclasses
import logging
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from okdhp_edge.backends.base import run_one_by_one
from okdhp_edge.bench.candidates import Candidate, forms_wanted
from okdhp_edge.bench.load import LoadMonitor
from okdhp_edge.bench.timing import TimingConfig, interleaved_blocks, summarize
from okdhp_edge.bench.worker import E2ESample, RowService, RowSpec, failure_of
from okdhp_edge.evaluation.uncertainty import N_RESAMPLES, accuracy_fields, paired_delta
from okdhp_edge.records import BenchRow, FormatRecord, LatencyStats, RowAccuracy, StudentManifest
from okdhp_edge.runtime import BackendUnavailable, Runner
from okdhp_edge.targets import (
    BASELINE,
    FORMATS,
    Target,
    UnknownTarget,
    default_backends,
    get_target,
    targets_for,
)
from okdhp_edge.utils.cpu import allowed_cpus
from okdhp_edge.utils.isolate import Worker, WorkerDied, import_path

log = logging.getLogger(__name__)



def _target(row: BenchRow) -> Target:
    return get_target(row.backend, row.precision)


def model_path(c: Candidate, t: Target) -> tuple[Optional[str], str]:
    """(path to load, reason if none) for a target of a candidate."""
    if t.export is None:
        if c.student_yaml is None:
            return None, f"{t.backend} needs the student's weights and torch (bundle mode)"
        return str(c.student_yaml), ""
    entry = c.formats.get(t.export)
    if entry is None:
        return None, f"format {t.export} was not exported"
    if not entry.available:
        return None, entry.reason or f"{t.export} unavailable"
    return str(c.export_dir / entry.file), ""


def _device_for(t: Target, opts: BenchOptions) -> str:
    return opts.torch_device if t.device == "host" else t.device


@dataclass
class BenchOptions:
    backends: tuple[str, ...] = field(default_factory=default_backends)
    precisions: Optional[tuple[str, ...]] = None  # None: each backend's default targets
    threads: int = 0  # 0: all cores
    cpus: tuple[int, ...] = ()  # the CPUs rows run on (their workers' affinity); (): any
    batch: int = 8
    timing: TimingConfig = field(default_factory=TimingConfig)
    accuracy: bool = True
    accuracy_max_persons: int = 0
    bootstrap: int = N_RESAMPLES  # resamples of each accuracy interval (0: none)
    busy: str = "warn"  # wait | warn | refuse: what a busy machine does to the timing
    scheduling: dict[str, bool] = field(default_factory=dict)  # runner thread-waiting
    flip_test: bool = False
    e2e_image: Optional[np.ndarray] = None
    e2e_box: Optional[tuple[float, float, float, float]] = None
    torch_device: str = "cpu"  # cpu | cuda: where the PyTorch eager baseline runs
    # the longest one step of a row's worker may take (load, a timing block, the scoring)
    # before the worker is stopped and its row failed
    worker_timeout_s: float = 900.0
    decoder: str = "auto"  # a light student's decoder form(s): auto | transposed | subpixel | both


def _scheduling(row: BenchRow, opts: BenchOptions) -> dict[str, bool]:
    """The asked thread-waiting settings this row's backend has."""
    from okdhp_edge.backends import backend_module

    known = backend_module(row.backend).RUNNER.SCHEDULING
    return {k: v for k, v in opts.scheduling.items() if k in known}


def planned_pairs(opts: BenchOptions) -> list[tuple[str, str]]:
    """(backend, precision) rows of the bench: each backend's default targets, or every
    asked precision of every backend (one a backend lacks becomes an unavailable row that
    says so; the rest of the bench goes on)."""
    if not opts.precisions:
        return [t.key for t in targets_for(opts.backends)]
    return [(b, p) for b in opts.backends for p in opts.precisions]


def planned_rows(cands: list[Candidate], opts: BenchOptions
                 ) -> list[tuple[Candidate, BenchRow]]:
    """Each student's rows, in its candidates' order: every planned (backend, precision) in
    each decoder form ``opts.decoder`` asks of it (a bundle set: the form it holds)."""
    by_student: dict[str, dict[str, Candidate]] = {}
    for c in cands:
        by_student.setdefault(c.name, {})[c.decoder] = c
    out = []
    for name, mine in by_student.items():
        for b, p in planned_pairs(opts):
            for c in _row_candidates(mine, b, p, opts.decoder):
                man = c.manifest
                out.append((c, BenchRow(name, b, p, params=man.params, macs=man.macs,
                                        decoder=c.decoder if len(c.forms) > 1 else None)))
    return out


def _row_candidates(mine: dict[str, Candidate], backend: str, precision: str, choice: str
                    ) -> list[Candidate]:
    """The candidates (decoder forms) of one student that a (backend, precision) row is
    measured in: the forms asked, else the one whose files hold the target's format."""
    first = next(iter(mine.values()))
    try:
        t = get_target(backend, precision)
    except UnknownTarget:
        return [first]
    wanted = [mine[f] for f in forms_wanted(choice, t, first.forms, first.work) if f in mine]
    if t.export is None:
        return wanted[:1] or [first]
    have = [c for c in wanted if t.export in c.formats]
    return have or [c for c in mine.values() if t.export in c.formats][:1] or wanted[:1] or [first]


def runner_path(backend: str) -> str:
    """The import path of ``backend``'s runner class, which its rows' workers load."""
    from okdhp_edge.backends import backend_module

    return import_path(backend_module(backend).RUNNER)


def _row_spec(c: Candidate, row: BenchRow, opts: BenchOptions) -> RowSpec:
    t = _target(row)
    w, h = c.manifest.preprocessing.input_size
    e2e = None
    if opts.e2e_image is not None and opts.e2e_box is not None:
        fmt = FORMATS.get(t.export or "")
        e2e = E2ESample(opts.e2e_image, opts.e2e_box, fmt.layout if fmt else "NCHW")
    row.cpus = list(opts.cpus) or None
    return RowSpec(runner_path(row.backend), row.backend, row.precision, opts.threads,
                   _device_for(t, opts), (h, w), _scheduling(row, opts), c.manifest, e2e,
                   opts.cpus)


def _fail(row: BenchRow, exc: BaseException, stage: str) -> None:
    """Mark ``row`` failed by ``exc`` in ``stage`` (a worker's end keeps its record)."""
    row.status = "failed"
    if isinstance(exc, WorkerDied):
        row.reason, row.failure = exc.summary(), failure_of(exc)
    else:
        row.reason = f"{type(exc).__name__}: {exc}"
    log.warning("%s failed during %s: %s", row.label, stage, row.reason)


class RowWorkers:
    """The rows' worker processes, one per row; ``close`` ends every one still running."""

    def __init__(self, opts: BenchOptions, bar: Any) -> None:
        self.opts, self.bar = opts, bar
        self.workers: dict[int, Worker] = {}

    def stage(self, row: BenchRow, what: str) -> None:
        """Show ``what`` the worker of ``row`` is doing on the progress bar."""
        self.bar.set_description(f"{what} {row.student}/{row.backend} {row.precision}")

    def call(self, i: int, row: BenchRow, method: str, *args: Any, stage: str) -> Any:
        """``method`` of row ``i``'s worker; None (the row marked failed) where it fails."""
        if row.status != "ok" or i not in self.workers:
            return None
        try:
            return self.workers[i].call(method, *args, stage=stage)
        except Exception as exc:  # noqa: BLE001 - a failing row does not stop the bench
            _fail(row, exc, stage)
            self.close_one(i)
            return None

    def start(self, i: int, c: Candidate, row: BenchRow) -> None:
        """Start row ``i``'s worker, load its file, warm it up and read its cost."""
        try:
            path, reason = model_path(c, _target(row))
            failed = c.failed.get(_target(row).export or "")
        except UnknownTarget as exc:
            path, reason, failed = None, str(exc), None
        if failed is not None:  # its file's converter died
            row.status, row.reason, row.failure = "failed", reason, failed
            return
        if path is None:
            row.available, row.status, row.reason = False, "unavailable", reason
            return
        row.model_file = path
        self.stage(row, "load")
        try:
            self.workers[i] = Worker(import_path(RowService), _row_spec(c, row, self.opts),
                                     name=f"{row.student}-{row.backend}-{row.precision}",
                                     timeout_s=self.opts.worker_timeout_s)
            row.runner = self.workers[i].call("load", path, stage="load")
        except BackendUnavailable as exc:
            row.available, row.status, row.reason = False, "unavailable", str(exc)
            self.close_one(i)
            return
        except Exception as exc:  # noqa: BLE001 - a failing row does not stop the bench
            _fail(row, exc, "load")
            self.close_one(i)
            return
        self.stage(row, "warm-up")
        row.cost = self.call(i, row, "warm_up", "engine", self.opts.timing, stage="warm-up")

    def close_one(self, i: int) -> None:
        w = self.workers.pop(i, None)
        if w is not None:
            w.close()

    def close(self) -> None:
        for i in list(self.workers):
            self.close_one(i)


def _block(workers: RowWorkers, i: int, row: BenchRow, scope: str, own: list[float]
           ) -> Callable[[int, float, int], list[float]]:
    """Row ``i``'s timing block of ``scope``, run by its worker (nothing once it failed)."""
    def block(n: int, t: float, m: int) -> list[float]:
        got = workers.call(i, row, "time", scope, n, t, m, stage="time")
        if got is None:
            return []
        own.extend(got[1])
        return got[0]

    return block


def _measure_latency(workers: RowWorkers, rows: list[BenchRow], opts: BenchOptions,
                     tick: Callable[[object], None], monitor: LoadMonitor) -> None:
    """Interleaved timing of every row's worker, with the load of other processes around
    each block; fills each ok row's ``latency_ms``."""
    t0 = time.time()
    monitor.check_quiet()
    own: dict[int, list[float]] = {i: [] for i in workers.workers}
    eng = interleaved_blocks({i: _block(workers, i, rows[i], "engine", own[i])
                              for i in workers.workers}, opts.timing, tick, monitor)
    e2e: dict[int, list[float]] = {}
    if opts.e2e_image is not None:
        for i in list(workers.workers):
            workers.stage(rows[i], "warm-up e2e")
            workers.call(i, rows[i], "warm_up", "e2e", opts.timing, stage="warm-up")
        monitor.scope = "e2e"
        e2e = interleaved_blocks({i: _block(workers, i, rows[i], "e2e", [])
                                  for i in workers.workers}, opts.timing, tick, monitor)
    for i in eng:
        row = rows[i]
        if row.status != "ok":
            continue
        row.latency_ms["engine"] = LatencyStats(**summarize(eng[i], opts.timing),
                                                **monitor.stats(i))
        if own[i]:  # the runtime's own timing of the same timed calls (OpenVINO)
            row.latency_ms["engine_runtime"] = LatencyStats(
                **summarize(own[i], opts.timing), **monitor.stats(i))
        if e2e.get(i):
            row.latency_ms["e2e"] = LatencyStats(**summarize(e2e[i], opts.timing),
                                                 **monitor.stats(i, "e2e"))
    log.info("latency measured in %.1f s", time.time() - t0)


def bench_candidates(cands: list[Candidate], opts: BenchOptions,
                     command_of: Callable[[BenchRow], str], progress: bool = True,
                     monitor: Optional[LoadMonitor] = None) -> list[BenchRow]:
    """Measure every (student, backend, precision), each in a worker process of its own;
    return the report rows. ``monitor`` (default: one with ``opts.busy``) keeps what else
    ran while timing."""
    from tqdm import tqdm

    planned = planned_rows(cands, opts)
    rows, cand_of = [r for _, r in planned], [c for c, _ in planned]
    bar = tqdm(total=len(rows) * (2 * opts.timing.rounds + 3), desc="bench", unit="step",
               disable=not progress)
    workers = RowWorkers(opts, bar)
    try:
        for i, row in enumerate(rows):
            workers.start(i, cand_of[i], row)
            bar.update(1)
        bar.total = len(rows) + len(workers.workers) * (2 * opts.timing.rounds + 2)
        bar.refresh()
        bar.set_description("time")
        _measure_latency(workers, rows, opts, lambda _key: bar.update(1),
                         monitor or LoadMonitor(opts.busy))
        timed = list(workers.workers)
        for i in timed:  # one at a time: a throughput figure is a timing
            _throughput(workers, i, rows[i], cand_of[i], opts)
            bar.update(1)
        _score_rows(workers, rows, timed, opts, lambda: bar.update(1))
        for i in timed:
            if rows[i].status == "ok" and _target(rows[i]).export:
                _file_facts(rows[i], cand_of[i].formats[_target(rows[i]).export])
            workers.close_one(i)
    finally:
        workers.close()
        bar.close()
    _deltas(rows)
    for row in rows:
        row.command = command_of(row)
    return rows


def _throughput(workers: RowWorkers, i: int, row: BenchRow, c: Candidate,
                opts: BenchOptions) -> None:
    """The throughput figure of a timed row (at ``opts.batch``), by its worker."""
    if row.status != "ok":
        return
    workers.stage(row, "throughput")
    path, why = _throughput_path(c, row, opts)
    row.throughput = why if path is None else (workers.call(
        i, row, "throughput", path, opts.batch, _throughput_timing(opts.timing),
        stage="throughput") or {})


def _score_rows(workers: RowWorkers, rows: list[BenchRow], ids: list[int], opts: BenchOptions,
                tick: Callable[[], None]) -> None:
    """Every timed row's accuracy on the report split, by its worker, as many rows at once as
    the rows have cores (nothing is timed any more: scoring is the bench's longest untimed
    step; each row's figures do not depend on the order)."""
    import concurrent.futures

    def score(i: int) -> None:
        row = rows[i]
        if row.status == "ok" and opts.accuracy:
            workers.stage(row, "score")
            acc = workers.call(i, row, "accuracy", opts.flip_test, opts.accuracy_max_persons,
                               opts.bootstrap, stage="score")
            if acc is not None:
                row.accuracy = RowAccuracy(**acc)
        tick()

    at_once = max(1, min(len(ids), len(opts.cpus or allowed_cpus())))
    with concurrent.futures.ThreadPoolExecutor(at_once, thread_name_prefix="score") as pool:
        for done in [pool.submit(score, i) for i in ids]:
            done.result()


def _file_facts(row: BenchRow, entry: FormatRecord) -> None:
    """Parity, file size and (quantized files) the recipe, from the export record."""
    row.parity = entry.parity
    row.file_bytes = entry.file_bytes
    row.quantization = entry.quantization


def _throughput_path(c: Candidate, row: BenchRow, opts: BenchOptions
                     ) -> tuple[Optional[str], dict[str, Any]]:
    """The file the throughput figure at ``opts.batch`` loads (the target's throughput
    format, or the torch student), or None and the record of why there is none."""
    t = _target(row)
    if opts.batch <= 1:
        return None, {}
    if t.throughput == "student":
        return str(c.student_yaml), {}
    if t.throughput:
        entry = c.formats.get(t.throughput)
        if entry is None or not entry.available:
            return None, {"batch": opts.batch, "reason": "no dynamic-batch export"}
        return str(c.export_dir / entry.file), {}
    return None, {"batch": opts.batch, "reason": f"not measured for {t.label}"}


def _throughput_timing(row: TimingConfig) -> TimingConfig:
    """The batch figure's protocol: one round of at least 5 calls and 0.5 s after 2 calls and
    0.2 s of warm-up, shortened where the rows' own timing is shorter (``--min-time``,
    ``--warmup-time``)."""
    return TimingConfig(warmup_iters=min(2, row.warmup_iters), warmup_s=min(0.2, row.warmup_s),
                        min_iters=min(5, row.min_iters), min_time_s=min(0.5, row.min_time_s),
                        rounds=1)


def target_file(student_yaml: Path, backend: str, precision: str, work: Optional[Path],
                recipe: Any) -> tuple[Any, Optional[Path]]:
    """Export the student to the (backend, precision) target's format into ``work`` (None:
    its own export folder), quantizing with ``recipe`` where it is calibrated: the format
    record and its model file's path (None where the format is unavailable)."""
    from okdhp_edge.export.exporter import export_student
    from okdhp_edge.targets import get_target

    fmt = get_target(backend, precision).export
    entry = export_student(student_yaml, work, formats=(fmt,), recipe=recipe).formats[fmt]
    if not entry.available:
        return entry, None
    return entry, (work or Path(student_yaml).parent / "export") / entry.file


def file_report_accuracy(manifest: StudentManifest, backend: str, precision: str, path: Path,
                         dataset: Any) -> dict[str, Any]:
    """:func:`report_accuracy` of ``dataset`` through the file at ``path``, on one thread."""
    from okdhp_edge.runtime import make_runner

    runner = make_runner(backend, precision, threads=1)
    runner.load(str(path))
    try:
        return report_accuracy(manifest, runner, dataset=dataset)
    finally:
        runner.close()


def file_accuracy(student_yaml: Path, manifest: StudentManifest, backend: str,
                  precision: str, work: Optional[Path], recipe: Any, dataset: Any
                  ) -> tuple[Any, Optional[dict[str, Any]]]:
    """:func:`target_file`, then ``dataset`` measured through that file: the format record,
    and :func:`report_accuracy`'s result (None where the format is unavailable)."""
    entry, path = target_file(student_yaml, backend, precision, work, recipe)
    if path is None:
        return entry, None
    return entry, file_report_accuracy(manifest, backend, precision, path, dataset)


def report_accuracy(manifest: StudentManifest, runner: Runner, flip_test: bool = False,
                    max_persons: int = 0, dataset: Any = None,
                    n_resamples: int = N_RESAMPLES) -> dict[str, Any]:
    """The report split (``dataset``, or the one the manifest names) through this runner,
    with the same preprocessing and decoding as PyTorch, and its bootstrap interval over
    ``n_resamples`` resamples of the images (persons for PCKh) with their results."""
    from okdhp_edge.evaluation.datasets import report_dataset
    from okdhp_edge.evaluation.inference import engine_heatmap_fn, predict, score_units

    try:
        ds = dataset if dataset is not None else report_dataset(manifest)
    except Exception as exc:  # noqa: BLE001
        return {"metric": manifest.accuracy.metric, "value": None,
                "reason": f"report split unreadable: {exc}"}
    if max_persons and len(ds) > max_persons:
        ds.records = ds.records[:max_persons]
        if ds.headboxes is not None:
            ds.headboxes = ds.headboxes[:max_persons]
    flip_index = ds.flip_index if flip_test else None
    fn = engine_heatmap_fn(lambda x: run_one_by_one(runner, x), flip_index)
    res, units = score_units(ds, predict(ds, fn, batch_size=16), headboxes=ds.headboxes)
    return {"metric": res["metric"], "value": float(res["value"]), "persons": len(ds),
            "flip_test": flip_test, **accuracy_fields(units, n_resamples)}


def _deltas(rows: list[BenchRow]) -> None:
    """Accuracy difference from the baseline (PyTorch fp32) of the same student, with its
    paired interval (both figures recomputed on the same resampled images)."""
    ref = {r.student: r.accuracy for r in rows if (r.backend, r.precision) == BASELINE}
    for r in rows:
        acc, base = r.accuracy, ref.get(r.student)
        if acc.value is None or base is None or base.value is None:
            continue
        ci = paired_delta(acc.units, base.units, acc.bootstrap)
        r.accuracy = dataclasses.replace(
            acc, delta_vs_torch_fp32=float(acc.value - base.value),
            delta_ci95=None if ci is None else [ci.low, ci.high])


def cli_command(argv: list[str]) -> str:
    """The command line that reproduces this run."""
    return " ".join(shlex.quote(a) for a in [sys.executable.rsplit("/", 1)[-1], "-m",
                                             "okdhp_edge.bench", *argv])
