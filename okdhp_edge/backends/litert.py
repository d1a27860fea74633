"""LiteRT (TensorFlow Lite): ``.tflite`` files run by the ``ai-edge-litert`` interpreter
(XNNPACK on the CPU), the runtime of Android phones and Arm boards.

- ``litert_fp32``: the student converted by ``litert-torch`` (``torch.export``, no
  TensorFlow), NCHW input as the student takes it (the converter keeps the layout at the
  model's boundary and transposes inside).
- ``litert_fp16``: float16 weights (ai-edge-quantizer's float casting), computed in float.
- ``litert_int8``: full-integer post-training quantization by ai-edge-quantizer's
  ``static_wi8_ai8`` recipe (int8 per-channel weights, int8 activations, min-max ranges
  from the training-split crops every INT8 format is calibrated on); its input and output
  are int8, which the runner quantizes and dequantizes with the file's own parameters.
  A student whose graph has transposed convolutions (the MobileNetV2 decoders), for which
  that recipe gives files LiteRT refuses or runs to zeros, goes through litert-torch's PT2E
  quantizer instead (same crops, min-max ranges), which leaves the transposed convolutions
  and residual additions in float (listed in the record).

The runner needs only ``ai-edge-litert`` (numpy and flatbuffers; in the plain install), so
a LiteRT bundle runs on a board without torch. The converter and the quantizer are the
``litert`` extra. Each file carries the student's ``okdhp_*`` metadata as a flatbuffer
metadata entry, read back without TensorFlow.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from okdhp_edge.backends.base import (
    BackendUnavailable,
    BuildContext,
    Runner,
    conversion_failed,
    missing_package,
)
from okdhp_edge.targets import ExportFormat

log = logging.getLogger(__name__)

METADATA_NAME = "okdhp"  # the flatbuffer metadata entry holding the okdhp_* fields (JSON)


def unavailable_reason() -> Optional[str]:
    return missing_package("ai_edge_litert", "litert")


class LiteRTRunner(Runner):
    """The LiteRT interpreter with its default XNNPACK delegate and ``threads`` threads.

    A full-integer file takes and gives int8: ``run`` quantizes the float input and
    dequantizes the heatmaps with the file's own scale and zero point (what an app on the
    device does), so every runner keeps the float [N, 3, H, W] -> [N, K, h, w] contract.
    """

    backend = "litert"
    RUNTIME = ("ai_edge_litert.interpreter",)

    def load(self, path: str) -> None:
        try:
            import ai_edge_litert
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise BackendUnavailable(f"ai-edge-litert is not installed ({exc}); "
                                     "pip install okdhp_edge") from None  # the plain install
        self.check_cpu_target()
        content = Path(path).read_bytes()
        self._metadata = read_metadata(content)
        self.interp = Interpreter(model_content=content, num_threads=max(1, self.threads))
        self.interp.allocate_tensors()
        self._in = self.interp.get_input_details()[0]
        self._out = self.interp.get_output_details()[0]
        self._version = getattr(ai_edge_litert, "__version__", None)

    def _to_input(self, x: np.ndarray) -> np.ndarray:
        dtype = self._in["dtype"]
        if dtype == np.float32:
            return x
        scale, zero = self._in["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)

    def _from_output(self, y: np.ndarray) -> np.ndarray:
        if y.dtype == np.float32:
            return y.copy()  # the interpreter reuses its output buffer
        scale, zero = self._out["quantization"]
        return (y.astype(np.float32) - zero) * np.float32(scale)

    def run(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] != 1:
            from okdhp_edge.backends.base import run_one_by_one

            return run_one_by_one(self, x)
        self.interp.set_tensor(self._in["index"], self._to_input(x))
        self.interp.invoke()
        return self._from_output(self.interp.get_tensor(self._out["index"]))

    def input_hw(self) -> Optional[tuple[int, int]]:
        shape = [int(d) for d in self._in["shape"]]
        return (shape[2], shape[3]) if len(shape) == 4 and shape[1] == 3 else None

    def model_metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def close(self) -> None:
        self.interp = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        # float16 weights are dequantized where they are used: the arithmetic is f32
        ran = {"fp16": "f32 (fp16 weights)", "int8": "int8"}.get(self.precision, "f32")
        d.update(version=getattr(self, "_version", None), delegate="XNNPACK (default)",
                 inference_precision=ran,
                 input_dtype=np.dtype(self._in["dtype"]).name if hasattr(self, "_in") else None)
        return d


RUNNER = LiteRTRunner


def read_metadata(content: bytes) -> dict[str, str]:
    """The ``okdhp_*`` metadata of a ``.tflite`` flatbuffer ({} where it carries none)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            return {k: str(v) for k, v in json.loads(bytes(data).decode()).items()}
    return {}


