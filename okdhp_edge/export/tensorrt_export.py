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


def _network(trt, builder):
    """A strongly typed network: the only kind TensorRT 11 builds (its weak-typing flags
    FP16 / INT8 are gone), and the explicit one on 10.x, where STRONGLY_TYPED exists. The
    precision of the engine is then that of the ONNX file: fp32, a float16 conversion, or
    Q/DQ nodes (explicit INT8 quantization)."""
    flags = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if hasattr(trt.BuilderFlag, "FP16") and flags is not None and \
            hasattr(flags, "STRONGLY_TYPED"):  # TensorRT 10.x
        return builder.create_network(1 << int(flags.STRONGLY_TYPED))
    if hasattr(trt.BuilderFlag, "FP16"):
        raise RuntimeError(f"TensorRT {trt.__version__} predates strongly typed networks; "
                           "okdhp_edge supports TensorRT 10.x and 11.x")
    return builder.create_network(0)  # TensorRT 11: strongly typed always


def build_engine(onnx_path: Path, engine_path: Path, workspace_mib: int = 1024) -> Path:
    """Parse the ONNX file and serialise a TensorRT engine of the file's own precision.

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
    network = _network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
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
