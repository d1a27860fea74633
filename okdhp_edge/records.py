"""The on-disk records, one frozen dataclass each, with their versions and migrations.

=====================  ===============================  =====================  ========
record                 file                             class                  version
=====================  ===============================  =====================  ========
student manifest       ``<zoo>/<student>/student.yaml``  :class:`StudentManifest`  2
zoo manifest           ``<zoo>/zoo.yaml``                :class:`ZooManifest`      1
export record          ``<student>/export/export.yaml``  :class:`ExportRecord`     2
bundle manifest        ``<bundle>/bundle.yaml``          :class:`BundleManifest`   1
bundle set index       ``<set>/bundles.yaml``            :class:`BundleSet`        1
bench report           ``<zoo>.json``                    :class:`BenchReport`      1
calibration report     ``<calibration>.json``            :class:`CalibrationReport` 1
=====================  ===============================  =====================  ========

Every record is read by :func:`read_record` (the strict loader of :mod:`okdhp_edge.schema`:
unknown fields named with the closest valid one, types checked, then the record's own
range checks), after its version is checked and older versions are migrated in memory by
the functions in :data:`MIGRATIONS`. Readers use attributes; :meth:`Record.to_dict` gives
the plain data that is written. No torch.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, TypeVar

from okdhp_edge.errors import ManifestError, ReportError
from okdhp_edge.schema import OMIT_NONE, check_version, from_dict, optional_number, to_dict
from okdhp_edge.utils.values import is_finite_number, is_plain_name

R = TypeVar("R", bound="Record")

# accuracy.split of a student built by `bench --plan`: random weights, no accuracy
UNTRAINED_SPLIT = "untrained"


class Record:
    """Base of the on-disk records: ``VERSION_KEY`` names the version field, ``VERSION``
    the version this okdhp_edge writes, ``ERROR`` what a bad one raises."""

    VERSION_KEY: ClassVar[str] = "schema"
    VERSION: ClassVar[int] = 1
    ERROR: ClassVar[type[ManifestError]] = ManifestError

    @classmethod
    def from_data(cls: type[R], data: Any, where: str) -> R:
        """The record from plain data: version checked, older versions migrated, strict."""
        version = check_version(data, cls.VERSION_KEY, cls.VERSION, where, cls.ERROR)
        while version < cls.VERSION:
            data = MIGRATIONS[(cls.__name__, version)](dict(data), where)
            version += 1
        return from_dict(cls, data, where, cls.ERROR)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def replace(self: R, **changes: Any) -> R:
        """A copy with ``changes`` (records are frozen)."""
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- student


@dataclass(frozen=True)
class Preprocessing:
    """What turns an image and a person box into the model's input, and heatmaps back into
    keypoints: the one record of the normalisation a student was trained with (training
    writes it; evaluation, export and the runtime read it)."""

    input_size: list[int]  # [w, h]
    mean: list[float]  # per channel, on 0..1 RGB
    std: list[float]
    box_padding: float
    heatmap_stride: int
    sigma: float
    flip_pairs: list[list[int]]

    @property
    def hw(self) -> tuple[int, int]:
        """The input's (height, width)."""
        return self.input_size[1], self.input_size[0]

    def _check(self, where: str) -> None:
        size = self.input_size
        if len(size) != 2 or not all(16 <= v <= 4096 for v in size):
            raise ManifestError(f"{where}: preprocessing.input_size must be [w, h], ints in "
                                "16..4096")
        if self.heatmap_stride < 1 or any(v % self.heatmap_stride for v in size):
            raise ManifestError(f"{where}: preprocessing.heatmap_stride must divide the input "
                                "size")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if len(values) != 3 or not all(is_finite_number(v, positive=key == "std")
                                           for v in values):
                raise ManifestError(f"{where}: preprocessing.{key} must be 3 finite numbers"
                                    + (" > 0" if key == "std" else ""))
        if not (is_finite_number(self.sigma, positive=True)
                and is_finite_number(self.box_padding, positive=True)):
            raise ManifestError(f"{where}: preprocessing.sigma and box_padding must be > 0")
        if not all(len(p) == 2 for p in self.flip_pairs):
            raise ManifestError(f"{where}: preprocessing.flip_pairs must be [i, j] int pairs")


@dataclass(frozen=True)
class Architecture:
    family: str  # a model registry name (or encoder_decoder)
    args: dict[str, Any]  # the family's own constructor arguments
    num_joints: int
    input_size: list[int]