def file_metadata(path: Path) -> dict[str, str]:
    """The ``okdhp_*`` metadata a ``.tflite`` file carries."""
    return read_metadata(Path(path).read_bytes())


# ------------------------------------------------------------------------------ builders


def _with_metadata(content: bytes, metadata: dict[str, str]) -> bytes:
    """``content`` with the ``okdhp`` metadata entry set to ``metadata`` (JSON)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    for buf in model.buffers or []:  # data stored after the flatbuffer (offset, size) moves
        if buf.offset and buf.offset > 1:  # inside it: repacking drops that tail
            buf.data = np.frombuffer(content[buf.offset:buf.offset + buf.size], np.uint8)
            buf.offset = buf.size = 0
    kept = [m for m in (model.metadata or []) if m.name != METADATA_NAME.encode()]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), np.uint8)
    model.buffers = [*(model.buffers or []), buffer]
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME.encode(), len(model.buffers) - 1
    model.metadata = [*kept, entry]
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _write(ctx: BuildContext, fmt: ExportFormat, content: bytes) -> None:
    from okdhp_edge.utils.io import atomic_write_bytes

    atomic_write_bytes(ctx.path(fmt.name), _with_metadata(content, ctx.metadata(fmt)))


def _converted(module: Any, x: Any, where: Path, what: str, **kwargs: Any) -> bytes:
    """``litert_torch.convert(module, (x,), **kwargs)`` as ``.tflite`` bytes (written to a
    temporary beside ``where``); any converter error is this row's reason."""
    import litert_torch

    tmp = where.with_name(f".{where.name}.convert.tflite")
    try:
        with warnings.catch_warnings():  # torch.export's deprecation notes, once per node
            warnings.simplefilter("ignore", FutureWarning)
            edge = litert_torch.convert(module, (x,), **kwargs)
        edge.export(str(tmp))
        return tmp.read_bytes()
    except Exception as exc:  # noqa: BLE001 - any converter error is this row's reason
        raise conversion_failed(exc, what) from None
    finally:
        tmp.unlink(missing_ok=True)


def _build_fp32(ctx: BuildContext, fmt: ExportFormat) -> dict[str, Any]:
    reason = missing_package("litert_torch", "litert", export=True)
    if reason:
        raise BackendUnavailable(reason)
    import litert_torch

    from okdhp_edge.convert.subpixel import channel_last_shuffles
    from okdhp_edge.models.student import export_module

    model = channel_last_shuffles(ctx.model)  # a sub-pixel decoder's shuffles in NHWC
    module, x = export_module(model, ctx.size)
    _write(ctx, fmt, _converted(module, x, ctx.path(fmt.name), "litert-torch conversion"))
    return {"litert": {**_layout(ctx, fmt),
                       "converter": f"litert-torch {litert_torch.__version__}"}}


def _layout(ctx: BuildContext, fmt: ExportFormat) -> dict[str, str]:
    """The layout fields of a file's record: its input layout, and how a sub-pixel decoder's
    depth-to-space runs (every LiteRT file is the fp32 file's, or made from it)."""
    import torch

    shuffles = any(isinstance(m, torch.nn.PixelShuffle) for m in ctx.model.modules())
    return {"layout": fmt.layout, **({"depth_to_space": DEPTH_TO_SPACE} if shuffles else {})}


DEPTH_TO_SPACE = "channel-last (depth-first channels, one transpose per layer)"
# raised when what a builder writes changes: 1, a sub-pixel decoder's shuffles channel-last
# (the fp16 and int8 files are made from the fp32 one)
BUILD_REVISION = 1


def _quantizer(src: Path) -> Any:
    reason = missing_package("ai_edge_quantizer", "litert", export=True)
    if reason:
        raise BackendUnavailable(reason)
    from ai_edge_quantizer import quantizer

    return quantizer.Quantizer(str(src))


def _quantize(step: Callable[[], Any], what: str) -> Any:
    """Run a quantizer step; its printed size report goes to the log, not stdout."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            result = step()
    except Exception as exc:  # noqa: BLE001 - any quantizer error is this row's reason
        raise conversion_failed(exc, what) from None
    log.debug("%s: %s", what, " | ".join(out.getvalue().splitlines()))
    return result


def _build_fp16(ctx: BuildContext, fmt: ExportFormat) -> dict[str, Any]:
    """Float16 weights, dequantized to float32 where they are used."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    qt = _quantizer(ctx.path(fmt.source))
    qt.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                              num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    result = _quantize(lambda: qt.quantize(), "ai-edge-quantizer float16")
    _write(ctx, fmt, bytes(result.quantized_model))
    return {"litert": {**_layout(ctx, fmt), "weights": "float16"}}


