"""Test-only runners and services that crash or hang inside a bench worker (imported by the
worker processes by name; never used outside the tests)."""

from __future__ import annotations

import ctypes
import os
import sys
import time
from typing import Any

import numpy as np

from okdhp_edge.backends.onnxruntime import OnnxRuntimeRunner
from okdhp_edge.bench.worker import ExportService


def timed() -> bool:
    """Whether this call is one of a timing block's (not the load's or the warm-up's)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "measure_block":
            return True
        frame = frame.f_back
    return False


def no_core_file() -> None:
    """A crash on purpose leaves no core file where core dumps are on."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def segfault() -> None:
    """A real SIGSEGV: read address 0."""
    no_core_file()
    ctypes.string_at(0)


def runner_for(monkeypatch: Any, backend: str, cls: str) -> None:
    """Rows of ``backend`` run the runner ``cls`` of this module in their workers."""
    from okdhp_edge.bench import run as run_module

    real = run_module.runner_path
    monkeypatch.setattr(run_module, "runner_path",
                        lambda b: f"{__name__}:{cls}" if b == backend else real(b))


class RuntimeGone(OnnxRuntimeRunner):
    """An ONNX Runtime runner on a machine without ONNX Runtime (its worker cannot import
    it): the row is unavailable."""

    def import_runtime(self) -> None:
        from okdhp_edge.backends.base import BackendUnavailable

        raise BackendUnavailable("onnxruntime is not installed here")


class SegfaultOnLoad(OnnxRuntimeRunner):
    """An ONNX Runtime runner whose load dereferences a null pointer."""

    def load(self, path: str) -> None:
        segfault()


class AbortWhileTimed(OnnxRuntimeRunner):
    """An ONNX Runtime runner that calls abort() once it is being timed."""

    def run(self, x: np.ndarray) -> np.ndarray:
        if timed():
            no_core_file()
            os.abort()
        return super().run(x)


class HangWhileTimed(OnnxRuntimeRunner):
    """An ONNX Runtime runner that stops answering once it is being timed."""

    def run(self, x: np.ndarray) -> np.ndarray:
        if timed():
            time.sleep(3600)
        return super().run(x)


class SegfaultingExport(ExportService):
    """An export worker whose converter dies."""

    def export(self, student_yaml: str, formats: tuple[str, ...], recipe: Any,
               decoder: str = "transposed") -> dict:
        segfault()
        return {}


def segfaulting_chart(rep: Any, path: str) -> None:
    """A chart drawer that dies halfway through writing its file."""
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG")
        fh.flush()
        segfault()
