"""Deployment targets: the one table of (backend, precision) facts. No torch.

Every other module reads these records instead of restating them: the exporter builds the
formats a target needs, the bench times targets, bundles copy a target's files, the zoo
pick filters by them, reports and charts draw them. A backend is one module (named in its
:class:`BackendInfo` row: ``okdhp_edge.backends.<name>``) that owns its availability, its
runner and the builders of its formats; adding one is that module, its rows here, its pip
extra, its tests and its docs (:mod:`okdhp_edge.backends`).

Formats are files derived from a student: ``source`` names the format a file is made
from (``None``: from the student's weights), so the exporter builds a chain in order.
The precision of a TensorRT engine is a property of its ONNX file (TensorRT 11 builds
strongly typed networks only): fp16 engines come from a float16 ONNX, int8 engines from
the QDQ ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from okdhp_edge.errors import UnknownTarget

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
QUANTIZED = ("int8",)
# the reference every accuracy difference and parity check is taken against
BASELINE = ("torch", "fp32")
# input layouts a model file may take (its pipeline feeds it in that order)
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class BackendInfo:
    """One runtime: the facts other modules read about it.

    Attributes:
        name: the name on the command line, in reports and bundles.
        module: the module that owns it (availability, runner, format builders).
        runtime_extra: the pip extra its runner needs (``pip install 'okdhp_edge[extra]'``);
            None: the plain install runs its files.
        export_extra: the pip extra its format builders (converters, quantizers) need.
        marker: its chart marker (precision is the marker's fill; int8 hollow).
        torch_free: its runner loads files without torch (bundles, ``bench --bundles``).
        bench_default: benched when ``--backends`` is not given.
        bundle_default: exported by ``zoo export --all`` when ``--backends`` is not given.
        packages: distributions whose versions the device fingerprint records.
    """

    name: str
    module: str
    runtime_extra: Optional[str]
    export_extra: str
    marker: str
    torch_free: bool
    bench_default: bool = True
    bundle_default: bool = False
    packages: tuple[str, ...] = ()


BACKEND_INFO: dict[str, BackendInfo] = {b.name: b for b in (
    BackendInfo("torch", "okdhp_edge.backends.torch", "train", "train", "o", False,
                packages=("torch",)),
    BackendInfo("onnxruntime", "okdhp_edge.backends.onnxruntime", None, "train", "s", True,
                bundle_default=True, packages=("onnxruntime", "onnxruntime-gpu")),
    BackendInfo("openvino", "okdhp_edge.backends.openvino", None, "train", "^", True,
                bundle_default=True, packages=("openvino", "nncf")),
    BackendInfo("tensorrt", "okdhp_edge.backends.tensorrt", "tensorrt", "tensorrt", "D", True,
                packages=("tensorrt",)),
    BackendInfo("torch_tensorrt", "okdhp_edge.backends.torch_tensorrt", "tensorrt", "tensorrt",
                "P", False, bench_default=False, packages=("torch-tensorrt",)),
    BackendInfo("litert", "okdhp_edge.backends.litert", None, "litert", "v", True,
                bundle_default=True, packages=("ai-edge-litert", "litert-torch",
                                               "ai-edge-quantizer")),
    # lowering takes tens of seconds a student (minutes in INT8): benched when asked for
    BackendInfo("executorch", "okdhp_edge.backends.executorch", "executorch", "executorch",
                "X", False, bench_default=False, packages=("executorch", "torchao")),
)}
BACKENDS = tuple(BACKEND_INFO)


@dataclass(frozen=True)
class ExportFormat:
    """A file (or file set) derived from a student.

    Attributes:
        name: key in ``export.yaml``.
        files: paths relative to the export folder; the first is the one a runner loads.
        source: the format it is built from; None: the student's weights.
        runs_on: the backend that checks its parity at export.
        precision: what the file itself carries (fp32 weights, fp16, int8 QDQ).
        calibrated: built by post-training quantization (needs calibration data).
        built_by: the backend whose module builds it (None: ``runs_on``'s).
        layout: the input layout the file takes (its runner is fed in that order).
    """

    name: str
    files: tuple[str, ...]
    source: Optional[str]
    runs_on: str
    precision: str = "fp32"
    calibrated: bool = False
    built_by: Optional[str] = None
    layout: str = "NCHW"

    @property
    def builder(self) -> str:
        return self.built_by or self.runs_on

    @property
    def model_file(self) -> str:
        return self.files[0]


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("onnx", ("model.onnx",), None, "onnxruntime"),
    ExportFormat("onnx_dynamic", ("model_dynamic.onnx",), None, "onnxruntime"),
    ExportFormat("onnx_fp16", ("model_fp16.onnx",), "onnx", "tensorrt", "fp16",
                 built_by="onnxruntime"),
    ExportFormat("onnx_int8", ("model_int8.onnx",), "onnx", "onnxruntime", "int8", True),
    # TensorRT's explicit quantization reads symmetric signed Q/DQ only
    ExportFormat("onnx_int8_s8", ("model_int8_s8.onnx",), "onnx", "tensorrt", "int8", True,
                 built_by="onnxruntime"),
    ExportFormat("openvino_fp32", ("openvino_fp32/model.xml", "openvino_fp32/model.bin"),
                 "onnx", "openvino"),
    ExportFormat("openvino_fp16", ("openvino_fp16/model.xml", "openvino_fp16/model.bin"),
                 "onnx", "openvino", "fp16"),
    ExportFormat("openvino_int8", ("openvino_int8/model.xml", "openvino_int8/model.bin"),
                 "onnx", "openvino", "int8", True),
    ExportFormat("tensorrt_fp32", ("model_fp32.engine",), "onnx", "tensorrt"),
    ExportFormat("tensorrt_fp16", ("model_fp16.engine",), "onnx_fp16", "tensorrt", "fp16"),
    ExportFormat("tensorrt_int8", ("model_int8.engine",), "onnx_int8_s8", "tensorrt", "int8",
                 True),
    ExportFormat("litert_fp32", ("model_fp32.tflite",), None, "litert"),
    ExportFormat("litert_fp16", ("model_fp16.tflite",), "litert_fp32", "litert", "fp16"),
    ExportFormat("litert_int8", ("model_int8.tflite",), "litert_fp32", "litert", "int8", True),
    ExportFormat("executorch_fp32", ("model_fp32.pte",), None, "executorch"),
    ExportFormat("executorch_int8", ("model_int8.pte",), None, "executorch", "int8", True),
)}


@dataclass(frozen=True)
class Target:
    """One (backend, precision) a student can be deployed and timed as.

    Attributes:
        export: the format whose model file the runner loads; None: the student itself
            (torch backends, which need its weights and torch).
        device: where the runner runs (``host``: the bench's --torch-device choice).
        throughput: the format timed at batch > 1 (None: not measured).
        default: benched when no --precisions is given.
        bundle: exportable as a torch-free bundle.
        decoder: the form a light student's decoder takes in its file by default
            (:data:`DECODER_FORMS`), from the bench's both-ways measurement (docs/arm.md):
            oneDNN (ONNX Runtime, OpenVINO) runs transposed convolutions faster, XNNPACK in
            float the sub-pixel form. (ONNX Runtime's INT8 file is sub-pixel in either form:
            its recipe, ``ort_transposed_conv``, rewrites it.)
        decoder_from_macs: the decoder work (the family's ``decoder_work``: its last
            transposed convolution's multiply-adds at the student's input) from which
            ``decoder`` is kept; a smaller decoder keeps the transposed form, where the
            sub-pixel form's extra operators cost more than it saves (0: at every size).
    """

    backend: str
    precision: str
    export: Optional[str]
    device: str
    throughput: Optional[str] = None
    default: bool = True
    bundle: bool = True
    decoder: str = "transposed"
    decoder_from_macs: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return self.backend, self.precision

    @property
    def quantized(self) -> bool:
        return self.precision in QUANTIZED

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"


# parity bounds of a file of each precision against PyTorch fp32: (max |heatmap error|,
# mean keypoint displacement in input px)
TOLERANCE = {"fp32": (1e-3, 0.5), "bf16": (5e-2, 1.0), "fp16": (5e-2, 1.0),
             "int8": (0.25, 2.0)}

# the forms a light student's decoder can take in a file: its 4x4 stride-2 transposed
# convolutions as they are, or as sub-pixel convolutions (a 2x2 convolution with 4x the
# channels, depth-to-space and a one-pixel crop: exact in float; okdhp_edge.convert.subpixel)
DECODER_FORMS = ("transposed", "subpixel")
# raised when the sub-pixel form's files change (1: the 2x2 convolution, shuffle and crop,
# after the 3x3 convolution and shuffle): an export of that form made before is rebuilt
SUBPIXEL_REVISION = 1
TARGETS: dict[tuple[str, str], Target] = {t.key: t for t in (
    Target("torch", "fp32", None, "host", "student", bundle=False),
    Target("torch", "bf16", None, "host", "student", default=False, bundle=False),
    Target("torch", "fp16", None, "host", "student", default=False, bundle=False),
    Target("onnxruntime", "fp32", "onnx", "cpu", "onnx_dynamic"),
    Target("onnxruntime", "int8", "onnx_int8", "cpu", default=False),
    Target("openvino", "fp32", "openvino_fp32", "cpu", "onnx_dynamic"),
    Target("openvino", "bf16", "openvino_fp32", "cpu", "onnx_dynamic"),
    Target("openvino", "fp16", "openvino_fp16", "cpu"),
    Target("openvino", "int8", "openvino_int8", "cpu", default=False),
    Target("tensorrt", "fp32", "tensorrt_fp32", "cuda"),
    Target("tensorrt", "fp16", "tensorrt_fp16", "cuda"),
    Target("tensorrt", "int8", "tensorrt_int8", "cuda", default=False),
    Target("torch_tensorrt", "fp32", None, "cuda", bundle=False),
    Target("torch_tensorrt", "fp16", None, "cuda", bundle=False),
    # XNNPACK runs a light decoder faster as sub-pixel convolutions, in fp32 and int8 (bench
    # --decoder both at the paper's width: docs/arm.md), and LiteRT's INT8 of that form is
    # full-integer
    Target("litert", "fp32", "litert_fp32", "cpu", decoder="subpixel"),
    Target("litert", "fp16", "litert_fp16", "cpu", default=False, decoder="subpixel"),
    Target("litert", "int8", "litert_int8", "cpu", default=False, decoder="subpixel"),
    Target("executorch", "fp32", "executorch_fp32", "cpu", decoder="subpixel"),
    # ExecuTorch INT8: sub-pixel from mbv2-d128 at 96x128 up (25 MMACs); below, transposed
    # (1.07-1.11x faster on d32 / d64 at 96x128: docs/results.md, decoder forms)
    Target("executorch", "int8", "executorch_int8", "cpu", default=False, decoder="subpixel",
           decoder_from_macs=25_000_000),
)}

# chart marker per backend; precision is drawn as the marker's fill (int8 hollow)
MARKERS = {b.name: b.marker for b in BACKEND_INFO.values()}




def backend_info(name: str) -> BackendInfo:
    """The row of backend ``name``; UnknownTarget names the backends that exist."""
    info = BACKEND_INFO.get(name)
    if info is None:
        raise UnknownTarget(f"unknown backend '{name}'; expected one of {', '.join(BACKENDS)}")
    return info


def default_backends(bundle: bool = False) -> tuple[str, ...]:
    """The backends a bench (or, with ``bundle``, ``zoo export --all``) covers by default."""
    return tuple(b.name for b in BACKEND_INFO.values()
                 if (b.bundle_default if bundle else b.bench_default))


def backends_with(precision: str, device: str = "cpu") -> tuple[str, ...]:
    """The backends with a ``precision`` target on ``device`` (e.g. the CPU's INT8 ones)."""
    return tuple(t.backend for t in TARGETS.values()
                 if t.precision == precision and t.device == device)


def get_target(backend: str, precision: str) -> Target:
    """The target of ``backend`` at ``precision``; UnknownTarget names what exists."""
    t = TARGETS.get((backend, precision))
    if t is None:
        have = ", ".join(p for b, p in TARGETS if b == backend)
        if not have:
            raise UnknownTarget(f"unknown backend '{backend}'; expected one of "
                                f"{', '.join(BACKENDS)}")
        raise UnknownTarget(f"{backend} has no {precision} target (it has: {have})")
    return t


def targets_for(backends: tuple[str, ...], precisions: Optional[tuple[str, ...]] = None,
                bundle_only: bool = False) -> list[Target]:
    """The targets of ``backends``: the default precisions, or those of ``precisions``
    that a backend defines (a backend without them is left out, not an error)."""
    out = []
    for b in backends:
        backend_info(b)
        for t in TARGETS.values():
            if t.backend != b or (bundle_only and not t.bundle):
                continue
            if (t.precision in precisions) if precisions else t.default:
                out.append(t)
    return out


def decoder_for(choice: str, target: Target, forms: tuple[str, ...],
                work: Optional[int] = None) -> str:
    """The decoder form of ``target``'s file for a student whose family has ``forms`` and
    whose decoder does ``work`` multiply-adds (the family's ``decoder_work``): ``auto`` is
    the target's (:attr:`Target.decoder`, from :attr:`Target.decoder_from_macs` of work
    up), a named form is that one; a student with one form (an hourglass) and a target that
    runs the student itself (torch) keep the transposed form."""
    want = target.decoder if choice == "auto" else choice
    if choice == "auto" and work is not None and work < target.decoder_from_macs:
        want = "transposed"
    return want if want in forms and target.export is not None else "transposed"


def format_chain(name: str) -> list[str]:
    """The formats to build, in order, to have ``name`` (its sources first)."""
    chain = []
    while name is not None:
        chain.insert(0, name)
        name = FORMATS[name].source
    return chain


def formats_for(targets: list[Target], throughput: bool = False) -> list[str]:
    """Every format the targets need (sources first, each once)."""
    out: list[str] = []
    for t in targets:
        names = [t.export] + ([t.throughput] if throughput else [])
        for name in names:
            if name in FORMATS:
                out += [f for f in format_chain(name) if f not in out]
    return out
def backends_markdown() -> str:
    """The backends as a Markdown table, generated from :data:`BACKEND_INFO` and
    :data:`TARGETS` (the README's table: a test keeps the two equal)."""
    lines = ["| backend | precisions (benched by default in bold) | runs on | pip extra: runtime"
             " / converters | torch-free bundle |", "|---|---|---|---|---|"]
    for b in BACKEND_INFO.values():
        targets = [t for t in TARGETS.values() if t.backend == b.name]
        precisions = ", ".join(f"**{t.precision}**" if t.default and b.bench_default
                               else t.precision for t in targets)
        device = {"host": "CPU or GPU", "cuda": "NVIDIA GPU", "cpu": "CPU"}[targets[0].device]
        extra = f"{b.runtime_extra or '(plain install)'} / {b.export_extra}"
        bundle = "yes" if b.torch_free and any(t.bundle for t in targets) else "no"
        lines.append(f"| `{b.name}` | {precisions} | {device} | {extra} | {bundle} |")
    return "\n".join(lines)