def _build_int8(ctx: BuildContext, fmt: ExportFormat) -> dict[str, Any]:
    """Full-integer INT8 by ai-edge-quantizer (min-max ranges), or, for a student with
    transposed convolutions (MobileNetV2 decoders), litert-torch's PT2E quantizer, which
    leaves them in float (the record lists them): ai-edge-quantizer gives their biases
    per-channel scales that LiteRT either refuses ("num_scales must be 1") or runs to an
    all-zero output."""
    if ctx.recipe.method not in ("default", "minmax"):
        raise BackendUnavailable(f"LiteRT INT8 estimates min-max ranges only, not "
                                 f"'{ctx.recipe.method}'")
    if ctx.recipe.keep_head:
        raise BackendUnavailable("LiteRT INT8 here quantizes every layer (no --int8-keep-head)")
    images, calib = ctx.calibration()
    if "TRANSPOSE_CONV" in _op_names(ctx.path(fmt.source)):
        content, quantizer = _pt2e_int8(ctx, fmt, images), PT2E
    else:
        content, quantizer = _aeq_int8(ctx, fmt, images), AEQ
    _write(ctx, fmt, content)
    return {"litert": _layout(ctx, fmt),
            "quantization": {"calibration": calib, "recipe": ctx.recipe.as_dict(),
                             "calibration_method": "minmax", "quantizer": quantizer,
                             "activations": "s8 (int8 I/O)",
                             "higher_precision_layers": float_layers(ctx.path(fmt.name))}}


AEQ = "ai-edge-quantizer static_wi8_ai8"
PT2E = "litert-torch PT2E (transposed convolutions and residual additions stay float)"


def _aeq_int8(ctx: BuildContext, fmt: ExportFormat, images: np.ndarray) -> bytes:
    """ai-edge-quantizer's ``static_wi8_ai8`` of the fp32 file, calibrated on ``images``."""
    from ai_edge_quantizer import recipe as aeq_recipe

    qt = _quantizer(ctx.path(fmt.source))
    qt.load_quantization_recipe(aeq_recipe.static_wi8_ai8())
    signature, input_name = _signature(ctx.path(fmt.source))
    data = {signature: [{input_name: images[i:i + 1]} for i in range(len(images))]}
    result = _quantize(lambda: qt.quantize(qt.calibrate(data)), "ai-edge-quantizer int8")
    return bytes(result.quantized_model)


def _op_names(path: Path) -> set[str]:
    """The operator names of a ``.tflite`` graph."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    return {op["op_name"] for op in interp._get_ops_details()}  # noqa: SLF001 - public listing


def _pt2e_int8(ctx: BuildContext, fmt: ExportFormat, images: np.ndarray) -> bytes:
    """litert-torch's PT2E INT8: int8 per-channel symmetric weights, int8 per-tensor
    activations with min-max ranges from ``images`` [N, 3, H, W]."""
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from okdhp_edge.convert import pt2e
    from okdhp_edge.models.student import export_module

    module, x = export_module(ctx.model, ctx.size)
    quantizer = PT2EQuantizer().set_global(_minmax_config())
    pt2e.install()
    try:
        prepared = prepare_pt2e(torch.export.export(module, (x,)).module(), quantizer)
        with torch.no_grad():
            for i in range(len(images)):
                prepared(torch.from_numpy(images[i:i + 1]))
        converted = convert_pt2e(prepared, fold_quantize=False)  # the converter folds
    except Exception as exc:  # noqa: BLE001 - any quantizer error is this row's reason
        raise conversion_failed(exc, "litert-torch PT2E int8") from None
    return _converted(converted, x, ctx.path(fmt.name), "litert-torch PT2E int8",
                      quant_config=QuantConfig(pt2e_quantizer=quantizer))


def _minmax_config() -> Any:
    """litert-torch's static symmetric per-channel config with min-max activation observers
    (its default estimates them with a histogram; every LiteRT INT8 file here is min-max)."""
    import dataclasses

    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.observer import MinMaxObserver

    cfg = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    act = dataclasses.replace(cfg.input_activation,
                              observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    return dataclasses.replace(cfg, input_activation=act, output_activation=act)


def _signature(path: Path) -> tuple[str, str]:
    """(signature key, input name) of a converted file's only signature."""
    from ai_edge_litert.interpreter import Interpreter

    sigs = Interpreter(model_path=str(path)).get_signature_list()
    key = next(iter(sigs))
    return key, sigs[key]["inputs"][0]


