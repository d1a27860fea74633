"""The runner interface every backend implements (no torch here)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional

import numpy as np


class BackendUnavailable(RuntimeError):
    """The backend (package, device or precision) is not present here; the message says why."""


class Runner(ABC):
    """Load a model file, run it on a preallocated input, close, describe.

    ``run`` takes float32 [N, 3, H, W] and returns float32 heatmaps [N, K, h, w].
    """

    backend: str = ""

    def __init__(self, precision: str = "fp32", threads: int = 1, device: str = "cpu") -> None:
        self.precision, self.threads, self.device = precision, int(threads), device

    @abstractmethod
    def load(self, path: str) -> None:
        """Load (and compile) the model file."""

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Heatmaps of a batch."""

    def input_hw(self) -> Optional[tuple[int, int]]:
        """The loaded model's fixed input (height, width), or None where it is dynamic or
        unknown: a bundle's preprocessing is checked against it."""
        return None

    def model_metadata(self) -> dict[str, str]:
        """The ``okdhp_*`` metadata the loaded file carries ({} where the format has none)."""
        return {}

    def runtime_latency_ms(self) -> Optional[float]:
        """The runtime's own measure of the last ``run`` (ms), where it keeps one: the scope
        C++ tools such as ``benchmark_app`` report, without the Python call around it."""
        return None

    def close(self) -> None:
        """Release the session / compiled model."""

    def describe(self) -> dict[str, Any]:
        """What actually runs: backend, device, precision as read back, threads, versions."""
        return {"backend": self.backend, "device": self.device, "precision": self.precision,
                "threads": self.threads}

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_one_by_one(runner: Runner, x: np.ndarray) -> np.ndarray:
    """Run a batch [N, 3, H, W] through a (static batch-1) runner one image at a time.

    Shape: returns [N, K, h, w].
    """
    return np.concatenate([runner.run(np.ascontiguousarray(x[i:i + 1])) for i in range(len(x))])
