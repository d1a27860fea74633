"""TensorRT engines from ONNX (``tensorrt`` Python API) and torch-tensorrt compilation.

Both need an NVIDIA GPU and the packages of the ``tensorrt`` extra. Where either is
missing, :func:`tensorrt_unavailable_reason` says why and nothing is built.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)


def _gpu_reason() -> Optional[str]:
    try:
        import torch
    except ImportError:
        return "torch is not installed (needed to query CUDA)"
    if not torch.cuda.is_available():
        return "no NVIDIA GPU visible to CUDA on this machine"
    return None


def tensorrt_unavailable_reason() -> Optional[str]:
    """None when the ``tensorrt`` package and a GPU are present, else the reason."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return f"the 'tensorrt' package is not installed ({exc}); pip install okdhp_edge[tensorrt]"
    return _gpu_reason()


def torch_tensorrt_unavailable_reason() -> Optional[str]:
    """None when ``torch_tensorrt`` and a GPU are present, else the reason."""
    try:
        import torch_tensorrt  # noqa: F401
    except ImportError as exc:
        return (f"the 'torch_tensorrt' package is not installed ({exc}); "
                "pip install okdhp_edge[tensorrt]")
    return _gpu_reason()


def build_engine(onnx_path: Path, engine_path: Path, fp16: bool = False,
                 workspace_mib: int = 1024) -> Path:
    """Parse the ONNX file and serialise a TensorRT engine (fp32, or fp16 allowed).

    Raises:
        RuntimeError: TensorRT is unavailable, or the parser / builder failed.
    """
    reason = tensorrt_unavailable_reason()
    if reason:
        raise RuntimeError(f"TensorRT unavailable: {reason}")
    import tensorrt as trt

    from okdhp_edge.utils.io import atomic_write_bytes

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt, "NetworkDefinitionCreationFlag") and hasattr(
            trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    atomic_write_bytes(Path(engine_path), bytes(serialized))
    return Path(engine_path)


def compile_torch_tensorrt(model, input_size: tuple[int, int], fp16: bool = False):
    """Compile a stacked hourglass (returning heatmaps) with torch-tensorrt."""
    reason = torch_tensorrt_unavailable_reason()
    if reason:
        raise RuntimeError(f"torch-tensorrt unavailable: {reason}")
    import torch
    import torch_tensorrt

    from okdhp_edge.models.hourglass import HeatmapOnly

    wrapped = HeatmapOnly(model).cuda().eval()
    dtype = torch.half if fp16 else torch.float
    inputs = [torch_tensorrt.Input((1, 3, input_size[1], input_size[0]), dtype=torch.float)]
    return torch_tensorrt.compile(wrapped, inputs=inputs, enabled_precisions={dtype})
