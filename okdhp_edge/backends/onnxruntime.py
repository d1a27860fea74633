"""ONNX Runtime: the runner (CPU execution provider; CUDA / TensorRT EPs with
onnxruntime-gpu) and the ONNX formats: the student exported to ONNX (static and dynamic
batch), its float16 copy and its INT8 QDQ files (ONNX Runtime static quantization).

The runner needs only ``onnxruntime``; the builders import torch, onnx and the quantizer
when they run.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from okdhp_edge.backends.base import BackendUnavailable, BuildContext, Runner, missing_package
from okdhp_edge.convert.quantize import check_choices
from okdhp_edge.errors import QuantizationError
from okdhp_edge.grammar import option
from okdhp_edge.targets import ExportFormat

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# layer types whose precision is reported (the ones that carry the MACs)
WEIGHTED_ONNX = ("Conv", "ConvTranspose", "MatMul", "Gemm")



@dataclass(frozen=True)
class Int8Options:
    """ONNX Runtime's INT8 options: the recipe's ``onnxruntime`` section (its fields keep
    their flat names in records and on the command line). TensorRT's S8S8 file is always
    ONNX Runtime's own static quantization, whatever these say.

    Attributes:
        ort_quantizer: who writes the QDQ file: ``nncf`` (the default: NNCF's post-training
            quantization of the ONNX model, with its range presets and fast bias correction,
            the OpenVINO file's recipe; activations written as u8) or ``ort`` (ONNX Runtime's
            static MinMax quantization, activations as ``ort_activations`` says). On the
            light zoo's selection split ONNX Runtime's own lost 0.02-0.06 AP more than NNCF's
            per-tensor file on every MobileNetV2 student and was no faster (docs/int8.md).
        ort_activations: with ``ort_quantizer=ort``: ``u8`` (asymmetric, U8S8: the fast form
            on x86 CPUs, measured 1.8-2x faster than S8S8 on AVX2) or ``s8`` (symmetric S8S8,
            for Arm targets).
        ort_nncf_activations: with ``ort_quantizer=nncf``: ``per_tensor`` (the default: every
            activation per tensor, which ONNX Runtime fuses into QLinearConv) or
            ``per_channel`` (NNCF's own choice: a depthwise convolution's input per channel,
            which ONNX Runtime cannot fuse: 2.5x its fp32 on MobileNetV2).
        ort_transposed_conv: ``subpixel`` (the default: a light decoder's 4x4 stride-2
            transposed convolutions, with their batch norms, as 2x2 convolutions +
            DepthToSpace + a crop before quantizing, exact in float, since ONNX Runtime has
            no quantized ConvTranspose; :mod:`okdhp_edge.convert.subpixel`) or ``keep``
            (they run in float).
    """

    ort_quantizer: str = option(
        "nncf", "ONNX Runtime's QDQ file: NNCF's (range presets, bias correction: the "
        "OpenVINO file's recipe; the default) or its own static quantization",
        choices=("nncf", "ort"))
    ort_activations: str = option("u8", "ONNX Runtime activations: u8 (x86) or s8 (Arm)",
                                  choices=("u8", "s8"))
    ort_nncf_activations: str = option(
        "per_tensor", "with ort_quantizer nncf: activations per tensor (ONNX Runtime fuses "
        "every convolution) or NNCF's per-channel choice (slower)",
        choices=("per_tensor", "per_channel"))
    ort_transposed_conv: str = option(
        "subpixel", "ONNX Runtime: a light decoder's transposed convolutions as sub-pixel "
        "convolutions, which quantize, or kept (they run in float)",
        choices=("subpixel", "keep"))

    def __post_init__(self) -> None:
        check_choices(self)
        if self.ort_quantizer == "nncf" and self.ort_activations != "u8":
            raise QuantizationError("--ort-activations s8 is ONNX Runtime's quantizer's; NNCF "
                                    "chooses the activation types itself: add --ort-quantizer "
                                    "ort")
        default = next(f.default for f in fields(self) if f.name == "ort_nncf_activations")
        if self.ort_nncf_activations != default and self.ort_quantizer != "nncf":
            raise QuantizationError("--ort-nncf-activations is NNCF's choice for ONNX "
                                    "Runtime's file: add --ort-quantizer nncf")


def unavailable_reason() -> Optional[str]:
    return missing_package("onnxruntime", "onnxruntime")


class OnnxRuntimeRunner(Runner):
    """``device`` cpu or cuda (fp32, int8 QDQ files) or tensorrt (fp32 / fp16 through the
    TRT EP)."""

    backend = "onnxruntime"
    RUNTIME = ("onnxruntime",)
    # session.intra_op.allow_spinning: idle intra-op threads spin (ONNX Runtime's default)
    SCHEDULING = {"allow_spinning": True}

    def load(self, path: str) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from None
        provider = _PROVIDERS.get(self.device)
        if provider is None or provider not in ort.get_available_providers():
            raise BackendUnavailable(
                f"ONNX Runtime provider for device '{self.device}' is not available here "
                f"(have: {', '.join(ort.get_available_providers())})")
        # the file carries its precision: fp32, or int8 Q/DQ nodes (model_int8.onnx);
        # fp16 exists only through the TensorRT execution provider
        if self.precision not in ("fp32", "int8") and not (self.device == "tensorrt"
                                                           and self.precision == "fp16"):
            raise BackendUnavailable(
                f"onnxruntime/{self.device} offers fp32 and int8 (a QDQ file), not "
                f"'{self.precision}'")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning",
                                      "1" if self.scheduling["allow_spinning"] else "0")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # errors only: graph clean-up notes (one per unused ReLU6 bound of a MobileNetV2)
        # would flood the console
        opts.log_severity_level = 3
        prov_opts: list[Any] = [{}]
        if self.device == "tensorrt":
            prov_opts = [{"trt_fp16_enable": self.precision == "fp16"}]
        self.session = ort.InferenceSession(path, opts, providers=[provider],
                                            provider_options=prov_opts)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [self.session.get_outputs()[0].name]
        self._version = ort.__version__

    def model_metadata(self) -> dict[str, str]:
        meta = self.session.get_modelmeta().custom_metadata_map
        return {k: v for k, v in meta.items() if k.startswith("okdhp_")}

    def input_hw(self) -> Optional[tuple[int, int]]:
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
            return None
        return shape[2], shape[3]

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(self.output_names, {self.input_name: x})[0]

    def close(self) -> None:
        self.session = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(provider=_PROVIDERS[self.device], version=getattr(self, "_version", None),
                 intra_op_threads=self.threads, inter_op_threads=1)
        return d


RUNNER = OnnxRuntimeRunner


# ------------------------------------------------------------------------------ builders


def _build_onnx(ctx: BuildContext, fmt: ExportFormat) -> dict[str, Any]:
    from okdhp_edge.convert.onnx_export import export_onnx

    export_onnx(ctx.model, ctx.path(fmt.name), ctx.size, ctx.metadata(),
                dynamic_batch=fmt.name == "onnx_dynamic")
    return {}


def _build_fp16(ctx: BuildContext, fmt: ExportFormat) -> dict[str, Any]:
    from okdhp_edge.convert.onnx_export import convert_fp16

    convert_fp16(ctx.path(fmt.source), ctx.path(fmt.name))
    return {}


def _build_int8(ctx: BuildContext, fmt: ExportFormat) -> dict[str, Any]:
    """QDQ INT8; TensorRT's file (runs on tensorrt) gets signed symmetric activations."""
    images, calib = ctx.calibration()
    acts = "s8" if fmt.runs_on == "tensorrt" else None
    from okdhp_edge.convert.onnx_export import set_onnx_metadata

    with _float_source(ctx, fmt) as src:
        if ctx.recipe.onnxruntime.ort_quantizer == "nncf" and acts is None:
            made = quantize_onnx_nncf(src, ctx.path(fmt.name), images, ctx.recipe)
        else:
            made = quantize_onnx(src, ctx.path(fmt.name), images, ctx.recipe, acts)
    set_onnx_metadata(ctx.path(fmt.name), ctx.metadata(fmt))  # the recipe travels with it
    return {"quantization": {**made, "calibration": calib, "recipe": ctx.recipe.as_dict()}}


