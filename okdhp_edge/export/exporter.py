"""Export one student to the formats its targets need, check parity, write ``export.yaml``.

Which files exist, what they are built from and which backend checks them is the table in
:mod:`okdhp_edge.targets`; this module only builds them, in the order of their sources,
and keeps each file's sha256. A cached file is reused only when its sha256 still matches
and, for a quantized one, its recipe is the one asked for; anything else is rebuilt.

``export.yaml`` (schema 3)::

    schema: 3
    student: hg4
    weights_sha256: ...
    preprocessing: {...}
    formats:
      onnx_int8:
        available: true
        backend: onnxruntime       # the runtime its parity is checked on
        precision: int8
        file: model_int8.onnx
        sha256: {model_int8.onnx: ...}
        file_bytes: 123456
        parity: {random: {...}, real: {...}, passed, tolerance}
        quantization:              # records.Quantization
          recipe: {method, num_images, seed, keep_head, ort_quantizer, ..., max_drop, ...}
          calibration: {num_images, seed, list_sha256, source}
          higher_precision_layers: [...]
      litert_fp32:
        ...
        litert: {layout: NHWC, converter: litert-torch ...}   # records.LiteRTBuild
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from okdhp_edge.backends import (
    backend_module,
    format_builder,
    make_runner,
    qat_builder,
    unavailable_reason,
)
from okdhp_edge.backends.base import BackendUnavailable, conversion_failed, run_one_by_one
from okdhp_edge.backends.recipe import QuantRecipe
from okdhp_edge.errors import OkdhpError, UsageError
from okdhp_edge.evaluation.parity import PARITY_STD_RATIO, parity
from okdhp_edge.manifest import DECODER_KEY, RECIPE_KEY, model_file_metadata
from okdhp_edge.records import (
    ExportRecord,
    FormatRecord,
    ManifestError,
    StudentManifest,
    format_record,
    read_record,
    write_record,
)
from okdhp_edge.targets import (
    FORMATS,
    SUBPIXEL_REVISION,
    TARGETS,
    TOLERANCE,
    ExportFormat,
    format_chain,
)
from okdhp_edge.utils.io import remove_stale_temporaries, sha256_file

log = logging.getLogger(__name__)

DEFAULT_FORMATS = ("onnx", "onnx_dynamic", "openvino_fp32", "openvino_fp16", "tensorrt_fp32",
                   "tensorrt_fp16")


def parity_inputs(man: StudentManifest, n_random: int = 4, n_real: int = 8
                  ) -> dict[str, np.ndarray]:
    """Seeded random inputs and real crops of the student's report split (when readable)."""
    w, h = man.preprocessing.input_size
    rng = np.random.default_rng(0)
    out = {"random": rng.standard_normal((n_random, 3, h, w)).astype(np.float32)}
    try:
        from okdhp_edge.evaluation.datasets import report_dataset

        ds = report_dataset(man)
        idx = np.linspace(0, len(ds) - 1, min(n_real, len(ds))).astype(int)
        out["real"] = np.stack([ds[int(i)]["image"] for i in idx])
    except Exception as exc:  # noqa: BLE001 - parity on random inputs still runs
        log.warning("no real parity inputs for %s: %s", man.name, exc)
    return out


def _cached(old: dict[str, FormatRecord], fmt: str, out_dir: Path, recipe: QuantRecipe,
            man: Optional[StudentManifest] = None, decoder: str = "transposed"
            ) -> Optional[FormatRecord]:
    """An earlier export of ``fmt`` that can be trusted (None otherwise): every file still
    hashes as recorded and, for a quantized file, it was made with this recipe (the fields
    its backend's quantizer reads). The recipe is the one the file itself carries in its
    metadata, not export.yaml's (an edit there cannot make a file pass for another); the
    entry returned records it. A file that carries none (one made before the recipe was
    bound) is judged by export.yaml's. A file that names another student is rebuilt."""
    entry, spec = old.get(fmt), FORMATS[fmt]
    if not entry or not entry.available or set(entry.sha256) != set(spec.files):
        return None
    for rel, digest in entry.sha256.items():
        path = out_dir / rel
        if not path.is_file():
            log.warning("%s: missing (export.yaml lists it); rebuilding %s", path, fmt)
            return None
        if sha256_file(path) != digest:
            log.warning("%s: sha256 differs from export.yaml; rebuilding %s", path, fmt)
            return None
    revision = _build_revision(spec, man, decoder)
    if (entry.build_revision or 0) != revision:
        log.info("%s: made by revision %d of its builder, now %d; rebuilding", fmt,
                 entry.build_revision or 0, revision)
        return None
    found = _file_metadata(spec, out_dir / spec.model_file)  # read once, the file's own word
    if found is None or (man is not None and not _names_this_student(found, man, spec)):
        return None
    if spec.calibrated:
        if entry.quantization is None:
            return None
        text = found.get(RECIPE_KEY)
        made = json.loads(text) if text else None
        if made is not None and made != entry.quantization.recipe:
            log.warning("%s: export.yaml's recipe differs from the file's own; the file's "
                        "counts", out_dir / spec.model_file)
            entry = dataclasses.replace(
                entry, quantization=dataclasses.replace(entry.quantization, recipe=made))
        if man is not None and man.qat is not None:  # made from its program, not a recipe
            return entry if entry.quantization.recipe == man.qat.recipe and \
                _fits_here(spec, entry, man) else None
        if not recipe.same_as(entry.quantization.recipe, spec.runs_on):
            return None
    return entry


