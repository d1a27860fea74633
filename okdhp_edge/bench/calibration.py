"""``python -m okdhp_edge.bench calibration --zoo Z``: how INT8 accuracy depends on the
calibration, per student and backend: report-split accuracy of each INT8 file against the
number of calibration images and the range-estimation method, beside the same backend's
fp32 file. Resumable cell by cell (the JSON keeps every finished cell); accuracy only, no
timing, so it may share the machine.

Writes ``<out-root>/<device-id>/<zoo>_calibration.{json,md}``: the device the cells were
measured on (a scheduler's node), or this one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Optional

from okdhp_edge.backends.recipe import QuantRecipe, reads
from okdhp_edge.bench.run import file_accuracy
from okdhp_edge.convert.quantize import METHODS
from okdhp_edge.evaluation.uncertainty import interval_text, paired_delta
from okdhp_edge.experiments.executors import Scheduler
from okdhp_edge.grammar import Request, option
from okdhp_edge.records import (
    Bootstrap,
    CalibrationReport,
    StudentManifest,
    read_json_record,
)
from okdhp_edge.schema import to_dict
from okdhp_edge.targets import BACKEND_INFO, backends_with, get_target
from okdhp_edge.utils.cli import UsageError, request_main
from okdhp_edge.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)



def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


class Cell(NamedTuple):
    """One INT8 recipe of one student on one backend."""

    student: str
    backend: str
    method: str
    images: int
    max_drop: Optional[float] = None
    keep_head: bool = False
    overflow_fix: bool = False  # OpenVINO: NNCF's overflow fix on every convolution

    def recipe(self) -> QuantRecipe:
        return QuantRecipe.from_record({
            "method": self.method, "num_images": self.images, "max_drop": self.max_drop,
            "keep_head": self.keep_head,
            "overflow_fix": "enable" if self.overflow_fix else "first_layer"})


def _cells(students: list[str], backends: list[str], images: list[int], methods: list[str],
           max_drops: list[float], keep_head: bool = False,
           overflow_fix: bool = False) -> list[Cell]:
    """Every count with the default method, every method at the largest count, the default
    with the heatmap convolution kept in fp32 when asked, and on OpenVINO accuracy control
    at each max drop; with ``overflow_fix``, OpenVINO's cells at the largest count again with
    NNCF's overflow fix on every convolution, for each method."""
    top = max(images)
    grid = [("default", n, None, False) for n in images] + [
        (m, top, None, False) for m in methods if m != "default"]
    grid += [("default", top, None, True)] if keep_head else []
    ac = [("default", top, d, False) for d in max_drops]
    cells = [Cell(s, b, m, n, d, h) for s in students for b in backends
             for m, n, d, h in grid + (ac if reads(b, "max_drop") else [])]
    if overflow_fix:
        cells += [Cell(s, b, m, top, None, False, True) for s in students
                  for b in backends if reads(b, "overflow_fix")
                  for m in ["default", *[m for m in methods if m != "default"]]]
    return cells


def cell_key(cell: Cell) -> str:
    name = cell.method if cell.max_drop is None else f"ac{cell.max_drop:g}"
    name += ("+head" if cell.keep_head else "") + ("+ofx" if cell.overflow_fix else "")
    return f"{cell.student}/{cell.backend}/{name}/{cell.images}"


def _measure(student_yaml: Path, man: StudentManifest, backend: str, precision: str,
             work: Path, recipe: QuantRecipe, dataset: Any) -> dict[str, Any]:
    """Export (quantizing when int8) into ``work`` and measure the report split, in a
    worker process of its own (a converter or runtime that dies costs this cell only)."""
    from okdhp_edge.utils.isolate import WorkerDied, call_isolated

    try:
        entry, acc = call_isolated(file_accuracy, student_yaml, man, backend, precision, work,
                                   recipe, dataset, stage="convert and score", timeout_s=None)
    except WorkerDied as exc:
        log.warning("%s %s %s: %s", man.name, backend, precision, exc)
        return {"value": None, "reason": exc.summary()}
    if acc is None:
        return {"value": None, "reason": entry.reason}
    out = {"value": acc["value"], "metric": acc["metric"], "persons": acc.get("persons")}
    if acc.get("units"):  # the interval, and the per-image results the paired deltas need
        out.update(ci95=acc["ci95"], bootstrap=to_dict(acc["bootstrap"]), units=acc["units"])
    if reads(backend, "max_drop"):  # the split accuracy control decides on, measured alike
        out["select_value"] = _selection_metric(man, work / entry.file, precision)
    if entry.quantization is not None:  # how it was made, but the recipe: the cell's key
        out.update({k: v for k, v in to_dict(entry.quantization).items() if k != "recipe"})
    if entry.file_bytes is not None:
        out["file_bytes"] = entry.file_bytes
    return out


