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
from okdhp_edge.bench.candidates import Candidate
from okdhp_edge.bench.load import LoadMonitor
from okdhp_edge.bench.timing import TimingConfig, interleaved, summarize
from okdhp_edge.evaluation.uncertainty import N_RESAMPLES, accuracy_fields, paired_delta
from okdhp_edge.records import BenchRow, FormatRecord, LatencyStats, RowAccuracy, StudentManifest
from okdhp_edge.runtime import BackendUnavailable, Runner, make_runner
from okdhp_edge.runtime.pipeline import KeypointPipeline
from okdhp_edge.targets import (
    BASELINE,
    FORMATS,
    Target,
    UnknownTarget,
    default_backends,
    get_target,
    targets_for,
)

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


def _load_runners(cands: list[Candidate], opts: BenchOptions, rows: list[BenchRow]
                  ) -> dict[int, Runner]:
    runners: dict[int, Runner] = {}
    for i, row in enumerate(rows):
        c = next(c for c in cands if c.name == row.student)
        try:
            path, reason = model_path(c, _target(row))
        except UnknownTarget as exc:
            path, reason = None, str(exc)
        if path is None:
            row.available, row.status, row.reason = False, "unavailable", reason
            continue
        row.model_file = path
        runner = make_runner(row.backend, row.precision, opts.threads,
                             _device_for(_target(row), opts), _scheduling(row, opts))
        try:
            runner.load(path)
        except BackendUnavailable as exc:
            row.available, row.status, row.reason = False, "unavailable", str(exc)
            continue
        except Exception as exc:  # noqa: BLE001 - a failing student does not stop the bench
            row.status, row.reason = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("%s/%s/%s failed to load: %s", row.student, row.backend,
                        row.precision, exc)
            continue
        row.runner = runner.describe()
        runners[i] = runner
    return runners


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


def _engine_call(runner: Runner, x: np.ndarray, own: list[float]) -> Callable[[], object]:
    """One engine call; where the runtime times its own requests, that time is kept too
    (warm-up calls included: the summary keeps as many of the last as were timed)."""
    def call() -> object:
        out = runner.run(x)
        ms = runner.runtime_latency_ms()
        if ms is not None:
            own.append(ms)
        return out

    return call


def _guarded(fn: Callable[[], object], row: BenchRow) -> Callable[[], object]:
    def call() -> object:
        if row.status != "ok":
            return None
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001
            row.status, row.reason = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("%s/%s/%s failed: %s", row.student, row.backend, row.precision, exc)
            return None

    return call


def _timed_calls(runners: dict[int, Any], rows: list[BenchRow], cand_of: dict[str, Candidate],
                 opts: BenchOptions) -> tuple[dict, dict, dict]:
    """The engine call (and, with an e2e image, the whole pipeline call) of every loaded
    runner, guarded so that a failure marks its row; plus the runtime's own timings."""
    engine_fns, e2e_fns, own = {}, {}, {}
    for i, r in runners.items():
        row = rows[i]
        pre = cand_of[row.student].manifest.preprocessing
        w, h = pre.input_size
        x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
        engine_fns[i] = _guarded(_engine_call(r, x, own.setdefault(i, [])), row)
        if opts.e2e_image is not None:
            fmt = FORMATS.get(_target(row).export or "")
            pipe = KeypointPipeline(r, pre, layout=fmt.layout if fmt else "NCHW")
            e2e_fns[i] = _guarded(lambda p=pipe: p(opts.e2e_image, opts.e2e_box), row)
    return engine_fns, e2e_fns, own


def _measure_latency(runners: dict[int, Any], rows: list[BenchRow], cand_of: dict[str, Candidate],
                     opts: BenchOptions, tick: Callable[[object], None],
                     monitor: LoadMonitor) -> None:
    """Interleaved timing of every runner, with the load of other processes around each
    block; fills each ok row's ``latency_ms``."""
    engine_fns, e2e_fns, own = _timed_calls(runners, rows, cand_of, opts)
    t0 = time.time()
    monitor.check_quiet()
    eng = interleaved(engine_fns, opts.timing, tick, monitor)
    monitor.scope = "e2e"
    e2e = interleaved(e2e_fns, opts.timing, tick, monitor) if e2e_fns else {}
    for i in runners:
        row = rows[i]
        if row.status != "ok":
            continue
        row.latency_ms["engine"] = LatencyStats(**summarize(eng[i], opts.timing),
                                                **monitor.stats(i))
        if own.get(i):  # the runtime's own timing of the same timed calls (OpenVINO)
            row.latency_ms["engine_runtime"] = LatencyStats(
                **summarize(own[i][-len(eng[i]):], opts.timing), **monitor.stats(i))
        if i in e2e and e2e[i]:
            row.latency_ms["e2e"] = LatencyStats(**summarize(e2e[i], opts.timing),
                                                 **monitor.stats(i, "e2e"))
    log.info("latency measured in %.1f s", time.time() - t0)


