"""TensorRT runner for serialised engines (needs ``tensorrt`` and an NVIDIA GPU).

Buffers are torch CUDA tensors (torch is present wherever TensorRT is installed through
the ``tensorrt`` extra); the engine runs on the current CUDA stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from okdhp_edge.runtime.base import BackendUnavailable, Runner


class TensorRTRunner(Runner):
    """Deserialises an engine and runs it with ``execute_async_v3``."""

    backend = "tensorrt"

    def load(self, path: str) -> None:
        from okdhp_edge.export.tensorrt_export import tensorrt_unavailable_reason

        reason = tensorrt_unavailable_reason()
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