@contextlib.contextmanager
def _float_source(ctx: BuildContext, fmt: ExportFormat) -> Iterator[Path]:
    """The float ONNX an INT8 file is quantized from: the format's source, or, for ONNX
    Runtime's file of a student with transposed convolutions (``ort_transposed_conv=
    subpixel``), the student with them as sub-pixel convolutions, exported to a temporary
    file beside it (removed after)."""
    from okdhp_edge.convert.subpixel import subpixel_student

    sub = None
    if fmt.runs_on == "onnxruntime" and ctx.recipe.onnxruntime.ort_transposed_conv == "subpixel":
        sub = subpixel_student(ctx.model)
    if sub is None:
        yield ctx.path(fmt.source)
        return
    from okdhp_edge.convert.onnx_export import export_onnx

    tmp = ctx.path(fmt.name).with_name(f".{fmt.name}.subpixel.onnx")
    try:
        yield export_onnx(sub, tmp, ctx.size, {})
    finally:
        tmp.unlink(missing_ok=True)


def file_metadata(path: Path) -> dict[str, str]:
    """The ``okdhp_*`` metadata an ONNX file carries."""
    from okdhp_edge.convert.onnx_export import read_onnx_metadata

    return read_onnx_metadata(path)


BUILDERS = {"onnx": _build_onnx, "onnx_dynamic": _build_onnx, "onnx_fp16": _build_fp16,
            "onnx_int8": _build_int8, "onnx_int8_s8": _build_int8}