def bench_candidates(cands: list[Candidate], opts: BenchOptions,
                     command_of: Callable[[BenchRow], str], progress: bool = True,
                     monitor: Optional[LoadMonitor] = None) -> list[BenchRow]:
    """Measure every (student, backend, precision); return the report rows. ``monitor``
    (default: one with ``opts.busy``) keeps what else ran while timing."""
    from tqdm import tqdm

    rows = [BenchRow(c.name, b, p, params=c.manifest.params, macs=c.manifest.macs)
            for c in cands for b, p in planned_pairs(opts)]
    runners = _load_runners(cands, opts, rows)
    bar = tqdm(total=len(runners) * (2 * opts.timing.rounds + 2), desc="bench", unit="step",
               disable=not progress)
    cand_of = {c.name: c for c in cands}
    monitor = monitor or LoadMonitor(opts.busy)
    _measure_latency(runners, rows, cand_of, opts, lambda _key: bar.update(1), monitor)
    for i, r in runners.items():
        row = rows[i]
        c = cand_of[row.student]
        if row.status == "ok":
            row.throughput = _throughput(c, row, opts)
            bar.update(1)
            if opts.accuracy:
                row.accuracy = RowAccuracy(**_accuracy(c, r, opts))
            bar.update(1)
            if _target(row).export:
                _file_facts(row, c.formats[_target(row).export])
        r.close()
    bar.close()
    _deltas(rows)
    for row in rows:
        row.command = command_of(row)
    return rows


def _file_facts(row: BenchRow, entry: FormatRecord) -> None:
    """Parity, file size and (quantized files) the recipe, from the export record."""
    row.parity = entry.parity
    row.file_bytes = entry.file_bytes
    row.quantization = entry.quantization


def _throughput(c: Candidate, row: BenchRow, opts: BenchOptions) -> dict[str, Any]:
    """Images/s at ``opts.batch`` (the target's throughput format, or the torch student)."""
    t = _target(row)
    if opts.batch <= 1:
        return {}
    if t.throughput == "student":
        path = str(c.student_yaml)
    elif t.throughput:
        entry = c.formats.get(t.throughput)
        if entry is None or not entry.available:
            return {"batch": opts.batch, "reason": "no dynamic-batch export"}
        path = str(c.export_dir / entry.file)
    else:
        return {"batch": opts.batch, "reason": f"not measured for {t.label}"}
    w, h = c.manifest.preprocessing.input_size
    x = np.random.default_rng(1).standard_normal((opts.batch, 3, h, w)).astype(np.float32)
    runner = make_runner(row.backend, row.precision, opts.threads, _device_for(t, opts))
    try:
        runner.load(path)
        samples = interleaved({0: lambda: runner.run(x)}, _throughput_timing(opts.timing))[0]
        med = float(np.median(samples))
        return {"batch": opts.batch, "median_ms": med, "images_per_s": opts.batch * 1e3 / med}
    except Exception as exc:  # noqa: BLE001
        return {"batch": opts.batch, "reason": f"{type(exc).__name__}: {exc}"}
    finally:
        runner.close()


def _throughput_timing(row: TimingConfig) -> TimingConfig:
    """The batch figure's protocol: one round of at least 5 calls and 0.5 s after 2 calls and
    0.2 s of warm-up, shortened where the rows' own timing is shorter (``--min-time``,
    ``--warmup-time``)."""
    return TimingConfig(warmup_iters=min(2, row.warmup_iters), warmup_s=min(0.2, row.warmup_s),
                        min_iters=min(5, row.min_iters), min_time_s=min(0.5, row.min_time_s),
                        rounds=1)


def _accuracy(c: Candidate, runner: Runner, opts: BenchOptions) -> dict[str, Any]:
    return report_accuracy(c.manifest, runner, opts.flip_test, opts.accuracy_max_persons,
                           n_resamples=opts.bootstrap)


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
