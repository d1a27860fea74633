"""What every backend module implements (no torch here): a :class:`Runner` for its files
and builders of its formats, which receive a :class:`BuildContext` from the exporter.

A backend module (``okdhp_edge.backends.<name>``, named in :mod:`okdhp_edge.targets`)
defines, at module level and without importing torch or a converter:

- ``RUNNER``: its :class:`Runner` subclass;
- ``unavailable_reason() -> Optional[str]``: why its runtime cannot run here (None: it can),
  naming the pip extra that installs it;
- ``BUILDERS``: ``{format name: fn(ctx, fmt) -> dict}`` for the formats it builds (the
  extra fields of the format's ``export.yaml`` entry); converters are imported inside them.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

import numpy as np

from okdhp_edge.errors import BackendUnavailable


def missing_package(module: str, backend: str, export: bool = False) -> Optional[str]:
    """None when ``module`` imports here, else the reason, with the line that installs it
    (the pip extra ``backend``'s runner, or with ``export`` its builders, need)."""
    from okdhp_edge.targets import backend_info

    info = backend_info(backend)
    extra = info.export_extra if export else info.runtime_extra
    try:
        importlib.import_module(module)
    except ImportError as exc:
        how = f"pip install 'okdhp_edge[{extra}]'" if extra else "pip install okdhp_edge"
        return f"{module} is not installed ({exc}); {how}"
    return None


def conversion_failed(exc: Exception, what: str) -> BackendUnavailable:
    """A converter's failure on one student (an operator it lacks) as that format's one-line
    reason: its row is unavailable, and the rest of the export and bench goes on."""
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    logging.getLogger(__name__).warning("%s failed: %s: %s", what, type(exc).__name__, first)
    return BackendUnavailable(f"{what} failed: {type(exc).__name__}: {first}")


class BuildContext(Protocol):
    """What a format builder gets from the exporter (made once per student).

    Attributes:
        model: the student (``torch.nn.Module``, eval, fp32, CPU); its forward returns an
            output with ``.heatmap`` [N, K, H/s, W/s].
        man: the student manifest.
        recipe: the INT8 recipe (:class:`okdhp_edge.backends.recipe.QuantRecipe`).
        size: the input (width, height).
    """

    model: Any
    man: Any  # okdhp_edge.records.StudentManifest
    recipe: Any
    size: tuple[int, int]

    def path(self, fmt: str) -> Path:
        """Where the model file of format ``fmt`` is (or is to be) written."""

    def calibration(self) -> tuple[np.ndarray, dict[str, Any]]:
        """Calibration crops [N, 3, H, W] of the training split and their record."""

    def selection_validation(self) -> tuple[list, Callable, Callable]:
        """(items, to_input, metric_fn) on the selection split (NNCF accuracy control)."""

    def qat_program(self, decoder: Optional[str] = None) -> Any:
        """A quantization-aware student's int8 program (``torch.export.ExportedProgram``,
        sha256-checked) with its decoder in the export's form (or ``decoder``'s): what a
        backend's ``QAT_BUILDERS`` make its INT8 file from."""

    def metadata(self, fmt: Any = None) -> dict[str, str]:
        """The ``okdhp_*`` metadata a model file carries of its student; for a calibrated
        format ``fmt`` also the recipe that makes it (``okdhp_quant_recipe``), which the
        export's cache compares against."""


class Runner(ABC):
    """Load a model file, run it on a preallocated input, close, describe.

    ``run`` takes float32 [N, 3, H, W] and returns float32 heatmaps [N, K, h, w].
    """

    backend: str = ""
    # how the runtime's threads wait between parallel regions (spin or sleep, pinned or
    # not): this backend's settings and their defaults, chosen by measurement (docs/
    # benchmarking.md, "Busy machines"); {} where the runtime offers none
    SCHEDULING: dict[str, bool] = {}
    # the modules ``load`` imports to run a file: a bench worker imports them before it
    # loads a model, so that its memory with no model loaded is the runtime's own
    RUNTIME: tuple[str, ...] = ()

    def __init__(self, precision: str = "fp32", threads: int = 1, device: str = "cpu",
                 scheduling: Optional[dict[str, bool]] = None) -> None:
        self.precision, self.threads, self.device = precision, int(threads), device
        unknown = sorted(set(scheduling or {}) - set(self.SCHEDULING))
        if unknown:
            raise ValueError(f"{self.backend} has no scheduling setting '{unknown[0]}' "
                             f"(has: {', '.join(self.SCHEDULING) or 'none'})")
        self.scheduling = {**self.SCHEDULING, **(scheduling or {})}

    def import_runtime(self) -> None:
        """Import :attr:`RUNTIME` (one that is missing is left for ``load`` to report)."""
        for module in self.RUNTIME:
            try:
                importlib.import_module(module)
            except ImportError:
                return

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

    def input_layout(self) -> Optional[str]:
        """``NCHW`` or ``NHWC``, as the loaded file's input shape says (None: unknown). The
        runner is fed in this layout; a bundle's ``input_layout`` is checked against it."""
        return "NCHW" if self.input_hw() is not None else None

    def runtime_latency_ms(self) -> Optional[float]:
        """The runtime's own measure of the last ``run`` (ms), where it keeps one: the scope
        C++ tools such as ``benchmark_app`` report, without the Python call around it."""
        return None

    def close(self) -> None:
        """Release the session / compiled model."""

    def check_cpu_target(self) -> None:
        """BackendUnavailable unless this runner runs on the CPU and the targets table gives
        its backend this precision (for runners of CPU-only files)."""
        from okdhp_edge.targets import TARGETS

        if self.device != "cpu":
            raise BackendUnavailable(f"the {self.backend} runner here runs on the CPU, not "
                                     f"'{self.device}'")
        if (self.backend, self.precision) not in TARGETS:
            have = ", ".join(p for b, p in TARGETS if b == self.backend)
            raise BackendUnavailable(f"{self.backend} files are {have}, not "
                                     f"'{self.precision}'")

    def describe(self) -> dict[str, Any]:
        """What actually runs: backend, device, precision as read back, threads, versions."""
        d = {"backend": self.backend, "device": self.device, "precision": self.precision,
             "threads": self.threads}
        return {**d, "scheduling": dict(self.scheduling)} if self.scheduling else d

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_one_by_one(runner: Runner, x: np.ndarray) -> np.ndarray:
    """Run a batch [N, 3, H, W] through a (static batch-1) runner one image at a time.

    Shape: returns [N, K, h, w].
    """
    return np.concatenate([runner.run(np.ascontiguousarray(x[i:i + 1])) for i in range(len(x))])