def float_layers(path: Path) -> list[str]:
    """Convolutions of a quantized ``.tflite`` whose input is not int8 (they run in float)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    out = []
    for op in interp._get_ops_details():  # noqa: SLF001 - the interpreter's public op listing
        if "CONV" in op["op_name"] and len(op["inputs"]):
            first = tensors.get(int(op["inputs"][0]))
            if first is not None and first["dtype"] not in (np.int8, np.uint8):
                out.append(f"{op['op_name']}#{op['index']}")
    return out


def _qat_int8(ctx: BuildContext, fmt: ExportFormat) -> dict[str, Any]:
    """A quantization-aware student's full-integer ``.tflite``: its int8 program converted
    by litert-torch in static Q/DQ mode, with the program's scales and zero points. The
    converter takes a weight as float -> quantize -> dequantize, not as the program's
    folded int8 constant ("'stablehlo.uniform_dequantize' op operand #0 must be ... integer
    quantized values, but got 'tensor<17x32x1x1xi8>'"), so each folded weight is unfolded
    first: dequantized once, then quantized again with its own parameters (the same int8
    values). Transposed convolutions stay float (listed in the record)."""
    reason = missing_package("litert_torch", "litert", export=True)
    if reason:
        raise BackendUnavailable(reason)
    import torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig

    from okdhp_edge.convert.qat_program import qat_fields

    graph = ctx.qat_program().module()
    _unfold_weights(graph)
    w, h = ctx.size
    static = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    content = _converted(_program_module(graph), torch.zeros(1, 3, h, w), ctx.path(fmt.name),
                         "litert-torch conversion of the QAT program",
                         quant_config=QuantConfig(pt2e_quantizer=static))  # static Q/DQ
    _write(ctx, fmt, content)
    return {"litert": {"layout": fmt.layout},
            "quantization": {**qat_fields(ctx.man.qat), "activations": "s8 (int8 I/O)",
                             "higher_precision_layers": float_layers(ctx.path(fmt.name))}}


def _unfold_weights(graph: Any) -> int:
    """Every int8 constant a dequantize node reads (a folded weight) replaced by its float
    value quantized by the same parameters: ``dequantize(quantize(w_float))``, with
    ``w_float = (w_int8 - zero_point) * scale``, gives back the same int8 values. Returns
    how many were unfolded. ``graph``: a converted PT2E module (in place)."""
    import torch

    ops = torch.ops.quantized_decomposed
    quantize_of = {ops.dequantize_per_channel.default: ops.quantize_per_channel.default,
                   ops.dequantize_per_tensor.default: ops.quantize_per_tensor.default}
    count = 0
    for node in list(graph.graph.nodes):
        if node.target not in quantize_of or node.args[0].op != "get_attr":
            continue
        weight = attrgetter(node.args[0].target)(graph)  # a dotted path
        if weight.dtype != torch.int8:
            continue
        name = f"{node.args[0].target.replace('.', '_')}_float"
        graph.register_buffer(name, _dequantized(graph, node, weight))
        with graph.graph.inserting_before(node):
            q = graph.graph.call_function(quantize_of[node.target],
                                          (graph.graph.get_attr(name), *node.args[1:]))
        node.args = (q, *node.args[1:])
        count += 1
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return count


def _dequantized(graph: Any, node: Any, weight: Any) -> Any:
    """The float value of the int8 ``weight`` that dequantize ``node`` reads."""
    import torch

    if node.target == torch.ops.quantized_decomposed.dequantize_per_channel.default:
        scale, zero = (attrgetter(n.target)(graph) for n in node.args[1:3])
        shape = [1] * weight.dim()
        shape[node.args[3]] = -1  # the channel axis
        return (weight.float() - zero.view(shape).float()) * scale.view(shape).float()
    return (weight.float() - float(node.args[2])) * float(node.args[1])


def _program_module(graph: Any) -> Any:
    """``graph`` (a program's module, returning a 1-tuple) as a module returning the
    heatmaps, whose ``train(False)`` leaves the graph alone (the graph refuses it, and the
    converter calls it). Shape: [1, 3, H, W] -> [1, K, h, w]."""
    import torch

    class Program(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.program = graph  # not "graph": a traced module's own fx graph is named so

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.program(x)[0]

        def train(self, mode: bool = True) -> Any:
            self.training = mode
            return self

    return Program().eval()


BUILDERS = {"litert_fp32": _build_fp32, "litert_fp16": _build_fp16, "litert_int8": _build_int8}
QAT_BUILDERS = {"litert_int8": _qat_int8}