def _selection_metric(man: StudentManifest, xml: Path, precision: str) -> float:
    """The selection split's metric of an OpenVINO file, as accuracy control measures it."""
    import openvino as ov

    from okdhp_edge.export.exporter import selection_validation

    items, _, metric = selection_validation(man)
    hint = "f32" if precision in ("fp32", "int8") else precision
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": hint})
    return metric(compiled, items)


def run(zoo: Path, out: Path, backends: list[str], images: list[int], methods: list[str],
        work_root: Path, students: Optional[list[str]] = None,
        max_drops: tuple[float, ...] = (), keep_head: bool = False,
        overflow_fix: bool = False, scheduler: Optional[Scheduler] = None
        ) -> CalibrationReport:
    """Fill (or resume) the calibration report at ``out`` (.json), each cell measured here
    or, with a ``scheduler`` other than local, as a job of its own; returns it."""
    from okdhp_edge.evaluation.datasets import report_dataset
    from okdhp_edge.manifest import load_zoo_manifest, zoo_students

    zoo_name = load_zoo_manifest(zoo).name
    rep = read_json_record(CalibrationReport, out) if out.is_file() else CalibrationReport(
        calibration_version=CalibrationReport.VERSION, zoo=zoo_name, fp32={}, cells={})
    rep = rep.replace(zoo_path=str(zoo))
    members = [(d, m) for d, m in zoo_students(zoo) if not students or m.name in students]
    dataset = report_dataset(members[0][1])
    yaml_of = {m.name: (d / "student.yaml", m) for d, m in members}
    fp32 = {f"{m.name}/{b}": (*yaml_of[m.name], b, "fp32", work_root / m.name / "fp32",
                              QuantRecipe(), dataset) for _, m in members for b in backends}
    _fill(rep.fp32, fp32, out, rep, scheduler, work_root)
    cells = {cell_key(c): (*yaml_of[c.student], c.backend, "int8",
                           work_root / c.student / cell_key(c).split("/", 1)[1].replace("/", "-"),
                           c.recipe(), dataset)
             for c in _cells([m.name for _, m in members], backends, images, methods,
                             list(max_drops), keep_head, overflow_fix)}
    _fill(rep.cells, cells, out, rep, scheduler, work_root)
    return rep


def _fill(into: dict[str, Any], todo: dict[str, tuple], out: Path, rep: CalibrationReport,
          scheduler: Optional[Scheduler], work_root: Path) -> None:
    """Measure every key of ``todo`` missing from ``into`` (the report written after each:
    a kill loses at most the cells being measured)."""
    todo = {k: v for k, v in todo.items() if k not in into}

    def done(key: str, cell: dict[str, Any]) -> None:
        if into is rep.cells:
            student, backend = key.split("/")[:2]
            cell.update(_paired_with_fp32(cell, rep.fp32[f"{student}/{backend}"]))
        into[key] = cell
        atomic_write_json(out, rep.to_dict())
        log.info("%s: %s", key, cell.get("value"))

    if scheduler is None or scheduler.pooled:
        for key, args in todo.items():
            done(key, _timed_measure(*args))
        return
    from okdhp_edge.experiments.executors import SubmititPool

    with SubmititPool(scheduler, work_root / "jobs", 1) as pool:
        jobs = [pool.submit(key, _timed_measure, *args) for key, args in todo.items()]
        while jobs:
            for job, cell in pool.wait_any(jobs):
                jobs.remove(job)
                done(job.key, {**cell, "job": job.info()})


def _timed_measure(*args: Any) -> dict[str, Any]:
    """:func:`_measure` with the seconds it took and the device it ran on (a job's node)."""
    from okdhp_edge.bench.device import this_device_id

    t0 = time.time()
    cell = _measure(*args)
    return {**cell, "seconds": round(time.time() - t0, 1), "device": this_device_id()}


def _cell_delta(cell: dict[str, Any], ref: dict[str, Any]) -> Any:
    """The paired interval of ``cell - ref`` (both recomputed on the same resampled
    images), drawn as the cell's was; None without per-image results on both."""
    boot = cell.get("bootstrap")
    return paired_delta(cell.get("units"), ref.get("units"), Bootstrap(**boot) if boot else None)


def _paired_with_fp32(cell: dict[str, Any], fp32: dict[str, Any]) -> dict[str, Any]:
    """The paired interval of the cell's change from the same backend's fp32 file."""
    ci = _cell_delta(cell, fp32)
    return {} if ci is None else {"delta_ci95": [ci.low, ci.high]}


