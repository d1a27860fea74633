"""ONNX export of a student with metadata, checked by ``onnx.checker``; reading a file's
metadata needs no torch (a cached export is checked without it)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from okdhp_edge.utils.io import atomic_write

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "heatmaps"


def export_onnx(model: torch.nn.Module, path: Path, input_size: tuple[int, int],
                metadata: dict[str, str], dynamic_batch: bool = False,
                opset: int = OPSET) -> Path:
    """Export ``model`` (eval, fp32, CPU) to ``path``: input ``input`` [N, 3, H, W],
    output ``heatmaps`` [N, K, H/4, W/4]. Batch is 1 unless ``dynamic_batch``."""
    import torch

    from okdhp_edge.models.student import export_module

    wrapped, x = export_module(model.to(memory_format=torch.contiguous_format),
                               tuple(input_size))
    dyn = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, (x,), str(tmp), opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes=dyn, dynamo=False, do_constant_folding=True)
        proto = onnx.load(str(tmp))
        for k, v in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))

    atomic_write(Path(path), write)
    return Path(path)


def set_onnx_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Set (add or replace) ``metadata_props`` of an ONNX file, atomically."""
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    props.update(metadata)
    del proto.metadata_props[:]
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    atomic_write(Path(path), lambda tmp: onnx.save(proto, str(tmp)))


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The metadata_props of an ONNX file."""
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def convert_fp16(src: Path, dst: Path) -> Path:
    """A float16 copy of an fp32 ONNX file with fp32 inputs and outputs (the mixed-precision
    file a strongly typed TensorRT network builds an fp16 engine from)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    _sort_nodes(half.graph)  # the converter appends its input casts at the end
    onnx.checker.check_model(half)
    atomic_write(Path(dst), lambda tmp: onnx.save(half, str(tmp)))
    return Path(dst)


def _sort_nodes(graph: Any) -> None:
    """Reorder a graph's nodes topologically (ONNX requires it), keeping the order of
    nodes that are already ready."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError("the ONNX graph has a cycle or an undefined input")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
