"""OpenVINO: the runner (inference precision set explicitly and read back from the compiled
model: on CPUs with AMX or AVX512-BF16 OpenVINO's default is bf16) and the IR formats,
converted from the ONNX file (fp32 weights, fp16-compressed weights) or quantized from it
by NNCF (plain, or with accuracy control on the selection split).

The runner needs only ``openvino``; NNCF is imported by the INT8 builder alone (the
torch-free runtime runs quantized IRs without it).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from okdhp_edge.backends.base import BackendUnavailable, BuildContext, Runner, missing_package
from okdhp_edge.convert.quantize import check_choices
from okdhp_edge.errors import QuantizationError
from okdhp_edge.grammar import option
from okdhp_edge.targets import ExportFormat

log = logging.getLogger(__name__)
WEIGHTED_OV = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")
# OpenVINO ops that pass an int8 tensor on unchanged (a FakeQuantize before them quantizes
# the convolution after them)
_PRECISION_PRESERVING = ("MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
                         "StridedSlice", "Split", "VariadicSplit")


@dataclass(frozen=True)
class Int8Options:
    """OpenVINO's INT8 options (NNCF): the recipe's ``openvino`` section (its fields keep
    their flat names in records and on the command line).

    Attributes:
        max_drop: NNCF accuracy control, the largest loss of the metric (AP, or PCKh points)
            allowed on the selection split; layers go back to higher precision until it
            holds. None: plain post-training quantization.
        overflow_fix: NNCF's fix of the int8 saturation of x86 CPUs without VNNI (AVX2,
            AVX-512 without VNNI): ``first_layer`` (NNCF's default: the first convolution's
            weights use half the int8 range), ``enable`` (every convolution's) or
            ``disable``. A property of the target, not of the model.
    """

    max_drop: Optional[float] = option(
        None, "OpenVINO: NNCF accuracy control, at most this much of the metric lost on the "
        "selection split (AP 0.005 = half a point)", minimum=0, flag="--int8-max-drop")
    overflow_fix: str = option(
        "first_layer", "OpenVINO: weights in half the int8 range against the saturation of "
        "CPUs without VNNI (enable: every convolution; see docs/int8.md)",
        choices=("first_layer", "enable", "disable"), flag="--int8-overflow-fix")

    def __post_init__(self) -> None:
        check_choices(self)
        if self.max_drop is not None and self.max_drop < 0:
            raise QuantizationError("max_drop must be >= 0")

    def advice(self) -> list[str]:
        """What a user quantizing with these options on this machine should know."""
        from okdhp_edge.utils.cpu import cpu_has_int8_dot

        if self.overflow_fix == "first_layer" and not cpu_has_int8_dot():
            return ["this CPU has no VNNI: its int8 kernels can saturate; --int8-overflow-fix "
                    "enable cut OpenVINO INT8's AP loss on the reference zoo here "
                    "(docs/int8.md)"]
        return []


def unavailable_reason() -> Optional[str]:
    return missing_package("openvino", "openvino")

# int8: the IR's FakeQuantize layers run in int8; the rest in f32, explicitly (a CPU with
# native bf16 would otherwise run it in bf16)
_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


class OpenVINORunner(Runner):
    """``device``: CPU, GPU or NPU (OpenVINO device names, case-insensitive)."""

    backend = "openvino"
    RUNTIME = ("openvino",)
    # ENABLE_CPU_PINNING: inference threads bound to cores (OpenVINO's default on Linux);
    # OpenVINO has no spin-wait setting, its TBB workers spin briefly, then sleep
    SCHEDULING = {"cpu_pinning": True}

    def load(self, path: str) -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise BackendUnavailable(f"openvino is not installed ({exc})") from None
        core = ov.Core()
        dev = self.device.upper()
        if dev not in core.available_devices:
            raise BackendUnavailable(f"OpenVINO device '{dev}' not present "
                                     f"(have: {', '.join(core.available_devices)})")
        if self.precision not in _HINT:
            raise BackendUnavailable(f"unknown OpenVINO precision '{self.precision}'")
        caps = core.get_property(dev, "OPTIMIZATION_CAPABILITIES")
        hint = _HINT[self.precision]
        if self.precision == "bf16" and "BF16" not in caps:
            raise BackendUnavailable(
                f"OpenVINO {dev} has no native bf16 (capabilities: {', '.join(caps)})")
        if self.precision == "fp16" and "FP16" not in caps:
            # fp16 here means the fp16-compressed IR; without native f16 execution it
            # runs in f32 (weights decompressed), which describe() records
            hint = "f32"
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint,
                                  "PERFORMANCE_HINT": "LATENCY"}
        if dev == "CPU":
            config["INFERENCE_NUM_THREADS"] = self.threads
            config["ENABLE_CPU_PINNING"] = self.scheduling["cpu_pinning"]
        model = core.read_model(path)
        self._metadata = _framework_metadata(model)
        self.compiled = core.compile_model(model, dev, config)
        self.request = self.compiled.create_infer_request()
        ran = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.actual_precision = ran.get_type_name() if hasattr(ran, "get_type_name") else str(ran)
        self.output = self.compiled.output(0)
        self._version = ov.__version__

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.request.infer({0: x}, share_inputs=True)[self.output]

    def model_metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def input_hw(self) -> Optional[tuple[int, int]]:
        shape = self.compiled.input(0).get_partial_shape()
        dims = [shape[i] for i in (2, 3)] if shape.rank.get_length() == 4 else []
        if len(dims) != 2 or not all(d.is_static for d in dims):
            return None
        return dims[0].get_length(), dims[1].get_length()

    def runtime_latency_ms(self) -> Optional[float]:
        """``InferRequest.latency``: what ``benchmark_app`` reads."""
        return float(self.request.latency)

    def close(self) -> None:
        self.request = None
        self.compiled = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(device=self.device.upper(), version=getattr(self, "_version", None),
                 inference_precision=getattr(self, "actual_precision", None),
                 performance_hint="LATENCY")
        return d


RUNNER = OpenVINORunner


def _framework_metadata(model: Any) -> dict[str, str]:
    """The ONNX file's ``okdhp_*`` metadata, which conversion keeps in the IR's rt_info
    under ``framework`` (and NNCF and fp16 compression keep with it)."""
    if not model.has_rt_info(["framework"]):
        return {}
    keys = model.get_rt_info()["framework"].keys()
    return {k: model.get_rt_info(["framework", k]).astype(str) for k in keys
            if k.startswith("okdhp_")}


# ------------------------------------------------------------------------------ builders


def save_ir(model: Any, xml_path: Path, compress_fp16: bool = False) -> Path:
    """``openvino.save_model`` under temporary names unique to this call, then rename the
    ``.bin`` and the ``.xml`` into place (the ``.xml`` last: it names its ``.bin`` by stem),
    so a crash never leaves a half IR and two exports of one model never collide."""
    import openvino as ov

    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{xml_path.stem}.", dir=xml_path.parent))
    try:
        tmp_xml = tmp_dir / xml_path.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_fp16)
        os.replace(tmp_xml.with_suffix(".bin"), xml_path.with_suffix(".bin"))
        os.replace(tmp_xml, xml_path)
    finally:
        for leftover in tmp_dir.glob("*"):
            leftover.unlink()
        tmp_dir.rmdir()
    return xml_path


def export_openvino(onnx_path: Path, xml_path: Path, compress_fp16: bool = False) -> Path:
    """Convert ``onnx_path`` with ``openvino.convert_model`` and save it as an IR.

    Raises:
        BackendUnavailable: the ``openvino`` package is not installed (a GPU box or an
            embedded target may have TensorRT and ONNX Runtime only).
    """
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailable(f"openvino is not installed ({exc})") from None
    return save_ir(ov.convert_model(str(onnx_path)), xml_path, compress_fp16)


def _build_ir(ctx: BuildContext, fmt: ExportFormat) -> dict[str, Any]:
    export_openvino(ctx.path(fmt.source), ctx.path(fmt.name),
                    compress_fp16=fmt.precision == "fp16")
    return {}


def _build_int8(ctx: BuildContext, fmt: ExportFormat) -> dict[str, Any]:
    images, calib = ctx.calibration()
    validation = ctx.selection_validation() if ctx.recipe.openvino.max_drop is not None else None
    made = quantize_openvino(ctx.path(fmt.source), ctx.path(fmt.name), images, ctx.recipe,
                             validation, ctx.metadata(fmt))
    return {"quantization": {**made, "calibration": calib, "recipe": ctx.recipe.as_dict()}}


def qdq_ir(onnx_path: Path, xml_path: Path) -> Path:
    """The IR of a QDQ ONNX file (QuantizeLinear / DequantizeLinear pairs with their scales
    and zero points), running the same integer arithmetic: OpenVINO turns each pair into a
    FakeQuantize and runs the int8 kernels between them.

    Read by the ONNX frontend, not ``ov.convert_model``: convert_model's MOC transformations
    fuse each pair into a float-output FakeQuantize that the CPU plugin ran up to two int8
    steps off the QDQ arithmetic after ReLU6 (a QAT mbv2-d128: mean +0.50 step after its
    second block, heatmaps 0.22 off); the frontend's graph matches it to float rounding
    (tests/backends/test_openvino.py).
    """
    import openvino as ov

    return save_ir(ov.Core().read_model(str(onnx_path)), xml_path)


def _qat_int8(ctx: BuildContext, fmt: ExportFormat) -> dict[str, Any]:
    """A quantization-aware student's IR: its int8 program's QDQ ONNX, as :func:`qdq_ir`."""
    from okdhp_edge.convert.qat_program import program_onnx, qat_fields, saturates_here

    saturates: list[bool] = []  # read off the model before it is written, not read back
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = program_onnx(ctx.qat_program(), Path(tmp) / "qat.onnx", ctx.metadata(fmt),
                                 rewrite=lambda model: saturates.append(saturates_here(model)))
        qdq_ir(onnx_path, ctx.path(fmt.name))
    fields = qat_fields(ctx.man.qat)
    if saturates[0]:
        log.warning("%s: %s", ctx.man.name, SATURATING)
        fields["weights"] = f"{fields['recipe'].get('weights', 'int8')}: {SATURATING}"
    return {"quantization": fields}


SATURATING = ("this CPU has no VNNI and the program's int8 weights go beyond +-63: OpenVINO's "
              "u8 x s8 kernels saturate, so its heatmaps can leave the program's (28 output "
              "steps on tests/backends/test_openvino.py's program); fine-tune with "
              "qat.weight_range=half for such a target")


# raised when a QAT builder's files change: 1, the IR read from the QDQ ONNX (not converted)
QAT_BUILD_REVISION = 1


QAT_BUILDERS = {"openvino_int8": _qat_int8}


def file_metadata(path: Path) -> dict[str, str]:
    """The ``okdhp_*`` metadata an IR carries (its ``framework`` rt_info)."""
    import openvino as ov

    return _framework_metadata(ov.Core().read_model(str(path)))


BUILDERS = {"openvino_fp32": _build_ir, "openvino_fp16": _build_ir,
            "openvino_int8": _build_int8}


# ------------------------------------------------------------------ INT8 quantizer (NNCF)


def _nncf():
    try:
        import nncf
    except ImportError as exc:
        raise BackendUnavailable(f"nncf is not installed ({exc}); OpenVINO INT8 needs the "
                                 "training/export install: pip install 'okdhp_edge[train]'"
                                 ) from None
    return nncf


def _ov_head(model: Any) -> str:
    """Friendly name of the convolution that makes the heatmaps (walking back from the
    result through bias adds and converts)."""
    node = model.outputs[0].get_node()
    for _ in range(8):
        node = node.input_value(0).get_node()
        if node.get_type_name() in WEIGHTED_OV:
            return node.get_friendly_name()
    raise QuantizationError("no convolution found before the model's output")


def _nncf_options(nncf: Any, recipe: Any, model: Any) -> dict[str, Any]:
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    from okdhp_edge.convert.quantize import nncf_range_estimator

    opts: dict[str, Any] = {"subset_size": recipe.num_images}
    if recipe.keep_head:
        opts["ignored_scope"] = nncf.IgnoredScope(names=[_ov_head(model)])
    advanced: dict[str, Any] = {}
    estimator = nncf_range_estimator(recipe.method)
    if estimator is not None:
        advanced["activations_range_estimator_params"] = estimator
    fix = recipe.openvino.overflow_fix
    if fix != "first_layer":  # NNCF's default otherwise, left to NNCF
        advanced["overflow_fix"] = {"enable": OverflowFix.ENABLE,
                                    "disable": OverflowFix.DISABLE}[fix]
    if advanced:
        opts["advanced"] = AdvancedQuantizationParameters(**advanced)
    return opts


def quantize_openvino(src_onnx: Path, dst_xml: Path, images: np.ndarray, recipe: Any,
                      validation: Optional[tuple[list, Callable, Callable]] = None,
                      metadata: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """NNCF post-training quantization of the ONNX model into an OpenVINO IR (``.xml`` +
    ``.bin``). With ``recipe.openvino.max_drop``, the accuracy-controlled variant: ``validation`` =
    (items, to_input, fn) where ``to_input(item)`` is a model input [1, 3, H, W] and
    ``fn(compiled_model, items) -> metric`` measures the selection split. Returns what
    stayed in higher precision."""
    nncf = _nncf()
    import openvino as ov

    model = ov.convert_model(str(src_onnx))
    calib = nncf.Dataset([images[i:i + 1] for i in range(len(images))])
    opts = _nncf_options(nncf, recipe, model)
    advanced = opts.pop("advanced", None)
    if recipe.openvino.max_drop is None:
        q = nncf.quantize(model, calib, advanced_parameters=advanced, **opts)
    else:
        if validation is None:
            raise QuantizationError("accuracy control needs the selection split")
        items, to_input, fn = validation
        q = nncf.quantize_with_accuracy_control(
            model, calib, nncf.Dataset(items, to_input),
            validation_fn=lambda m, data: fn(m, list(data)),
            max_drop=recipe.openvino.max_drop, drop_type=nncf.DropType.ABSOLUTE,
            advanced_quantization_parameters=advanced, **opts)
    for k, v in (metadata or {}).items():  # with the student's: the recipe that made it
        q.set_rt_info(v, ["framework", k])
    save_ir(q, Path(dst_xml), compress_fp16=False)
    method = "nncf-default" if recipe.method == "default" else recipe.method
    return {"higher_precision_layers": openvino_float_layers(Path(dst_xml)),
            "calibration_method": method}


def openvino_float_layers(xml: Path) -> list[str]:
    """Weighted layers of a quantized IR whose data input is not fake-quantized."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in WEIGHTED_OV:
            continue
        src = op.input_value(0).get_node()
        while src.get_type_name() in _PRECISION_PRESERVING:  # int8 flows through these
            src = src.input_value(0).get_node()
        if src.get_type_name() != "FakeQuantize":
            out.append(op.get_friendly_name())
    return out