def _cell_text(cell: dict[str, Any], ref: Optional[float]) -> str:
    """``0.5412 (-0.0081 [-0.0120, -0.0040])``: a cell, its change from fp32 and the
    paired interval of that change (where the report kept per-image results)."""
    v = cell.get("value")
    if v is None:
        return "-"
    if ref is None:
        return f"{v:.4f}"
    return f"{v:.4f} ({v - ref:+.4f}{interval_text(cell.get('delta_ci95'), '+.4f')})"


def reproduce_command(rep: CalibrationReport) -> str:
    """One command that rebuilds every cell of ``rep`` (finished cells are skipped)."""
    keys = [k.split("/") for k in rep.cells]
    students = sorted({k[0] for k in keys} | {k.split("/")[0] for k in rep.fp32})
    backends = sorted({k.split("/")[1] for k in rep.fp32})
    images = sorted({int(k[3]) for k in keys})
    methods = sorted({k[2] for k in keys if not k[2].startswith("ac") and "+" not in k[2]},
                     key=lambda m: (m != "default", m))
    drops = sorted({float(k[2][2:]) for k in keys if k[2].startswith("ac")})
    return CalibrationRequest.build(
        zoo=rep.zoo_path or rep.zoo, students=students, backends=backends,
        calib_images=images, calib_methods=methods, int8_max_drops=drops,
        also_keep_head=any("+head" in k[2] for k in keys),
        also_overflow_fix=any("+ofx" in k[2] for k in keys)).command(
            spell=("students", "backends", "calib_images", "calib_methods"))


def markdown(rep: CalibrationReport, command: str) -> str:
    """One table per backend: students x (images, method), AP and its change from fp32."""
    lines = [f"# INT8 calibration sensitivity: zoo `{rep.zoo}`", "",
             "Report-split accuracy (no flip test) of each student's INT8 file against the "
             "number of calibration images (crops of the training split, default method) "
             "and the range-estimation method (at the largest count); in brackets the change "
             "from the same backend's fp32 file. Calibration never sees the report split.",
             "", f"    {command}", ""]
    backends = sorted({k.split("/")[1] for k in rep.fp32})
    for b in backends:
        cols = sorted({tuple(k.split("/")[2:]) for k in rep.cells if k.split("/")[1] == b},
                      key=lambda c: (c[0] != "default", int(c[1]), c[0]))
        students = sorted({k.split("/")[0] for k in rep.fp32 if k.endswith("/" + b)})
        lines += [f"## {b}", "", "| student | fp32 | " + " | ".join(
            f"{m} @ {n}" for m, n in cols) + " |", "|---|---|" + "---|" * len(cols)]
        for s in students:
            ref = rep.fp32[f"{s}/{b}"].get("value")
            cells = [_cell_text(rep.cells.get(f"{s}/{b}/{m}/{n}", {}), ref) for m, n in cols]
            lines.append(f"| {s} | {'-' if ref is None else f'{ref:.4f}'} | "
                         + " | ".join(cells) + " |")
        lines += [""] + _against_default_lines(rep, b, students, cols)
    lines += _accuracy_control_lines(rep)
    return "\n".join(lines)


def _against_default_lines(rep: CalibrationReport, backend: str, students: list[str],
                           cols: list[tuple[str, str]]) -> list[str]:
    """Each recipe against the default recipe at the same image count, as a paired
    interval (cells of reports that kept per-image results only)."""
    out = []
    for s in students:
        for m, n in cols:
            cell, base = (rep.cells.get(f"{s}/{backend}/{x}/{n}", {}) for x in (m, "default"))
            ci = None if m == "default" else _cell_delta(cell, base)
            if ci is not None:
                out.append(f"- {s}, {m} @ {n} minus default @ {n}: "
                           f"{cell['value'] - base['value']:+.4f}{interval_text(ci, '+.4f')}")
    if not out:
        return []
    return ["Against the default recipe (paired 95% intervals over the report split's "
            "images):", "", *out, ""]


def _accuracy_control_lines(rep: CalibrationReport) -> list[str]:
    """OpenVINO: plain PTQ against accuracy control, on the selection split that control
    decides on and on the report split, with the layers it kept in floating point."""
    ac = {k: v for k, v in rep.cells.items() if k.split("/")[2].startswith("ac")}
    if not ac:
        return []
    out = ["## OpenVINO accuracy control (NNCF), decided on the selection split", "",
           "| student | max drop | selection: fp32 / plain INT8 / controlled | report: fp32 / "
           "plain INT8 / controlled | layers kept in floating point |", "|---|---|---|---|---|"]
    for key, cell in ac.items():
        s, b, name, n = key.split("/")
        three = (rep.fp32.get(f"{s}/{b}", {}), rep.cells.get(f"{s}/{b}/default/{n}", {}),
                 cell)
        layers = cell.get("higher_precision_layers") or []
        out.append(f"| {s} | {name[2:]} | {_trio(three, 'select_value')} | "
                   f"{_trio(three, 'value')} | "
                   f"{len(layers)}: {', '.join(layers) if layers else 'none'} |")
    return out + [""]