@dataclass(frozen=True)
class Compression:
    params: float  # the largest student's over this one's
    macs: float


@dataclass(frozen=True)
class WeightsRef:
    file: str
    sha256: str


@dataclass(frozen=True)
class Bootstrap:
    """How an accuracy interval was drawn (:mod:`okdhp_edge.evaluation.uncertainty`)."""

    unit: str  # image (COCO AP) | person (PCKh)
    units: int
    n_resamples: int
    seed: int
    confidence: float
    method: str


def interval_ok(ci: Optional[list[float]]) -> bool:
    """None, or [low, high] of finite numbers with low <= high."""
    return ci is None or (len(ci) == 2 and all(optional_number(v) and v is not None
                                               for v in ci) and ci[0] <= ci[1])


@dataclass(frozen=True)
class Accuracy:
    """A student's accuracy on its report split, where that split is, and (since the
    error-bars work) its bootstrap interval with the per-image/person results it came
    from (``units``: :meth:`okdhp_edge.evaluation.uncertainty.UnitResults.encode`)."""

    metric: str
    value: Optional[float]
    dataset: str
    split: str
    ann: str
    images: str
    headboxes: str
    flip_test: bool
    stats: dict[str, Any]
    ci95: Optional[list[float]] = field(default=None, metadata=OMIT_NONE)
    bootstrap: Optional[Bootstrap] = field(default=None, metadata=OMIT_NONE)
    units: Optional[str] = field(default=None, metadata=OMIT_NONE)

    @property
    def untrained(self) -> bool:
        return self.split == UNTRAINED_SPLIT

    def _check(self, where: str) -> None:
        if not optional_number(self.value):
            raise ManifestError(f"{where}: accuracy.value must be a finite number or null")
        if not interval_ok(self.ci95):
            raise ManifestError(f"{where}: accuracy.ci95 must be [low, high], low <= high")


@dataclass(frozen=True)
class Provenance:
    config: str
    run: str
    git_commit: str
    seed: int
    branch: int
    multi_branch: dict[str, Any]  # {} plain; hourglass {shared_stacks, branches}; light ...
    splits: dict[str, Any]  # where the training data is, how selection was held out
    distillation: dict[str, Any]
    epoch: int
    select_metric: Optional[float]


@dataclass(frozen=True)
class QatRecord:
    """What a quantization-aware student records of its fine-tuning: the float run it
    started from, the recipe (quantizer, weights, activations, observers, KD on or off,
    epochs, LR), its converted PT2E program (the int8 parameters every backend's INT8 file
    is made from; sha256-verified before it is loaded) and that program's report-split
    metric in PyTorch (its fake-quantized accuracy)."""

    from_run: str
    recipe: dict[str, Any]
    program: WeightsRef
    accuracy: Optional[float] = None


@dataclass(frozen=True)
class StudentManifest(Record):
    """``student.yaml``: one trained (or planned) student of a zoo::

        schema: 2
        name: hg4
        architecture:
          family: stacked_hourglass            # a model registry name (or encoder_decoder)
          args: {num_stacks, width, ...}       # the family's own constructor arguments
                                               # ({encoder, width_mult, decoder_width, ...})
          num_joints: int
          input_size: [w, h]
        params: int
        macs: int
        compression: {params, macs}          # relative to the largest student of the zoo
        weights: {file, sha256}
        preprocessing: {input_size, mean, std, box_padding, heatmap_stride, sigma, flip_pairs}
        accuracy: {metric, value, dataset, split, ann, images, headboxes, flip_test, stats}
        provenance: {config, run, git_commit, seed, branch, multi_branch, splits, distillation,
                     epoch, select_metric}
        qat: {from_run, recipe, program: {file, sha256}, accuracy}   # quantization-aware only

    ``multi_branch`` holds the training network's branch layout ({} for a plain run; hourglass
    {shared_stacks, branches}, light {encoder, width_mult, decoder_widths});
    ``splits`` where its training data is and how the selection split was held out
    (calibration and accuracy-controlled quantization rebuild them from it). Schema 1
    manifests (hourglass only, written before the stem became a switch) are read and migrated
    in memory: their architecture fields move under ``args`` with ``stem: lua``, the only stem
    there was then, and their ``splits`` are unknown ({}).
    """

    VERSION: ClassVar[int] = 2

    schema: int
    name: str
    architecture: Architecture
    params: int
    macs: int
    compression: Compression
    weights: WeightsRef
    preprocessing: Preprocessing
    accuracy: Accuracy
    provenance: Provenance
    qat: Optional[QatRecord] = field(default=None, metadata=OMIT_NONE)

    @property
    def untrained(self) -> bool:
        return self.accuracy.untrained