def _qat_int8(ctx: BuildContext, fmt: ExportFormat) -> dict[str, Any]:
    """A quantization-aware student's QDQ ONNX: its int8 program exported as it is (the
    program's scales and zero points; TensorRT's file only where they are symmetric)."""
    from okdhp_edge.convert.qat_program import program_onnx, qat_fields, symmetric_activations

    if fmt.runs_on == "tensorrt" and not symmetric_activations(ctx.man.qat):
        raise BackendUnavailable("TensorRT's explicit quantization reads zero points of 0; "
                                 "this student's activations are asymmetric (fine-tune with "
                                 "qat.activations=symmetric for TensorRT)")
    from okdhp_edge.convert.subpixel import subpixel_program

    x86 = fmt.runs_on == "onnxruntime"  # (TensorRT has int8 transposed convolutions)
    rewritten: list[int] = []
    program_onnx(ctx.qat_program(), ctx.path(fmt.name), ctx.metadata(fmt),
                 rewrite=(lambda model: rewritten.append(qat_rewrite(model))) if x86 else None,
                 module_rewrite=subpixel_program if x86 else None)
    fields = qat_fields(ctx.man.qat)
    if not x86:
        return {"quantization": fields}
    fields["activations"] = QAT_ACTIVATIONS
    if rewritten[0]:
        fields["weights"] = QAT_U8_WEIGHTS
    return {"quantization": fields}


QAT_ACTIVATIONS = "u8 asymmetric per tensor (the program's int8, zero points + 128)"
QAT_U8_WEIGHTS = ("u8 per channel (the program's int8 + 128, zero points 128: U8U8, since this "
                  "CPU has no VNNI and its U8S8 kernels saturate with weights beyond +-63)")
# raised when a builder's files change, per format: onnx_int8 1, NNCF's s8 activations as
# u8; 2, transposed convolutions as sub-pixel convolutions (a recipe field older files'
# records lack, which would read as its default); 3, the sub-pixel form's 2x2 convolutions
BUILD_REVISION = {"onnx_int8": 3}
# raised when a QAT builder's files change: 1, _uint8_activations; 2, the transposed
# convolutions as sub-pixel convolutions (convert.subpixel.subpixel_program); 3, 2x2 ones;
# 4, u8 weights on a CPU without VNNI (qat_rewrite)
QAT_BUILD_REVISION = 4


def qat_file_fits_here(spec: ExportFormat, entry: Any, man: Any) -> bool:
    """Whether a cached QAT file's weight form is what :func:`qat_rewrite` would write on
    this CPU (a zoo's ``export/`` carried between a VNNI machine and one without): u8 weights
    where a CPU without an int8 dot product meets full-range weights, s8 elsewhere. The
    range is the recipe's (``qat.weight_range``; per-channel scales put every full-range
    channel's largest weight at +-127)."""
    from okdhp_edge.utils.cpu import cpu_has_int8_dot

    if spec.runs_on != "onnxruntime":  # TensorRT's file is not rewritten
        return True
    full = man.qat.recipe.get("weight_range", "full") == "full"
    return bool(entry.quantization.weights) == (full and not cpu_has_int8_dot())


def qat_rewrite(model: Any) -> int:
    """A quantization-aware program's QDQ ONNX as ONNX Runtime runs it fastest on this CPU
    with the program's arithmetic: u8 activations (:func:`_uint8_activations`), and u8
    weights where U8S8 would saturate (``saturates_here``). Returns the weights rewritten."""
    from okdhp_edge.convert.qat_program import saturates_here

    _uint8_activations(model)
    return _uint8_weights(model) if saturates_here(model) else 0