def _trio(cells: tuple[dict, ...], field: str) -> str:
    return " / ".join("-" if c.get(field) is None else f"{c[field]:.4f}" for c in cells)


@dataclass(frozen=True)
class CalibrationRequest(Request):
    """Measures INT8 calibration recipes: each student's INT8 file per backend, per number
    of calibration images (default method) and per range-estimation method (at the largest
    count), scored on the report split beside its fp32 file; resumable cell by cell."""

    COMMAND: ClassVar[str] = "okdhp bench calibration"

    zoo: Path = option(help="the zoo directory")
    backends: tuple[str, ...] = option(tuple(backends_with("int8")), "backends with an int8 "
                                       "target", choices=tuple(BACKEND_INFO))
    calib_images: tuple[int, ...] = option((16, 64, 300), "calibration image counts",
                                           minimum=1)
    calib_methods: tuple[str, ...] = option(METHODS, "range-estimation methods",
                                            choices=METHODS)
    int8_max_drops: tuple[float, ...] = option((), "OpenVINO accuracy control at these max "
                                               "drops (selection split)", minimum=0, maximum=1)
    also_keep_head: bool = option(False, "also the default recipe with the heatmap "
                                  "convolution kept in fp32")
    also_overflow_fix: bool = option(False, "OpenVINO: also each method at the largest count "
                                     "with NNCF's overflow fix on every convolution")
    students: Optional[tuple[str, ...]] = option(None, "student names (default all)")
    device_name: Optional[str] = option(None, "device id to file the report under")
    out_root: Path = option(Path("bench/reports"), "where reports go")
    work_dir: Path = option(Path("runs/calibration"), "where the INT8 files are built")
    scheduler: Scheduler = option(factory=Scheduler, help="where each cell is measured "
                                  "(experiments/executors.py; local: here, one by one)")

    def check(self) -> None:
        for b in self.backends:
            try:
                get_target(b, "int8")
            except Exception as exc:  # noqa: BLE001 - the target table's one-line refusal
                raise UsageError(str(exc)) from None


def filed_where_measured(rep: CalibrationReport, out: Path) -> Path:
    """Where the report belongs: under the device its cells were measured on (each records
    it: a scheduler's jobs run on its nodes), when that is one device other than the one
    that submitted them; the JSON is moved there (resume it with ``--device-name``). Cells
    of several devices, or a report of that device already there: it stays, with a line."""
    import os

    devices = sorted({c["device"] for c in [*rep.fp32.values(), *rep.cells.values()]
                      if c.get("device")})
    if len(devices) > 1:
        log.warning("the cells were measured on %d devices (%s), each cell naming its own: "
                    "the report stays under %s", len(devices), ", ".join(devices),
                    out.parent.name)
    if len(devices) != 1 or devices[0] == out.parent.name:
        return out
    there = out.parent.parent / devices[0] / out.name
    if there.exists():
        log.warning("the cells ran on %s, which has a report of this zoo already: this one "
                    "stays under %s", devices[0], out.parent.name)
        return out
    there.parent.mkdir(parents=True, exist_ok=True)
    os.replace(out, there)
    log.info("the cells ran on %s: the report is filed under it (to extend it: "
             "--device-name %s)", devices[0], devices[0])
    return there


def _run(args: CalibrationRequest) -> int:
    from okdhp_edge.bench.device import device_id, fingerprint

    out_dir = args.out_root / device_id(fingerprint(0), args.device_name)
    zoo_name = args.zoo.resolve().name
    out = out_dir / f"{zoo_name}_calibration.json"
    rep = run(args.zoo, out, list(args.backends), list(args.calib_images),
              list(args.calib_methods), args.work_dir / zoo_name,
              list(args.students) if args.students else None, args.int8_max_drops,
              args.also_keep_head, args.also_overflow_fix, args.scheduler)
    if args.device_name is None:
        out = filed_where_measured(rep, out)
    atomic_write_text(out.with_suffix(".md"), markdown(rep, reproduce_command(rep)))
    print(f"json: {out}\nmd: {out.with_suffix('.md')}")
    return 0


main = request_main(CalibrationRequest, _run)
