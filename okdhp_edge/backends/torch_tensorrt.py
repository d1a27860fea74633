"""torch-tensorrt: the student compiled by torch-tensorrt (fp32 / fp16) on an NVIDIA GPU.
Needs the ``tensorrt`` extra and a GPU; no file is exported (the student is compiled when
it loads)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from okdhp_edge.backends.base import BackendUnavailable, missing_package
from okdhp_edge.backends.tensorrt import gpu_reason
from okdhp_edge.backends.torch import TorchRunner


def unavailable_reason() -> Optional[str]:
    """None when ``torch_tensorrt`` and a GPU are present, else the reason."""
    return missing_package("torch_tensorrt", "torch_tensorrt") or gpu_reason()


def compile_torch_tensorrt(model: Any, input_size: tuple[int, int], fp16: bool = False) -> Any:
    """Compile a student (returning heatmaps) with torch-tensorrt."""
    reason = unavailable_reason()
    if reason:
        raise BackendUnavailable(f"torch-tensorrt unavailable: {reason}")
    import torch
    import torch_tensorrt

    from okdhp_edge.models.student import HeatmapOnly

    wrapped = HeatmapOnly(model).cuda().eval()
    dtype = torch.half if fp16 else torch.float
    inputs = [torch_tensorrt.Input((1, 3, input_size[1], input_size[0]), dtype=torch.float)]
    return torch_tensorrt.compile(wrapped, inputs=inputs, enabled_precisions={dtype})


class TorchTensorRTRunner(TorchRunner):
    """A student compiled with torch-tensorrt (fp32 / fp16) on an NVIDIA GPU."""

    backend = "torch_tensorrt"
    RUNTIME = ("torch", "torch_tensorrt", "okdhp_edge.students")

    def load(self, path: str) -> None:
        reason = unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        import torch

        from okdhp_edge.students import load_student

        self.torch = torch
        model, man = load_student(path, "cuda")
        size = tuple(man.preprocessing.input_size)
        self.model = compile_torch_tensorrt(model, size, self.precision == "fp16")
        self._version = torch.__version__

    def run(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            return self.model(torch.from_numpy(x).cuda()).float().cpu().numpy()


RUNNER = TorchTensorRTRunner
BUILDERS: dict = {}