def _uint8_weights(model: Any) -> int:
    """Every int8 weight a DequantizeLinear reads, and its zero points, + 128 as uint8: the
    same real values, run by ONNX Runtime's U8U8 kernels, which do not saturate (a QAT
    program of three MobileNetV2 convolutions on an AVX2 EPYC: U8S8 and S8S8 0.038 off its
    heatmaps, U8U8 0.013, the test's bound 0.018; tests/training/test_qat_quantizer.py).
    Returns how many weights were rewritten."""
    from onnx import numpy_helper

    from okdhp_edge.convert.qat_program import int8_weights

    inits = {i.name: i for i in model.graph.initializer}
    count, done = 0, set()
    for node, w in int8_weights(model):
        if len(node.input) < 3:  # no zero point: int8 by definition, left as it is
            continue
        for init in (w, inits[node.input[2]]):
            if init.name in done:  # a zero point two weights share
                continue
            done.add(init.name)
            value = numpy_helper.to_array(init).astype(np.int16) + 128
            init.CopyFrom(numpy_helper.from_array(value.astype(np.uint8), init.name))
        count += 1
    return count


def _uint8_activations(model: Any) -> None:
    """Every QuantizeLinear of an activation with an int8 zero point z, and the
    DequantizeLinear nodes reading it, given the uint8 zero point z + 128: an exact rewrite
    (the same real values) for ONNX Runtime's CPU kernels. With int8 inputs ONNX Runtime
    left 15 of mbv2-d64's 53 convolutions float between DequantizeLinear and QuantizeLinear
    nodes and 34 layout transposes; with uint8 it fuses all 53 into QLinearConv and keeps 4
    transposes (2.1x faster, the program's heatmaps within a rounding step). (Transposed
    convolutions, which have no quantized kernel here, reach it as sub-pixel convolutions:
    :mod:`okdhp_edge.convert.subpixel`.)"""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    made: dict[str, Any] = {}
    replaced: set[str] = set()
    for node in graph.node:
        zp = inits.get(node.input[2]) if len(node.input) > 2 else None
        if (node.op_type != "QuantizeLinear" or node.input[0] in inits or zp is None
                or zp.data_type != onnx.TensorProto.INT8):
            continue
        name = f"{zp.name}_uint8"
        replaced.add(zp.name)
        if name not in made:
            value = numpy_helper.to_array(zp).astype(np.int16) + 128
            made[name] = numpy_helper.from_array(value.astype(np.uint8), name)
        node.input[2] = name
        for reader in readers.get(node.output[0], []):
            if reader.op_type == "DequantizeLinear":
                reader.input[2] = name
    graph.initializer.extend(made.values())
    read = {name for node in graph.node for name in node.input}
    gone = [i for i in graph.initializer if i.name in replaced and i.name not in read]
    for init in gone:  # the int8 zero points no node reads now
        graph.initializer.remove(init)
    del graph.value_info[:]  # the Q outputs' element type changed


QAT_BUILDERS = {"onnx_int8": _qat_int8, "onnx_int8_s8": _qat_int8}


# ------------------------------------------------------------------------ INT8 quantizer


def _head_node(model: Any) -> str:
    """Name of the ONNX node that writes the graph's output (the heatmap convolution)."""
    out = model.graph.output[0].name
    for node in model.graph.node:
        if out in node.output:
            return node.name
    raise QuantizationError("no node writes the model's output")


