"""TensorRT: engines built from the ONNX files (``tensorrt`` Python API, strongly typed:
an engine has the precision of its ONNX file) and their runner.

Needs an NVIDIA GPU and the ``tensorrt`` extra; where either is missing,
:func:`unavailable_reason` says why and nothing is built. Buffers are torch CUDA tensors
(torch is present wherever TensorRT is installed through the extra); the engine runs on the
current CUDA stream.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from okdhp_edge.backends.base import BackendUnavailable, BuildContext, Runner, missing_package
from okdhp_edge.targets import ExportFormat

log = logging.getLogger(__name__)


def gpu_reason() -> Optional[str]:
    """None when torch sees a CUDA device, else why not."""
    try:
        import torch
    except ImportError:
        return "torch is not installed (needed to query CUDA)"
    if not torch.cuda.is_available():
        return "no NVIDIA GPU visible to CUDA on this machine"
    return None


def unavailable_reason() -> Optional[str]:
    """None when the ``tensorrt`` package and a GPU are present, else the reason."""
    return missing_package("tensorrt", "tensorrt") or gpu_reason()


class TensorRTRunner(Runner):
    """Deserialises an engine and runs it with ``execute_async_v3``."""

    backend = "tensorrt"
    RUNTIME = ("tensorrt", "torch")

    def load(self, path: str) -> None:
        reason = unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        import tensorrt as trt
        import torch

        self._torch = torch
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        with open(path, "rb") as fh:
            self.engine = runtime.deserialize_cuda_engine(fh.read())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialise {path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.in_name = next(n for n in names
                            if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.out_name = next(n for n in names
                             if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self._version = trt.__version__
        self._bufs: dict = {}

    def run(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        key = x.shape
        if key not in self._bufs:
            self.context.set_input_shape(self.in_name, tuple(x.shape))
            out_shape = tuple(self.context.get_tensor_shape(self.out_name))
            inp = torch.empty(x.shape, dtype=torch.float32, device="cuda")
            out = torch.empty(out_shape, dtype=torch.float32, device="cuda")
            self._bufs[key] = (inp, out)
        inp, out = self._bufs[key]
        inp.copy_(torch.from_numpy(x))
        self.context.set_tensor_address(self.in_name, inp.data_ptr())
        self.context.set_tensor_address(self.out_name, out.data_ptr())
        stream = torch.cuda.current_stream()
        self.context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return out.cpu().numpy()

    def close(self) -> None:
        self.context = None
        self.engine = None
        self._bufs = {}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(device="cuda", version=getattr(self, "_version", None))
        return d


RUNNER = TensorRTRunner


# ------------------------------------------------------------------------------ builders


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
        BackendUnavailable: TensorRT or the GPU is missing.
        RuntimeError: the parser / builder failed.
    """
    reason = unavailable_reason()
    if reason:
        raise BackendUnavailable(f"TensorRT unavailable: {reason}")
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


def _build(ctx: BuildContext, fmt: ExportFormat) -> dict[str, Any]:
    build_engine(ctx.path(fmt.source), ctx.path(fmt.name))
    return {}


BUILDERS = {"tensorrt_fp32": _build, "tensorrt_fp16": _build, "tensorrt_int8": _build}
