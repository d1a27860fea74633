"""PyTorch eager: the baseline every other backend is compared with.

``load`` takes a ``student.yaml`` (weights verified by sha256). torch is imported when a
runner loads, so importing this module stays torch-free.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from okdhp_edge.backends.base import BackendUnavailable, Runner, missing_package


def unavailable_reason() -> Optional[str]:
    return missing_package("torch", "torch")


class TorchRunner(Runner):
    """Eager PyTorch; ``precision`` fp32, bf16 (autocast, CPUs with native bf16 / GPUs) or
    fp16 (CUDA)."""

    backend = "torch"
    RUNTIME = ("torch", "okdhp_edge.students")

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


RUNNER = TorchRunner

# no formats: the torch backend runs the student itself
BUILDERS: dict = {}