def _calibration_reader(base: type, images: np.ndarray, input_name: str) -> Any:
    """ONNX Runtime's calibration reader (a subclass of ``base``,
    ``CalibrationDataReader``) feeding ``images`` [N, 3, H, W] one at a time."""

    class Reader(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.items = iter(images[i:i + 1] for i in range(len(images)))

        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            x = next(self.items, None)
            return None if x is None else {input_name: x}

    return Reader()


def quantize_onnx(src: Path, dst: Path, images: np.ndarray, recipe: Any,
                  activations: Optional[str] = None) -> dict[str, Any]:
    """Static QDQ quantization of ``src`` into ``dst``: per-channel symmetric int8 weights,
    activations as ``activations`` (default the recipe's ``ort_activations``: ``u8``
    asymmetric, or ``s8`` symmetric, the only form TensorRT reads); returns what stayed
    in higher precision.

    Shape: images [N, 3, H, W] float32, fed one at a time (the model has batch 1).
    """
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime quantization is not installed ({exc})") from None
    from okdhp_edge.utils.io import atomic_write

    method = {"default": CalibrationMethod.MinMax, "minmax": CalibrationMethod.MinMax,
              "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[recipe.method]
    model = onnx.load(str(src))
    reader = _calibration_reader(CalibrationDataReader, images, model.graph.input[0].name)
    exclude = [_head_node(model)] if recipe.keep_head else []
    signed = (activations or recipe.onnxruntime.ort_activations) == "s8"

    def write(tmp: Path) -> None:
        quantize_static(str(src), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if signed else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=method,
                        nodes_to_exclude=exclude,
                        extra_options={"ActivationSymmetric": signed, "WeightSymmetric": True})

    # ONNX Runtime writes a shape-inferred copy beside the source and deletes it after; a
    # kill or a full disk in between leaves it: never a file of ours, so it goes
    inferred = Path(src).with_name(f"{Path(src).stem}-inferred{Path(src).suffix}")
    inferred.unlink(missing_ok=True)
    try:
        atomic_write(Path(dst), write)
    finally:
        inferred.unlink(missing_ok=True)
    return {"higher_precision_layers": onnx_float_layers(Path(dst)),
            "calibration_method": "minmax" if recipe.method == "default" else recipe.method,
            "activations": "s8 symmetric" if signed else "u8 asymmetric"}


def quantize_onnx_nncf(src: Path, dst: Path, images: np.ndarray, recipe: Any
                       ) -> dict[str, Any]:
    """NNCF's post-training quantization of ``src`` (an ``onnx.ModelProto``) into a QDQ
    ``dst`` that ONNX Runtime runs: NNCF's range preset for ``recipe.method``, its fast bias
    correction, symmetric per-channel int8 weights; activations u8 after a ReLU, s8
    elsewhere, written as u8 (:func:`_uint8_activations`: the same real values; with s8
    inputs ONNX Runtime left 15 of mbv2-d64's 53 convolutions float, with u8 none but the
    head). Returns what stayed in higher precision.

    Shape: images [N, 3, H, W] float32, fed one at a time (the model has batch 1).
    """
    try:
        import nncf
        import onnx
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            QuantizationParameters,
        )
    except ImportError as exc:
        raise BackendUnavailable(f"nncf is not installed ({exc}); ONNX Runtime's INT8 file "
                                 "is NNCF's unless --ort-quantizer ort: pip install "
                                 "'okdhp_edge[train]'") from None
    from okdhp_edge.convert.quantize import nncf_range_estimator
    from okdhp_edge.utils.io import atomic_write

    model = onnx.load(str(src))
    name = model.graph.input[0].name
    calib = nncf.Dataset([images[i:i + 1] for i in range(len(images))], lambda x: {name: x})
    opts: dict[str, Any] = {"subset_size": len(images)}
    if recipe.keep_head:
        opts["ignored_scope"] = nncf.IgnoredScope(names=[_head_node(model)])
    advanced: dict[str, Any] = {}
    estimator = nncf_range_estimator(recipe.method)
    if estimator is not None:
        advanced["activations_range_estimator_params"] = estimator
    if recipe.onnxruntime.ort_nncf_activations == "per_tensor":  # what QLinearConv fuses
        advanced["activations_quantization_params"] = QuantizationParameters(per_channel=False)
    if advanced:
        opts["advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
    quantized = nncf.quantize(model, calib, **opts)
    _uint8_activations(quantized)  # NNCF's s8 activations as u8: what QLinearConv fuses
    atomic_write(Path(dst), lambda tmp: onnx.save(quantized, str(tmp)))
    return {"higher_precision_layers": onnx_float_layers(Path(dst)),
            "calibration_method": "nncf-default" if recipe.method == "default"
            else recipe.method,
            "activations": f"nncf: u8 after ReLU, s8 elsewhere (as u8, zero points + 128), "
                           f"{recipe.onnxruntime.ort_nncf_activations.replace('_', ' ')}"}


def onnx_float_layers(path: Path) -> list[str]:
    """Weighted layers of a QDQ ONNX whose activation or weight is not dequantized int8
    (they run in float)."""
    import onnx

    model = onnx.load(str(path))
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type in WEIGHTED_ONNX and not all(i in dq for i in n.input[:2])]
