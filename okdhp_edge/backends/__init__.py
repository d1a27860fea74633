"""Backends as plug-ins: each is one module, named in :mod:`okdhp_edge.targets`, that owns
its availability, its runner and the builders of its formats (see
:mod:`okdhp_edge.backends.base`). This module only looks them up. No torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable, Optional

from okdhp_edge.backends.base import BackendUnavailable, Runner
from okdhp_edge.targets import FORMATS, backend_info


def backend_module(name: str) -> ModuleType:
    """The module of backend ``name`` (UnknownTarget for a name the table lacks)."""
    return importlib.import_module(backend_info(name).module)


def make_runner(backend: str, precision: str = "fp32", threads: int = 1,
                device: str = "cpu", scheduling: Optional[dict[str, bool]] = None) -> Runner:
    """A (not yet loaded) runner of ``backend``; ``scheduling`` overrides the backend's
    thread-waiting defaults (:attr:`Runner.SCHEDULING`)."""
    return backend_module(backend).RUNNER(precision, threads, device, scheduling)


def unavailable_reason(backend: str) -> Optional[str]:
    """Why ``backend`` cannot run files here (None: it can)."""
    return backend_module(backend).unavailable_reason()


def format_builder(fmt: str) -> Callable[[Any, Any], dict[str, Any]]:
    """The function that writes the files of export format ``fmt``."""
    spec = FORMATS[fmt]
    builders = backend_module(spec.builder).BUILDERS
    if fmt not in builders:
        raise ValueError(f"backend {spec.builder} has no builder for export format '{fmt}'")
    return builders[fmt]


def qat_builder(fmt: str) -> Callable[[Any, Any], dict[str, Any]]:
    """The function that writes INT8 format ``fmt`` of a quantization-aware student from its
    int8 program (a module's ``QAT_BUILDERS``); BackendUnavailable with the module's
    ``QAT_UNAVAILABLE`` reason, or a plain one, where the backend has none."""
    spec = FORMATS[fmt]
    module = backend_module(spec.builder)
    builders = getattr(module, "QAT_BUILDERS", {})
    if fmt not in builders:
        raise BackendUnavailable(getattr(module, "QAT_UNAVAILABLE", (
            f"{spec.builder} has no INT8 file made from a quantization-aware student's "
            "program")))
    return builders[fmt]


__all__ = ["BackendUnavailable", "Runner", "backend_module", "format_builder", "make_runner",
           "qat_builder",
           "unavailable_reason"]
