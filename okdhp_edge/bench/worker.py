"""The bench's work in worker processes: one spawned worker per row loads, warms, times and
scores its model file, and one per backend builds that backend's files of every student.

The parent keeps the protocol: it orders the interleaved rounds and asks each row's worker
to time one block; the worker runs the calls and sends back their latencies. A worker that
dies or hangs costs its own row(s) only (:class:`okdhp_edge.utils.isolate.WorkerDied`
becomes a ``failed`` row with the stage, the signal or timeout, and the log's last lines).

What a row costs is read inside its worker, fresh for each row: the resident high-water
mark (``VmHWM``) once the runtime is imported and before any model is loaded, and again
once the model is loaded and warmed up (:class:`okdhp_edge.records.RowCost`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from okdhp_edge.bench.timing import TimingConfig, interleaved, measure_block, warm_up
from okdhp_edge.records import FormatRecord, RowCost, RowFailure, StudentManifest
from okdhp_edge.utils.isolate import Worker, WorkerDied, import_path, resolve, vm_kb

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class E2ESample:
    """The end-to-end scope's input: a real image [H, W, 3] uint8 and a person box (x, y, w,
    h), run through the student's preprocessing and decoding around the engine call."""

    image: np.ndarray
    box: tuple[float, float, float, float]
    layout: str = "NCHW"


@dataclass(frozen=True)
class RowSpec:
    """What a row's worker runs: the runner (``module:Class``, resolved in the worker), its
    settings, the engine input's (height, width) and, for the end-to-end scope, a sample."""

    runner: str
    backend: str
    precision: str
    threads: int
    device: str
    input_hw: tuple[int, int]
    scheduling: dict[str, bool] = field(default_factory=dict)
    manifest: Optional[StudentManifest] = None  # preprocessing of the e2e scope, accuracy
    e2e: Optional[E2ESample] = None
    cpus: tuple[int, ...] = ()  # the worker's affinity, set before the runtime starts threads


def failure_of(exc: WorkerDied) -> RowFailure:
    """The report's record of a worker's end."""
    return RowFailure(stage=exc.stage, signal=exc.signal, exitcode=exc.exitcode,
                      timeout_s=exc.timeout_s, log_tail=list(exc.log_tail))


