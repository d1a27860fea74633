"""A quantization-aware student's int8 program: the converted PT2E graph (quantize /
dequantize operators around every quantized operator, its scales and zero points) saved as
a ``torch.export`` archive beside the student's float weights. Every backend's INT8 file of
such a student is made from it, so all of them run the same quantization parameters: the
QDQ ONNX (ONNX Runtime, TensorRT, and OpenVINO's IR through it), the ExecuTorch program.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from okdhp_edge.utils.io import atomic_write, verify_sha256

log = logging.getLogger(__name__)

PROGRAM_FILE = "qat_int8.pt2"
# the ONNX opset of a program's QDQ file (per-channel DequantizeLinear needs >= 13)
QAT_OPSET = 18


def program_bytes(graph: Any, size: tuple[int, int]) -> bytes:
    """The ``torch.export`` archive of ``graph`` (a converted PT2E module returning a
    1-tuple of heatmaps) traced at batch 1 and ``size`` = (W, H)."""
    import torch

    w, h = size
    ep = torch.export.export(graph, (torch.zeros(1, 3, h, w),))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


def load_program(path: Path, sha256: str) -> Any:
    """The ``ExportedProgram`` of a student's program file, after its sha256 checks out
    (the archive holds pickled constants: it is trusted only as the file its manifest
    names)."""
    import torch
    import torchao.quantization.pt2e  # noqa: F401 - registers the quantized_decomposed ops

    verify_sha256(Path(path), sha256)
    return torch.export.load(str(path))


def program_in_form(program: Any, decoder: str) -> Any:
    """The ``ExportedProgram`` with its decoder in ``decoder`` form: as it is for
    ``transposed``; for ``subpixel``, each foldable int8 transposed convolution rewritten as
    a sub-pixel convolution of the same int8 weights (:func:`okdhp_edge.convert.subpixel.
    subpixel_program`, exact on the program's int8 values) and exported again at the same
    input shape. ValueError when the program has nothing to rewrite."""
    if decoder == "transposed":
        return program
    import torch

    from okdhp_edge.convert.subpixel import subpixel_program

    shape = next(n.meta["val"].shape for n in program.graph.nodes
                 if n.op == "placeholder" and n.name in program.graph_signature.user_inputs)
    graph = program.module()
    if subpixel_program(graph) == 0:
        raise ValueError("the int8 program has no 4x4 stride-2 transposed convolution "
                         "followed by a ReLU to rewrite in sub-pixel form")
    return torch.export.export(graph, (torch.zeros(tuple(shape)),))


def run_program(program: Any, x: np.ndarray) -> np.ndarray:
    """Heatmaps [N, K, h, w] of a loaded program on float32 images [N, 3, H, W] (one at a
    time: the program is traced at batch 1)."""
    import torch

    module = program.module()
    with torch.no_grad():
        outs = [module(torch.from_numpy(np.ascontiguousarray(x[i:i + 1])))[0]
                for i in range(len(x))]
    return torch.cat(outs).numpy()


def program_onnx(program: Any, path: Path, metadata: dict[str, str],
                 rewrite: Optional[Callable[[Any], None]] = None,
                 module_rewrite: Optional[Callable[[Any], Any]] = None) -> Path:
    """The program as a QDQ ONNX file (``torch.onnx`` from the ``ExportedProgram``:
    QuantizeLinear / DequantizeLinear pairs with the program's scales and zero points),
    written atomically with ``metadata`` in its ``metadata_props``; ``module_rewrite`` (a
    runtime's exact rewrite of the program's module, in place) applied before it is
    exported, ``rewrite`` (one of the ``onnx.ModelProto``, in place) before it is checked."""
    import onnx
    import torch

    # exported again from its module: the ONNX of the loaded ExportedProgram itself ran
    # 0.056 off the program's heatmaps (mbv2-d64; max 0.52), the re-exported module's exactly
    shape = next(n.meta["val"].shape for n in program.graph.nodes
                 if n.op == "placeholder" and n.name in program.graph_signature.user_inputs)
    graph = program.module()
    if module_rewrite is not None:
        module_rewrite(graph)
    module = torch.export.export(graph, (torch.zeros(tuple(shape)),))

    def write(tmp: Path) -> None:
        onx = torch.onnx.export(module, dynamo=True, opset_version=QAT_OPSET, verbose=False)
        model = onx.model_proto
        for node in model.graph.node:  # the exporter's per-node stack traces: 10x the weights
            del node.metadata_props[:]
        if rewrite is not None:
            rewrite(model)
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))

    atomic_write(Path(path), write)
    return Path(path)


def qat_fields(qat: Any) -> dict[str, Any]:
    """What the format record of a quantization-aware student's INT8 file says of how it
    was quantized (``qat``: its manifest's :class:`okdhp_edge.records.QatRecord`)."""
    return {"recipe": dict(qat.recipe), "quantizer": qat.recipe.get("quantizer"),
            "activations": qat.recipe.get("activations")}


# the largest int8 weight magnitude no x86 CPU without VNNI saturates on: its u8 x s8 kernels
# (VPMADDUBSW) sum two products in 16 bits, 2 x 255 x 63 < 2^15 (qat.weight_range=half)
SATURATION_FREE_WEIGHT = 63


def saturates_here(model: Any) -> bool:
    """Whether the int8 weights of a QDQ ONNX ``model`` (those its DequantizeLinear nodes
    read) can saturate this CPU's u8 x s8 kernels: an x86 CPU without VNNI and a weight
    beyond :data:`SATURATION_FREE_WEIGHT` (OpenVINO's and ONNX Runtime's U8S8 kernels)."""
    from onnx import numpy_helper

    from okdhp_edge.utils.cpu import cpu_has_int8_dot

    if cpu_has_int8_dot():
        return False
    return any(int(np.abs(numpy_helper.to_array(w).astype(np.int16)).max(initial=0))
               > SATURATION_FREE_WEIGHT for _, w in int8_weights(model))


def int8_weights(model: Any) -> list[tuple[Any, Any]]:
    """The (DequantizeLinear node, int8 initializer) pairs of a QDQ ONNX ``model``: its int8
    weights, each with the node that reads it (and its scales and zero points)."""
    import onnx

    inits = {i.name: i for i in model.graph.initializer}
    return [(n, inits[n.input[0]]) for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].data_type == onnx.TensorProto.INT8]


def symmetric_activations(qat: Any) -> bool:
    """Whether every activation zero point of the program is 0 (TensorRT reads no other)."""
    return "symmetric" in str(qat.recipe.get("activations", "")).replace("asymmetric", "")