def _fits_here(spec: ExportFormat, entry: FormatRecord, man: StudentManifest) -> bool:
    """Whether a cached QAT file suits this machine (its backend's ``qat_file_fits_here``:
    ONNX Runtime's weight form depends on the CPU's int8 dot product); True where the
    backend has no such rule."""
    fits = getattr(backend_module(spec.builder), "qat_file_fits_here", None)
    if fits is None or fits(spec, entry, man):
        return True
    log.info("%s: made for another CPU's int8 kernels; rebuilding", spec.name)
    return False


# what a model file carries of its student that names it: an export.yaml whose sha256 line
# was edited to match another student's file cannot make that file pass for this student's
_IDENTITY = ("okdhp_student", "okdhp_weights_sha256")


def _file_metadata(spec: ExportFormat, path: Path) -> Optional[dict[str, str]]:
    """The ``okdhp_*`` metadata ``path`` carries ({} for a format that carries none, such
    as a TensorRT engine, judged by its sha256 alone); None when it cannot be read (the
    file is rebuilt, not trusted)."""
    reader = getattr(backend_module(spec.builder), "file_metadata", None)
    if reader is None:
        return {}
    try:
        return reader(path)
    except Exception as exc:  # noqa: BLE001 - an unreadable file is rebuilt, not trusted
        log.warning("%s: metadata unreadable (%s); rebuilding %s", path, exc, spec.name)
        return None


def _names_this_student(found: dict[str, str], man: StudentManifest,
                        spec: ExportFormat) -> bool:
    """Whether a file's metadata ``found`` names ``man`` as its student (where it says)."""
    expected = model_file_metadata(man)
    other = [k for k in _IDENTITY if k in found and k in expected and found[k] != expected[k]]
    if other:
        log.warning("%s of %s: its %s names another student; rebuilding", spec.name,
                    man.name, other[0][len("okdhp_"):])
    return not other


def _from_program(spec: ExportFormat, man: Optional[StudentManifest]) -> bool:
    """Whether ``spec``'s file of student ``man`` is made from its int8 program (the INT8
    file of a quantization-aware student), not by the format's own builder."""
    return man is not None and man.qat is not None and spec.precision == "int8"


def _build_revision(spec: ExportFormat, man: Optional[StudentManifest] = None,
                    decoder: str = "transposed") -> int:
    """The revision of the builder of ``spec`` (a backend module's ``BUILD_REVISION``,
    raised when what it builds changes: one number for all its formats, or one per format
    name; its ``QAT_BUILD_REVISION`` for the INT8 file of a quantization-aware student
    ``man``; 0 where it declares none), plus :data:`okdhp_edge.targets.SUBPIXEL_REVISION`
    for a file of that decoder form (both only rise, so a file made before either rose
    reads lower)."""
    name = "QAT_BUILD_REVISION" if _from_program(spec, man) else "BUILD_REVISION"
    revision = getattr(backend_module(spec.builder), name, 0)
    own = int(revision.get(spec.name, 0) if isinstance(revision, dict) else revision)
    return own + (SUBPIXEL_REVISION if decoder == "subpixel" else 0)