class RowService:
    """One row in its worker: a runner, loaded once, timed block by block (see module)."""

    def __init__(self, spec: RowSpec) -> None:
        self.spec = spec
        if spec.cpus:
            os.sched_setaffinity(0, spec.cpus)
        self.runner_class = resolve(spec.runner)
        self.runner = self.runner_class(spec.precision, spec.threads, spec.device,
                                        spec.scheduling)
        self.runner.import_runtime()
        if spec.e2e is not None:  # what an app runs around the engine is not the model's
            import okdhp_edge.runtime.pipeline  # noqa: F401
        self.runtime_kb = vm_kb() or 0
        h, w = spec.input_hw
        self.x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
        self.own: list[float] = []  # the runtime's own timing of the calls of one block
        self.fns: dict[str, Any] = {}
        self.load_ms = self.first_ms = 0.0

    def load(self, path: str) -> dict[str, Any]:
        """Load the file and make the first call; what runs (the runner's description)."""
        t0 = time.perf_counter()
        self.runner.load(path)
        t1 = time.perf_counter()
        self.runner.run(self.x)
        self.load_ms, self.first_ms = (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3
        self.fns["engine"] = self._engine_call
        if self.spec.e2e is not None and self.spec.manifest is not None:
            from okdhp_edge.runtime.pipeline import KeypointPipeline

            e2e = self.spec.e2e
            pipe = KeypointPipeline(self.runner, self.spec.manifest.preprocessing,
                                    layout=e2e.layout)
            self.fns["e2e"] = lambda: pipe(e2e.image, e2e.box)
        if not self.spec.cpus:
            return self.runner.describe()
        # the CPUs this worker is allowed, read in it: what --cores did
        return {**self.runner.describe(), "cpus": sorted(os.sched_getaffinity(0))}

    def _engine_call(self) -> object:
        out = self.runner.run(self.x)
        ms = self.runner.runtime_latency_ms()
        if ms is not None:
            self.own.append(ms)
        return out

    def warm_up(self, scope: str, timing: TimingConfig) -> Optional[RowCost]:
        """Warm ``scope`` up; for the engine scope, the row's cost (memory read now)."""
        warm_up(self.fns[scope], timing)
        if scope != "engine":
            return None
        return RowCost(runtime_peak_mb=round(self.runtime_kb / 1024, 1),
                       peak_mb=round((vm_kb() or 0) / 1024, 1),
                       load_ms=round(self.load_ms, 2), first_inference_ms=round(self.first_ms, 2),
                       torch_imported="torch" in sys.modules)

    def scopes(self) -> list[str]:
        return list(self.fns)

    def time(self, scope: str, min_iters: int, min_time_s: float, max_iters: int
             ) -> tuple[list[float], list[float]]:
        """One timing block: the calls' latencies (ms) and the runtime's own (where kept)."""
        self.own = []
        samples = measure_block(self.fns[scope], min_iters, min_time_s, max_iters)
        return samples, (self.own if scope == "engine" else [])

    def accuracy(self, flip_test: bool, max_persons: int, bootstrap: int) -> dict[str, Any]:
        """The report split through this row's runner (:func:`okdhp_edge.bench.run.
        report_accuracy`)."""
        from okdhp_edge.bench.run import report_accuracy

        return report_accuracy(self.spec.manifest, self.runner, flip_test, max_persons,
                               n_resamples=bootstrap)

    def throughput(self, path: str, batch: int, timing: TimingConfig) -> dict[str, Any]:
        """Images/s at ``batch`` through the file at ``path`` (another runner of this row's
        kind, loaded after the row's memory was read)."""
        h, w = self.spec.input_hw
        x = np.random.default_rng(1).standard_normal((batch, 3, h, w)).astype(np.float32)
        spec = self.spec
        runner = self.runner_class(spec.precision, spec.threads, spec.device)
        try:
            runner.load(path)
            samples = interleaved({0: lambda: runner.run(x)}, timing)[0]
            med = float(np.median(samples))
            return {"batch": batch, "median_ms": med, "images_per_s": batch * 1e3 / med}
        except Exception as exc:  # noqa: BLE001
            return {"batch": batch, "reason": f"{type(exc).__name__}: {exc}"}
        finally:
            runner.close()


class ExportService:
    """A backend's files of every student, built in a worker of their own (the converter,
    the quantizer and the parity run against PyTorch live and die there)."""

    def export(self, student_yaml: str, formats: tuple[str, ...], recipe: Any,
               decoder: str = "transposed") -> dict[str, FormatRecord]:
        """:func:`okdhp_edge.export.exporter.export_student` of ``formats`` with the decoder
        in ``decoder`` form; the records of those formats and the ones they are built
        from."""
        from okdhp_edge.export.exporter import export_student
        from okdhp_edge.targets import format_chain

        rec = export_student(Path(student_yaml), formats=formats, recipe=recipe,
                             decoder=decoder)
        chain = {g for f in formats for g in format_chain(f)}
        return {k: v for k, v in rec.formats.items() if k in chain}


def _by_builder(formats: list[str]) -> dict[str, tuple[str, ...]]:
    """The formats asked for, grouped by the backend whose module builds them (in the
    targets table's order: a format's source is built by an earlier group or its own)."""
    from okdhp_edge.targets import FORMATS

    groups: dict[str, tuple[str, ...]] = {}
    for name in FORMATS:
        if name in formats:
            b = FORMATS[name].builder
            groups[b] = groups.get(b, ()) + (name,)
    return groups


@dataclass(frozen=True)
class ExportUnit:
    """One student's files of one decoder form, and the formats to build there."""

    student_yaml: Path
    formats: tuple[str, ...]
    decoder: str = "transposed"

    @property
    def key(self) -> str:
        return f"{self.student_yaml}#{self.decoder}"


ByUnit = dict[str, dict[str, Any]]  # ExportUnit.key -> format -> a record


def export_in_workers(units: list[ExportUnit], recipe: Any, timeout_s: Optional[float] = None
                      ) -> tuple[ByUnit, ByUnit]:
    """Build every unit's formats, one worker process per backend building its files of
    each unit in turn. A worker that dies or runs past ``timeout_s`` costs the formats of
    the unit it was building (they become unavailable, with how it ended) and the next unit
    gets a fresh worker. Returns, by :attr:`ExportUnit.key`, the format records and the
    formats whose worker died."""
    built: ByUnit = {u.key: {} for u in units}
    failed: ByUnit = {u.key: {} for u in units}
    for backend, group in _by_builder(sorted({f for u in units for f in u.formats})).items():
        worker: Optional[Worker] = None
        try:
            for u in units:
                mine = tuple(f for f in group if f in u.formats)
                if mine:
                    worker = _export_unit(worker, backend, u, mine, recipe, timeout_s,
                                          built, failed)
        finally:
            if worker is not None:
                worker.close()
    return built, failed


def _export_unit(worker: Optional[Worker], backend: str, u: ExportUnit, group: tuple[str, ...],
                 recipe: Any, timeout_s: Optional[float], built: ByUnit, failed: ByUnit
                 ) -> Optional[Worker]:
    """One unit's ``group`` of formats by ``backend``'s worker (started when None); the
    worker to reuse, or None after it died."""
    from okdhp_edge.export.exporter import export_dir_of, remove_export_temporaries
    from okdhp_edge.targets import FORMATS

    # a student without a decoder (an hourglass) is in the default form too: name only the other
    form = " (sub-pixel decoder)" if u.decoder == "subpixel" else ""
    log.info("exporting %s%s: %s", u.student_yaml.parent.name, form, ", ".join(group))
    try:
        worker = worker or Worker(import_path(ExportService), name=f"export-{backend}",
                                  timeout_s=timeout_s)
        built[u.key].update(worker.call("export", str(u.student_yaml), group, recipe,
                                        u.decoder, stage="convert"))
        return worker
    except WorkerDied as exc:
        log.warning("%s: building %s failed: %s", u.student_yaml.parent.name,
                    ", ".join(group), exc)
        remove_export_temporaries(export_dir_of(u.student_yaml, u.decoder))
        for fmt in group:
            spec = FORMATS[fmt]
            built[u.key][fmt] = FormatRecord(spec.runs_on, spec.precision, False,
                                             reason=exc.summary())
            failed[u.key][fmt] = failure_of(exc)
        return None
