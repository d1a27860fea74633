"""PyTorch eager runner (the baseline) and the torch-tensorrt runner.

``load`` takes a ``student.yaml`` (weights verified by sha256). torch is imported here
only, so the rest of the runtime stays torch-free.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from okdhp_edge.runtime.base import BackendUnavailable, Runner


class TorchRunner(Runner):
    """Eager PyTorch; ``precision`` fp32, bf16 (autocast, CPUs with native bf16 / GPUs) or
    fp16 (CUDA)."""

    backend = "torch"

    def load(self, path: str) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailable(f"torch is not installed ({exc})") from None
        from okdhp_edge.students import load_student

        self.torch = torch
        if self.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("no CUDA device for torch")
        if self.precision == "fp16" and self.device != "cuda":
            raise BackendUnavailable("torch fp16 is timed on CUDA only")
        if self.precision == "bf16" and self.device == "cpu":
            from okdhp_edge.utils.cpu import cpu_has_native_bf16

            if not cpu_has_native_bf16():
                raise BackendUnavailable("this CPU has no native bf16 (AMX / AVX512-BF16)")
        if self.threads and self.device == "cpu":
            torch.set_num_threads(self.threads)
        model, _ = load_student(path, self.device)
        self.model = model.to(memory_format=torch.channels_last)
        self._version = torch.__version__

    def run(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.inference_mode(), torch.autocast(self.device, dtype=dtype or torch.float32,
                                                    enabled=dtype is not None):
            t = torch.from_numpy(x).to(self.device).contiguous(memory_format=torch.channels_last)
            out = self.model(t).heatmap.float()
        return out.cpu().numpy()

    def close(self) -> None:
        self.model = None

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(version=getattr(self, "_version", None), memory_format="channels_last")
        return d


class TorchTensorRTRunner(TorchRunner):
    """A student compiled with torch-tensorrt (fp32 / fp16) on an NVIDIA GPU."""

    backend = "torch_tensorrt"

    def load(self, path: str) -> None:
        from okdhp_edge.export.tensorrt_export import (
            compile_torch_tensorrt,
            torch_tensorrt_unavailable_reason,
        )

        reason = torch_tensorrt_unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        import torch

        from okdhp_edge.students import load_student

        self.torch = torch
        model, man = load_student(path, "cuda")
        size = tuple(man["preprocessing"]["input_size"])
        self.model = compile_torch_tensorrt(model, size, self.precision == "fp16")
        self._version = torch.__version__

    def run(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            return self.model(torch.from_numpy(x).cuda()).float().cpu().numpy()