class _Context:
    """What building and checking formats needs, made once and only when needed (the
    :class:`okdhp_edge.backends.base.BuildContext` the backends' builders receive)."""

    def __init__(self, model: Any, man: StudentManifest, out_dir: Path,
                 recipe: QuantRecipe, student_dir: Path, decoder: str = "transposed") -> None:
        self.model, self.man, self.out_dir, self.recipe = model, man, out_dir, recipe
        self.student_dir, self.decoder = student_dir, decoder
        self._inputs: Optional[dict[str, np.ndarray]] = None
        self._ref: Optional[dict[str, np.ndarray]] = None
        self._qat_ref: Optional[dict[str, np.ndarray]] = None
        self._calib: Optional[tuple[np.ndarray, dict[str, Any]]] = None

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.man.preprocessing.input_size)

    def path(self, fmt: str) -> Path:
        return self.out_dir / FORMATS[fmt].model_file

    def reference(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Parity inputs and the student's own fp32 heatmaps on them."""
        if self._inputs is None:
            import torch

            self._inputs = parity_inputs(self.man)
            with torch.no_grad():
                self._ref = {k: self.model(torch.from_numpy(v)).heatmap.numpy()
                             for k, v in self._inputs.items()}
        return self._inputs, self._ref

    def qat_reference(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Parity inputs and the heatmaps of the student's int8 program on them (what its
        INT8 files are checked against: the fake-quantized model as PyTorch runs it)."""
        inputs, _ = self.reference()
        if self._qat_ref is None:
            from okdhp_edge.convert.qat_program import run_program

            program = self.qat_program("transposed")  # the student's own, not a rewrite
            self._qat_ref = {k: run_program(program, v) for k, v in inputs.items()}
        return inputs, self._qat_ref

    def qat_program(self, decoder: Optional[str] = None) -> Any:
        """A quantization-aware student's int8 program, freshly loaded (a lowering may
        change the program it is given), its sha256 checked against the manifest, with its
        decoder in ``decoder`` form (default: this export's)."""
        from okdhp_edge.convert.qat_program import load_program, program_in_form
        from okdhp_edge.manifest import path_inside

        ref = self.man.qat.program
        where = self.student_dir / "student.yaml"
        program = load_program(path_inside(self.student_dir, ref.file, where), ref.sha256)
        return program_in_form(program, decoder or self.decoder)

    def calibration(self) -> tuple[np.ndarray, dict[str, Any]]:
        if self._calib is None:
            from okdhp_edge.convert.quantize import calibration_set

            self._calib = calibration_set(self.man, self.recipe)
        return self._calib

    def selection_validation(self) -> tuple[list, Callable, Callable]:
        return selection_validation(self.man)

    def metadata(self, fmt: Optional[ExportFormat] = None) -> dict[str, str]:
        meta = model_file_metadata(self.man)
        if self.decoder != "transposed":
            meta[DECODER_KEY] = self.decoder
        if fmt is not None and fmt.calibrated:
            made = self.man.qat.recipe if self.man.qat is not None else self.recipe.as_dict()
            meta[RECIPE_KEY] = json.dumps(made, sort_keys=True)
        return meta


def export_dir_of(student_yaml: Path, decoder: str = "transposed") -> Path:
    """Where a student's files of one decoder form live: ``export/`` beside its
    ``student.yaml``, ``export/subpixel/`` for the sub-pixel form."""
    base = Path(student_yaml).parent / "export"
    return base if decoder == "transposed" else base / decoder


def decoder_model(model: Any, man: StudentManifest, decoder: str) -> Any:
    """The student's network with its decoder in ``decoder`` form (the same outputs: the
    sub-pixel rewrite is exact in float); UsageError for a form its family lacks."""
    from okdhp_edge.families import family_of

    forms = family_of(man.architecture.family).decoder_forms
    if decoder not in forms:
        raise UsageError(f"decoder {decoder}: student {man.name} has no transposed-"
                         f"convolution decoder (its forms: {', '.join(forms)})")
    if decoder == "transposed":
        return model
    from okdhp_edge.convert.subpixel import subpixel_student

    sub = subpixel_student(model)
    if sub is None:
        raise UsageError(f"decoder subpixel: student {man.name} has no 4x4 stride-2 "
                         "transposed convolution with its batch norm and ReLU to rewrite")
    return sub


def export_student(student_yaml: Path, out_dir: Optional[Path] = None,
                   formats: tuple[str, ...] = DEFAULT_FORMATS, force: bool = False,
                   recipe: Optional[QuantRecipe] = None, decoder: str = "transposed"
                   ) -> ExportRecord:
    """Export a student to ``formats`` (and the formats they are built from) with its
    decoder in ``decoder`` form (:data:`okdhp_edge.targets.DECODER_FORMS`; default folder
    :func:`export_dir_of`) and return its export manifest (also written as
    ``export.yaml``). Earlier files are reused when their sha256 and recipe check out,
    unless ``force``."""
    from okdhp_edge.manifest import verified_student_manifest

    recipe = recipe or QuantRecipe()
    student_yaml = Path(student_yaml)
    out_dir = Path(out_dir or export_dir_of(student_yaml, decoder))
    remove_export_temporaries(out_dir)  # a killed export's torn files
    man = verified_student_manifest(student_yaml)
    old = {} if force else _previous(out_dir / "export.yaml", man, decoder)
    wanted: list[str] = []
    for f in formats:  # the sources of a format whose runtime is missing here are not built
        # for it (TensorRT INT8's QDQ ONNX, a second calibration, on a CPU box)
        chain = [f] if unavailable_reason(FORMATS[f].runs_on) else format_chain(f)
        wanted += [g for g in chain if g not in wanted]
    # every file cached: checked without torch or the weights (a bench of an exported zoo
    # starts its export workers in a fraction of the time)
    kept = {fmt: _cached(old, fmt, out_dir, recipe, man, decoder) for fmt in wanted}
    done = {**old, **{f: k for f, k in kept.items() if k is not None}}
    todo = [f for f in wanted if kept[f] is None]
    # a format whose runtime is missing here needs no model either (TensorRT on a CPU box)
    missing = {f: r for f in todo if (r := unavailable_reason(FORMATS[f].runs_on))}
    done.update({f: _unavailable(f, r) for f, r in missing.items()})
    todo = [f for f in todo if f not in missing]
    if not todo:
        return _write_record(out_dir, man, done, decoder)
    from okdhp_edge.students import load_student

    model, man = load_student(student_yaml)
    model = decoder_model(model.eval(), man, decoder)
    ctx = _Context(model, man, out_dir, recipe, student_yaml.parent, decoder)
    for fmt in todo:
        done[fmt] = _export_one(fmt, ctx, done)
        _write_record(out_dir, man, done, decoder)  # a crash keeps what is done
    return _write_record(out_dir, man, done, decoder)


def remove_export_temporaries(out_dir: Path) -> None:
    """Delete what killed builders left in an export folder (their temporaries)."""
    for folder in {(out_dir / rel).parent for spec in FORMATS.values() for rel in spec.files}:
        remove_stale_temporaries(folder)


def _write_record(out_dir: Path, man: StudentManifest, formats: dict[str, FormatRecord],
                  decoder: str) -> ExportRecord:
    record = ExportRecord(schema=ExportRecord.VERSION, student=man.name,
                          weights_sha256=man.weights.sha256, preprocessing=man.preprocessing,
                          formats=dict(formats), decoder=decoder)
    write_record(out_dir / "export.yaml", record)
    return record


def read_export_record(path: Path) -> ExportRecord:
    """``export.yaml``, strictly (every format entry a known format's record);
    ManifestError in one line otherwise."""
    rec = read_record(ExportRecord, path)
    unknown = sorted(set(rec.formats) - set(FORMATS))
    if unknown:
        raise ManifestError(f"{path}: formats.{unknown[0]} is not a known format")
    return rec


def _previous(path: Path, man: StudentManifest, decoder: str) -> dict[str, FormatRecord]:
    """The formats of an earlier export of these very weights in this decoder form ({}
    otherwise: an unreadable or older record is rebuilt, not trusted)."""
    if not path.is_file():
        return {}
    try:
        old = read_export_record(path)
    except ManifestError as exc:
        log.warning("%s; exporting again", exc)
        return {}
    if old.weights_sha256 != man.weights.sha256 or old.decoder != decoder:
        return {}
    return dict(old.formats)


def _unavailable(fmt: str, reason: str) -> FormatRecord:
    """The record of a format that cannot be built here, saying why."""
    spec = FORMATS[fmt]
    return format_record({"backend": spec.runs_on, "precision": spec.precision,
                          "available": False, "reason": reason}, fmt)


def _export_one(fmt: str, ctx: _Context, done: dict[str, FormatRecord]) -> FormatRecord:
    spec = FORMATS[fmt]
    entry: dict[str, Any] = {"backend": spec.runs_on, "precision": spec.precision}
    src = spec.source
    reason = unavailable_reason(spec.runs_on)
    if reason is None and src and not (src in done and done[src].available):
        reason = f"needs {src}: {done[src].reason if src in done else 'not built'}"
    if reason is None:
        try:
            builder = qat_builder if _from_program(spec, ctx.man) else format_builder
            entry.update(builder(fmt)(ctx, spec))
        except BackendUnavailable as exc:
            reason = str(exc)
        except OkdhpError:
            raise  # the user's error (too few calibration images...): one line, as it is
        except Exception as exc:  # noqa: BLE001 - one format's failure is its row's reason
            log.warning("building %s of %s failed", fmt, ctx.man.name, exc_info=True)
            for rel in spec.files:  # what it wrote before failing (a file a runtime refuses)
                (ctx.out_dir / rel).unlink(missing_ok=True)
            reason = str(conversion_failed(exc, f"building {fmt}"))
    if reason:
        log.info("%s of %s unavailable: %s", fmt, ctx.man.name, reason)
        return _unavailable(fmt, reason)
    files = {rel: sha256_file(ctx.out_dir / rel) for rel in spec.files}
    if revision := _build_revision(spec, ctx.man, ctx.decoder):
        entry["build_revision"] = revision
    entry.update(available=True, file=spec.model_file, sha256=files,
                 file_bytes=sum((ctx.out_dir / rel).stat().st_size for rel in spec.files))
    entry["parity"] = _check_parity(fmt, ctx)
    return format_record(entry, fmt)


def _check_parity(fmt: str, ctx: _Context) -> dict[str, Any]:
    """The file run by the backend it is made for, against the student in PyTorch fp32 (a
    quantization-aware student's INT8 file: against its int8 program in PyTorch)."""
    spec = FORMATS[fmt]
    qat = _from_program(spec, ctx.man)
    inputs, ref = ctx.qat_reference() if qat else ctx.reference()
    stride = ctx.man.preprocessing.heatmap_stride
    # the file carries its precision; the runner is asked for fp32 (int8: the quantized file)
    device = TARGETS[(spec.runs_on, "fp32")].device
    runner = make_runner(spec.runs_on, "int8" if spec.precision == "int8" else "fp32",
                         threads=1, device="cpu" if device == "host" else device)
    try:
        runner.load(str(ctx.path(fmt)))
        res: dict[str, Any] = {k: parity(ref[k], run_one_by_one(runner, x), stride)
                               for k, x in inputs.items()}
    except Exception as exc:  # noqa: BLE001 - a failed parity is reported, not hidden
        return {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        runner.close()
    tol_err, tol_disp = TOLERANCE[spec.precision]
    lo, hi = PARITY_STD_RATIO
    moved = _displacement_judged_on(spec.precision, res)
    res["passed"] = bool(all(
        v["max_abs_heatmap_err"] <= tol_err and lo <= v["std_ratio"] <= hi
        and (k not in moved or v["mean_kpt_disp_px"] <= tol_disp) for k, v in res.items()))
    res["tolerance"] = {"max_abs_heatmap_err": tol_err, "mean_kpt_disp_px": tol_disp,
                        "std_ratio": [lo, hi], "displacement_judged_on": sorted(moved)}
    if not res["passed"]:
        log.warning("parity FAILED for %s: %s", ctx.path(fmt), res)
    return res


def _displacement_judged_on(precision: str, res: dict[str, Any]) -> set[str]:
    """The inputs whose keypoint displacement a file's parity is judged on: all of them,
    but for an INT8 file that has real crops, only those. A noise image's heatmaps have no
    real peak, only near-ties an int8 rounding step reorders: ONNX Runtime's INT8 files of
    quantization-aware MobileNetV2 students moved them 3.0-3.3 px from their program on
    noise and 0.7-0.8 px on real crops, every heatmap within 0.09 of it (docs/int8.md)."""
    if precision == "int8" and "real" in res:
        return {"real"}
    return set(res)


def selection_validation(man: StudentManifest) -> tuple[list, Callable, Callable]:
    """(items, to_input, metric_fn) on the student's selection split, for NNCF accuracy
    control: ``metric_fn(compiled_model, items)`` is the split's metric (AP, or PCKh) of
    the items given (a sample of the split scores only its own images)."""
    from okdhp_edge.evaluation.datasets import training_split
    from okdhp_edge.evaluation.inference import Predictions, score

    ds = training_split(man, "select")
    items = [(ds[i]["image"][None].astype(np.float32), i) for i in range(len(ds))]

    def metric(compiled: Any, chosen: list) -> float:
        out = compiled.output(0)
        idx = np.array([i for _, i in chosen])
        hms = np.concatenate([compiled(x)[out] for x, _ in chosen])
        centers = np.stack([ds.records[i].center for i in idx])
        scales = np.stack([ds.records[i].scale for i in idx])
        coords, maxvals = ds.codec.decode_to_image(hms, centers, scales)
        res = score(ds, Predictions(idx, coords, maxvals),
                    headboxes=ds.headboxes, subset=True)
        return float(res["value"])

    return items, (lambda item: item[0]), metric