_V1_ARCH = ("num_stacks", "width", "depth", "stem_width")


def _student_v1_to_v2(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Schema 1 (hourglass only, written before the stem became a switch): architecture
    fields move under ``args`` with ``stem: lua``, the only stem there was then; the branch
    layout moves to ``multi_branch``; the splits are unknown ({})."""
    try:
        arch, prov = dict(data["architecture"]), dict(data["provenance"])
        args = {k: arch.pop(k) for k in _V1_ARCH}
        branches, shared = prov.pop("branches"), prov.pop("shared_stacks")
    except (KeyError, TypeError) as exc:
        raise ManifestError(f"{where}: schema 1 manifest without field {exc}") from None
    arch = {"family": arch.get("family"), "args": {**args, "stem": "lua"},
            "num_joints": arch.get("num_joints"), "input_size": arch.get("input_size")}
    prov["multi_branch"] = ({"shared_stacks": shared, "branches": branches} if branches
                            else {})
    prov["splits"] = {}
    return {**data, "schema": 2, "architecture": arch, "provenance": prov}


@dataclass(frozen=True)
class ZooManifest(Record):
    """``zoo.yaml``: the students of one training run (or plan), smallest first."""

    schema: int
    name: str
    students: list[str]
    run: str
    dataset: str
    metric: str


# --------------------------------------------------------------------------- export


# a field where an empty mapping was once written for "none": read as None
EMPTY_IS_NONE = {"omit_none": True, "empty_is_none": True}


@dataclass(frozen=True)
class ParityStats:
    """A file's heatmaps against the reference on one kind of input (:func:`okdhp_edge.
    evaluation.parity.parity`)."""

    max_abs_heatmap_err: float
    mean_kpt_disp_px: float  # decoded keypoints, input pixels, over the joints compared
    max_kpt_disp_px: float
    joints_compared: int
    std_ratio: Optional[float] = field(default=None, metadata=OMIT_NONE)  # spread kept: 1


@dataclass(frozen=True)
class ParityTolerance:
    """The bounds a file's parity was judged against (its precision's)."""

    max_abs_heatmap_err: float
    mean_kpt_disp_px: float
    std_ratio: Optional[list[float]] = field(default=None, metadata=OMIT_NONE)  # [lo, hi]
    # the inputs whose keypoint displacement counts (INT8 with real crops: those only)
    displacement_judged_on: Optional[list[str]] = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class Parity:
    """A file run by its backend against the student in PyTorch fp32: on seeded random
    inputs and real crops of the report split, whether it passed, and against what; or
    the error that kept it from running."""

    passed: bool
    random: Optional[ParityStats] = field(default=None, metadata=OMIT_NONE)
    real: Optional[ParityStats] = field(default=None, metadata=OMIT_NONE)
    tolerance: Optional[ParityTolerance] = field(default=None, metadata=OMIT_NONE)
    error: Optional[str] = field(default=None, metadata=OMIT_NONE)

    @property
    def inputs(self) -> dict[str, ParityStats]:
        """The inputs it was run on: ``random`` and, where readable, ``real``."""
        return {k: v for k, v in (("random", self.random), ("real", self.real)) if v}

    @property
    def max_heatmap_err(self) -> Optional[float]:
        return max((v.max_abs_heatmap_err for v in self.inputs.values()), default=None)

    def summary(self) -> str:
        """Its figures in one line (what a refusal to bundle says)."""
        if self.error:
            return self.error
        parts = [f"{k}: max heatmap err {v.max_abs_heatmap_err:.3g}, mean keypoint shift "
                 f"{v.mean_kpt_disp_px:.3g} px" for k, v in self.inputs.items()]
        tol = self.tolerance
        return "; ".join(parts) + (f" (tolerance: heatmap err {tol.max_abs_heatmap_err:g}, "
                                   f"keypoint shift {tol.mean_kpt_disp_px:g} px)" if tol else "")


@dataclass(frozen=True)
class CalibrationList:
    """Which crops calibrated an INT8 file: how many, drawn with which seed, the sha256 of
    their record ids, and where from."""

    num_images: int
    seed: int
    list_sha256: str
    source: str


@dataclass(frozen=True)
class Quantization:
    """How a quantized file was made: the recipe (the flat post-training recipe of
    :class:`okdhp_edge.backends.recipe.QuantRecipe`, or a quantization-aware student's), its
    calibration (none for a QAT student's program), the range method and quantizer used, the
    activations' form, and the layers left in higher precision. Carried by the file's
    export record, its bundle and every bench row of it."""

    recipe: dict[str, Any]
    calibration: Optional[CalibrationList] = field(default=None, metadata=OMIT_NONE)
    calibration_method: Optional[str] = field(default=None, metadata=OMIT_NONE)
    quantizer: Optional[str] = field(default=None, metadata=OMIT_NONE)  # where a backend has two
    activations: Optional[str] = field(default=None, metadata=OMIT_NONE)
    weights: Optional[str] = field(default=None, metadata=OMIT_NONE)  # where not the recipe's
    higher_precision_layers: Optional[list[str]] = field(default=None, metadata=OMIT_NONE)

    @property
    def quantization_aware(self) -> bool:
        """Made from a quantization-aware student's program (a quantizer named in its
        recipe, no calibration)."""
        return self.calibration is None and bool(self.recipe.get("quantizer"))


@dataclass(frozen=True)
class LiteRTBuild:
    """What LiteRT's builder records of a ``.tflite`` file."""

    layout: str  # its input layout
    converter: Optional[str] = field(default=None, metadata=OMIT_NONE)  # litert-torch version
    weights: Optional[str] = field(default=None, metadata=OMIT_NONE)  # float16: fp16 weights
    # a sub-pixel decoder's depth-to-space, where not PyTorch's NCHW PixelShuffle
    depth_to_space: Optional[str] = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class ExecuTorchBuild:
    """What ExecuTorch's builder records of a ``.pte`` program."""

    layout: str
    delegate: str  # XNNPACK
    version: str  # the executorch package that lowered it
    xnnpack_partitions: Optional[int] = field(default=None, metadata=OMIT_NONE)
    outside_xnnpack: Optional[list[str]] = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class FormatRecord:
    """One format of an export: its file and sha256s, its parity against PyTorch fp32, how
    a quantized file was made, what its backend's builder records of it; or why it is not
    there."""

    backend: str  # the runtime its parity is checked on
    precision: str
    available: bool
    reason: str = ""
    file: str = ""
    sha256: dict[str, str] = field(default_factory=dict)
    file_bytes: Optional[int] = None
    parity: Optional[Parity] = field(default=None, metadata=EMPTY_IS_NONE)
    quantization: Optional[Quantization] = field(default=None, metadata=OMIT_NONE)
    litert: Optional[LiteRTBuild] = field(default=None, metadata=OMIT_NONE)
    executorch: Optional[ExecuTorchBuild] = field(default=None, metadata=OMIT_NONE)
    # the builder's BUILD_REVISION when it declares one: a file made by an older revision
    # of its builder is rebuilt, not reused
    build_revision: Optional[int] = None


def format_record(data: dict[str, Any], where: str) -> FormatRecord:
    """A format entry as a builder returns it, checked (None fields left out on write)."""
    return from_dict(FormatRecord, data, where, ManifestError)


@dataclass(frozen=True)
class ExportRecord(Record):
    """``export.yaml``: every format exported from one student's weights. Version 2 held a
    format's quantization and its builder's facts as flat fields of the format; migrated on
    read."""

    VERSION: ClassVar[int] = 3

    schema: int
    student: str
    weights_sha256: str
    preprocessing: Preprocessing
    formats: dict[str, FormatRecord]
    # the form of the student's decoder in these files (targets.DECODER_FORMS)
    decoder: str = "transposed"

    def to_dict(self) -> dict[str, Any]:
        out = to_dict(self)
        out["formats"] = {k: _without_none(v) for k, v in out["formats"].items()}
        return out


def _without_none(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if v is not None}


# --------------------------------------------------------------------------- bundles


@dataclass(frozen=True)
class BundleManifest(Record):
    """``bundle.yaml``: one student's model file for one backend and precision, with the
    student's own manifest (its weights not shipped: ``weights`` names no file). Version 1
    carried a copy of some of the manifest's fields and the preprocessing beside it; it is
    migrated on read."""

    VERSION_KEY: ClassVar[str] = "bundle_version"
    VERSION: ClassVar[int] = 2

    bundle_version: int
    okdhp_edge: str
    student: str
    backend: str
    precision: str
    model: str  # the target's model file
    files: dict[str, str]  # every file of the bundle but bundle.yaml -> sha256
    student_manifest: StudentManifest
    parity: Parity
    quantization: Optional[Quantization] = field(default=None, metadata=OMIT_NONE)
    input_layout: str = "NCHW"  # the model file's input layout (checked at load)
    requires: Optional[str] = field(default=None, metadata=OMIT_NONE)  # the pip extra
    # shipped although its parity check failed (`zoo export --allow-parity-failure`)
    parity_failure_allowed: Optional[bool] = field(default=None, metadata=OMIT_NONE)
    # the form of the student's decoder in the model file (targets.DECODER_FORMS)
    decoder: str = "transposed"

    def _check(self, where: str) -> None:
        from okdhp_edge.targets import LAYOUTS

        if self.input_layout not in LAYOUTS:
            raise ManifestError(f"{where}: input_layout must be one of {', '.join(LAYOUTS)}")
        if not self.files:
            raise ManifestError(f"{where}: 'files' lists nothing to verify")
        if self.model not in self.files:
            raise ManifestError(f"{where}: model '{self.model}' is not one of the verified "
                                "files")

    @property
    def preprocessing(self) -> Preprocessing:
        """The student's preprocessing (its manifest's)."""
        return self.student_manifest.preprocessing

    def student_record(self) -> StudentManifest:
        """The student's manifest (weights not shipped)."""
        return self.student_manifest


NO_WEIGHTS = WeightsRef("", "")  # a manifest whose weights are not beside it (a bundle)


def _bundle_v1_to_v2(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Version 1 carried params, macs, compression, accuracy, provenance and architecture
    of the student, and its preprocessing beside them: they become the manifest itself."""
    student = data.get("student_manifest")
    if not isinstance(student, dict) or "preprocessing" not in data:
        raise ManifestError(f"{where}: bundle version 1 without its student_manifest or "
                            "preprocessing")
    data["student_manifest"] = {"schema": StudentManifest.VERSION, **student,
                                "weights": {"file": "", "sha256": ""},
                                "preprocessing": data.pop("preprocessing")}
    data["bundle_version"] = 2
    return data


@dataclass(frozen=True)
class SetEntry:
    student: str
    backend: str
    precision: str
    path: str
    bundle_sha256: str


@dataclass(frozen=True)
class SkippedBundle:
    student: str
    backend: str
    precision: str
    reason: str


@dataclass(frozen=True)
class ReportData:
    """The report split a bundle set carries (paths inside the set; '' when none)."""

    dataset: str
    ann: str
    images: str
    headboxes: str


@dataclass(frozen=True)
class BundleSet(Record):
    """``bundles.yaml``: the index of a bundle set for a target device."""

    VERSION_KEY: ClassVar[str] = "set_version"

    set_version: int
    bundle_version: int
    okdhp_edge: str
    zoo: str
    metric: str
    bundles: list[SetEntry]
    skipped: list[SkippedBundle]
    report_data: ReportData
    report_files: dict[str, str]

    def _check(self, where: str) -> None:
        if self.bundle_version > BundleManifest.VERSION:
            raise ManifestError(
                f"{where}: written by okdhp_edge {self.okdhp_edge} (bundle version "
                f"{self.bundle_version}), newer than this okdhp_edge reads; upgrade okdhp_edge "
                "on this device")


# --------------------------------------------------------------------------- reports


ROW_STATUSES = ("ok", "unavailable", "failed")


@dataclass(frozen=True)
class LatencyStats:
    """One scope's latency summary (ms): :func:`okdhp_edge.bench.timing.summarize`."""

    median: float
    p90: float
    p99: float
    mean: Optional[float] = field(default=None, metadata=OMIT_NONE)
    std: Optional[float] = field(default=None, metadata=OMIT_NONE)
    min: Optional[float] = field(default=None, metadata=OMIT_NONE)
    max: Optional[float] = field(default=None, metadata=OMIT_NONE)
    ci95_median: Optional[list[float]] = field(default=None, metadata=OMIT_NONE)
    iterations: Optional[int] = field(default=None, metadata=OMIT_NONE)
    cv: Optional[float] = field(default=None, metadata=OMIT_NONE)
    high_cv: bool = False
    warmup_iters: Optional[int] = field(default=None, metadata=OMIT_NONE)
    warmup_s: Optional[float] = field(default=None, metadata=OMIT_NONE)
    rounds: Optional[int] = field(default=None, metadata=OMIT_NONE)
    # cores other processes kept busy while this scope was timed (bench.load)
    others_cores_mean: Optional[float] = field(default=None, metadata=OMIT_NONE)
    others_cores_max: Optional[float] = field(default=None, metadata=OMIT_NONE)
    busy: bool = False

    def _check(self, where: str) -> None:
        if not all(is_finite_number(v) and v >= 0 for v in (self.median, self.p90, self.p99)):
            raise ReportError(f"{where}: a latency must be a finite number >= 0 ms")


@dataclass(frozen=True)
class RowAccuracy:
    """A row's accuracy on the report split through its backend (all absent: not
    measured)."""

    metric: Optional[str] = field(default=None, metadata=OMIT_NONE)
    value: Optional[float] = field(default=None, metadata=OMIT_NONE)
    persons: Optional[int] = field(default=None, metadata=OMIT_NONE)
    flip_test: Optional[bool] = field(default=None, metadata=OMIT_NONE)
    delta_vs_torch_fp32: Optional[float] = field(default=None, metadata=OMIT_NONE)
    reason: Optional[str] = field(default=None, metadata=OMIT_NONE)
    ci95: Optional[list[float]] = field(default=None, metadata=OMIT_NONE)
    delta_ci95: Optional[list[float]] = field(default=None, metadata=OMIT_NONE)  # paired
    bootstrap: Optional[Bootstrap] = field(default=None, metadata=OMIT_NONE)
    units: Optional[str] = field(default=None, metadata=OMIT_NONE)  # per-image results

    def _check(self, where: str) -> None:
        if not (optional_number(self.value) and optional_number(self.delta_vs_torch_fp32)):
            raise ReportError(f"{where}: accuracy value and delta must be finite numbers "
                              "or null")
        if not (interval_ok(self.ci95) and interval_ok(self.delta_ci95)):
            raise ReportError(f"{where}: accuracy ci95 and delta_ci95 must be [low, high], "
                              "low <= high")


@dataclass(frozen=True)
class RowCost:
    """What a row costs beside its latency, measured in a fresh worker process of its own
    (:mod:`okdhp_edge.bench.worker`): memory as the worker's resident high-water mark
    (``VmHWM``, MB) with the runtime imported and no model loaded, and again once the model
    is loaded and warmed up; the time from file to ready session and of the first call."""

    runtime_peak_mb: float  # the runtime imported, no model
    peak_mb: float  # the model loaded and warmed up (engine scope)
    load_ms: float  # file to ready session (read, compile, allocate)
    first_inference_ms: float  # the first call after loading
    torch_imported: bool = False  # whether torch was in the worker (a bundle row: never)

    @property
    def model_mb(self) -> float:
        """What loading and running the model added: the figure a memory budget reads."""
        return max(0.0, self.peak_mb - self.runtime_peak_mb)

    def _check(self, where: str) -> None:
        if not all(is_finite_number(v) and v >= 0 for v in (
                self.runtime_peak_mb, self.peak_mb, self.load_ms, self.first_inference_ms)):
            raise ReportError(f"{where}: a row's cost must be finite numbers >= 0")


@dataclass(frozen=True)
class RowFailure:
    """How a row's worker ended when it failed: the stage it was in (convert, load, warm-up,
    time, score, throughput), the signal that ended it or its exit status, or the timeout it
    ran past, and the last lines of its log."""

    stage: str
    signal: Optional[str] = field(default=None, metadata=OMIT_NONE)
    exitcode: Optional[int] = field(default=None, metadata=OMIT_NONE)
    timeout_s: Optional[float] = field(default=None, metadata=OMIT_NONE)
    log_tail: list[str] = field(default_factory=list)


@dataclass
class BenchRow:
    """One (student, backend, precision) of a bench report. The one record that is not
    frozen: the bench fills its row in place as it loads, times and scores it."""

    student: str
    backend: str
    precision: str
    batch: int = 1
    available: bool = True
    status: str = "ok"  # ok | unavailable | failed
    reason: str = ""
    model_file: str = ""
    runner: dict[str, Any] = field(default_factory=dict)
    latency_ms: dict[str, LatencyStats] = field(default_factory=dict)  # scope -> stats
    throughput: dict[str, Any] = field(default_factory=dict)
    accuracy: RowAccuracy = field(default_factory=RowAccuracy)
    parity: Optional[Parity] = field(default=None, metadata=EMPTY_IS_NONE)
    params: int = 0
    macs: int = 0
    command: str = ""
    file_bytes: Optional[int] = None  # the model file (and weights) this row loads
    quantization: Optional[Quantization] = field(default=None, metadata=EMPTY_IS_NONE)
    zoo: Optional[str] = field(default=None, metadata=OMIT_NONE)  # a merged report's
    cost: Optional[RowCost] = field(default=None, metadata=OMIT_NONE)  # memory, start-up
    failure: Optional[RowFailure] = field(default=None, metadata=OMIT_NONE)  # a worker's end
    cpus: Optional[list[int]] = field(default=None, metadata=OMIT_NONE)  # --cores: affinity
    # the decoder's form in the row's file, for a student that has a choice (a light one)
    decoder: Optional[str] = field(default=None, metadata=OMIT_NONE)

    @property
    def label(self) -> str:
        form = " (sub-pixel decoder)" if self.decoder == "subpixel" else ""
        return f"{self.student} / {self.backend} {self.precision}{form}"

    def latency(self, stat: str = "median", scope: str = "engine") -> Optional[float]:
        lat = self.latency_ms.get(scope)
        return None if lat is None else float(getattr(lat, stat))

    def _check(self, where: str) -> None:
        if self.status not in ROW_STATUSES:
            raise ReportError(f"{where}: row {self.label}: status must be one of "
                              f"{', '.join(ROW_STATUSES)}")
        if self.status == "ok" and "engine" not in self.latency_ms:
            raise ReportError(f"{where}: row {self.label}: latency_ms must hold an engine "
                              "scope")


@dataclass(frozen=True)
class BenchStudent:
    """A student as a bench report measured it: its size, its accuracy in its manifest
    (PyTorch fp32) and the weights it was measured with (a retrained zoo is told apart)."""

    name: str
    params: int
    macs: int
    accuracy_torch_manifest: Optional[float]
    weights_sha256: Optional[str] = field(default=None, metadata=OMIT_NONE)
    zoo: Optional[str] = field(default=None, metadata=OMIT_NONE)  # a merged report's


@dataclass(frozen=True)
class BenchReport(Record):
    """A bench report (``<zoo>.json``): every row measured on one device, interleaved."""

    VERSION_KEY: ClassVar[str] = "report_version"
    ERROR: ClassVar[type[ManifestError]] = ReportError

    report_version: int
    zoo: str
    device_id: str
    device: dict[str, Any]  # the device fingerprint
    created: str
    command: str
    metric: str
    flip_test: bool
    timing: dict[str, Any]
    students: list[BenchStudent]
    rows: list[BenchRow]
    wall_s: float
    untrained: bool = False  # a plan's random-weight students: latency only
    quantization: Optional[dict[str, Any]] = None  # the recipe of its INT8 rows
    merged_from: Optional[list[dict[str, Any]]] = field(default=None, metadata=OMIT_NONE)
    # what else ran while timing: policy, busy rows, the busiest others (bench.load)
    load: Optional[dict[str, Any]] = field(default=None, metadata=OMIT_NONE)
    # the decoder form each target kept by default for each light student when it ran
    # ("student backend/precision" -> form; reports before the size rule of
    # targets.Target.decoder_from_macs: "backend/precision"): a later change of the defaults
    # leaves the report as it was
    decoder_defaults: Optional[dict[str, str]] = field(default=None, metadata=OMIT_NONE)

    @property
    def emulated(self) -> Optional[str]:
        """Why the run was emulated (QEMU user mode), or None: measured on the device."""
        return (self.device.get("board") or {}).get("emulated")


@dataclass(frozen=True)
class CalibrationReport(Record):
    """The INT8 calibration sensitivity report: PyTorch-fp32-equivalent float figures per
    (student, backend) and one cell per recipe (``student/backend/method/images``)."""

    VERSION_KEY: ClassVar[str] = "calibration_version"
    ERROR: ClassVar[type[ManifestError]] = ReportError

    calibration_version: int
    zoo: str
    fp32: dict[str, dict[str, Any]]
    cells: dict[str, dict[str, Any]]
    zoo_path: str = ""


# --------------------------------------------------------------------------- fleet


@dataclass(frozen=True)
class FleetHost:
    """A device of a fleet, reached over SSH with a key (never a password)."""

    name: str  # its device name: the id its report is filed under
    address: str  # host name or IP address
    user: Optional[str] = None  # default: ssh's (your ~/.ssh/config)
    port: int = 22
    key: Optional[str] = None  # a private key file; default: ssh's (agent, ~/.ssh/config)
    python: str = "python3"  # the host's Python (3.10 or newer)
    work: str = "okdhp-fleet"  # its work folder (relative: under the user's home)
    bench: list[str] = field(default_factory=list)  # extra `okdhp bench` options there
    pip: list[str] = field(default_factory=list)  # extra `pip install` options there

    def _check(self, where: str) -> None:
        if not is_plain_name(self.name):
            raise ManifestError(f"{where}: name '{self.name}' must be a plain name (no "
                                "'/', not '.' or '..')")
        if not 1 <= self.port <= 65535:
            raise ManifestError(f"{where}: port {self.port} is not a TCP port")


@dataclass(frozen=True)
class Fleet(Record):
    """``FLEET.yaml``: the devices ``okdhp bench --fleet`` benches a bundle set on."""

    VERSION_KEY: ClassVar[str] = "fleet_version"

    fleet_version: int
    hosts: list[FleetHost]

    def _check(self, where: str) -> None:
        names = [h.name for h in self.hosts]
        if not names:
            raise ManifestError(f"{where}: hosts lists no device")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ManifestError(f"{where}: host name '{twice[0]}' is given twice")


@dataclass(frozen=True)
class FleetHostResult:
    """What one host of a fleet run came to."""

    name: str
    status: str  # ok | failed
    stage: str  # the last stage it reached: connect, bundles, install, bench, fetch, done
    wall_s: float
    reason: str = ""
    report: Optional[str] = field(default=None, metadata=OMIT_NONE)  # its report, locally
    reused: list[str] = field(default_factory=list)  # what the host already had
    # why its report's timings are an emulator's (QEMU user mode), as the report says
    emulated: Optional[str] = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class FleetRun(Record):
    """``fleet.json``: one ``okdhp bench --fleet`` run, host by host."""

    VERSION_KEY: ClassVar[str] = "fleet_run_version"

    fleet_run_version: int
    command: str
    bundles: str
    wheel_sha256: str
    hosts: list[FleetHostResult]
    wall_s: float


# --------------------------------------------------------------------------- reading


def _format_v2_to_v3(entry: dict[str, Any]) -> dict[str, Any]:
    """A version-2 format entry: its flat quantization fields into ``quantization``, its
    builder's into the section of the backend it runs on (``executorch`` held the version)."""
    out = dict(entry)
    quant = {k: out.pop(k) for k in ("recipe", "calibration", "calibration_method",
                                     "quantizer", "activations", "higher_precision_layers")
             if k in out}
    if quant.get("recipe") is not None:
        out["quantization"] = quant
    section, sections = out.get("backend", ""), _build_sections()
    if section not in sections:
        return out
    names = {f.name for f in dataclasses.fields(sections[section])} | {section}
    build = {k: out.pop(k) for k in list(out) if k in names}
    if section in build:  # the section's own name held the package version
        build["version"] = build.pop(section)
    if build:
        out[section] = build
    return out


def _build_sections() -> dict[str, type]:
    """The backends whose builder records facts of its own -> their section's record: the
    fields of :class:`FormatRecord` named as backends."""
    hints = typing.get_type_hints(FormatRecord)
    return {name: typing.get_args(hint)[0] for name, hint in hints.items()
            if typing.get_args(hint)[:1] in ((LiteRTBuild,), (ExecuTorchBuild,))}


def _export_v2_to_v3(data: dict[str, Any], where: str) -> dict[str, Any]:
    formats = data.get("formats")
    if isinstance(formats, dict):
        data["formats"] = {k: _format_v2_to_v3(v) if isinstance(v, dict) else v
                           for k, v in formats.items()}
    data["schema"] = 3
    return data


MIGRATIONS: dict[tuple[str, int], Callable[[dict[str, Any], str], dict[str, Any]]] = {
    ("ExportRecord", 2): _export_v2_to_v3,
    ("StudentManifest", 1): _student_v1_to_v2,
    ("BundleManifest", 1): _bundle_v1_to_v2,
}


def read_yaml(path: Path) -> Any:
    """A YAML file's content (``safe_load``); ManifestError when missing or unreadable."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid UTF-8 YAML: {exc}") from None


def read_record(cls: type[R], path: str | Path) -> R:
    """A record from its YAML (or JSON: YAML reads it too) file."""
    path = Path(path)
    return cls.from_data(read_yaml(path), str(path))


def write_record(path: str | Path, record: Record) -> None:
    """Write a record as YAML, atomically."""
    import yaml

    from okdhp_edge.utils.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(record.to_dict(), sort_keys=False))


def read_json_record(cls: type[R], path: str | Path) -> R:
    """A record from a JSON file (reports); the record's error in one line otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise cls.ERROR(f"{path}: report not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise cls.ERROR(f"{path}: not valid JSON: {exc}") from None
    return cls.from_data(data, str(path))
