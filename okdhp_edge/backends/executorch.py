"""ExecuTorch: ``.pte`` programs lowered to XNNPACK, the runtime of PyTorch on phones,
microcontrollers and embedded Linux.

- ``executorch_fp32``: ``torch.export`` of the student, lowered by ExecuTorch's
  ``XnnpackPartitioner`` (``to_edge_transform_and_lower``) and serialised.
- ``executorch_int8``: PT2E post-training quantization (``XNNPACKQuantizer`` with int8
  per-channel symmetric weights and int8 per-tensor activations; torchao's
  ``prepare_pt2e`` / ``convert_pt2e``), calibrated on the same training-split crops as
  every INT8 format, then lowered the same way. Range estimation: XNNPACK's own default
  (a histogram observer) or ``--calib-method minmax``.

The Python runtime (``executorch.runtime``) loads torch, so ExecuTorch rows are benched
from a zoo, and a bundle says it needs the ``executorch`` extra. On a device the same
``.pte`` runs under ExecuTorch's C++ runner (``executor_runner``, or an app linking the
XNNPACK backend). A ``.pte`` carries its student's ``okdhp_*`` metadata as constant
methods of its program (each returns its string), read back like an ONNX file's: the
export cache and a bundle compare them with the manifest beside the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from okdhp_edge.backends.base import (
    BackendUnavailable,
    BuildContext,
    Runner,
    conversion_failed,
    missing_package,
)
from okdhp_edge.targets import ExportFormat

log = logging.getLogger(__name__)


# 1: hourglass upsamplings lowered as concatenations, inside the XNNPACK delegate
# 2: the student's metadata rides in the program as constant methods (older files carry none)
BUILD_REVISION = 2


def unavailable_reason() -> Optional[str]:
    return missing_package("executorch", "executorch")


# loaded methods hold the process-wide XNNPACK thread pool: resizing it under them leaves
# them a freed pool (their next call hangs), so it is resized only while none is loaded
_LIVE: set[int] = set()
_TORCH_THREADS: list[int] = []  # torch's intra-op threads before the first runner loaded


class ExecuTorchRunner(Runner):
    """A ``.pte`` program's ``forward`` method, executed by the ExecuTorch Python runtime
    on XNNPACK. Its thread pool is process-wide: the first runner loaded sizes it to its
    ``threads``; a runner loaded beside others runs with the size they have (``describe``
    says which)."""

    backend = "executorch"
    RUNTIME = ("torch", "executorch.runtime")

    def load(self, path: str) -> None:
        reason = unavailable_reason()
        if reason:
            raise BackendUnavailable(reason)
        self.check_cpu_target()
        import torch
        from executorch.runtime import Runtime, Verification

        self._torch = torch
        # XNNPACK computes; the Python runtime's torch only holds tensors. Its own OpenMP
        # threads, left waiting, took a core from XNNPACK's pool: mbv2-d128 at 256x192 ran
        # 10.8 ms on two threads, 7.0 ms with torch at one (LiteRT's figure on the same
        # kernels; AMD EPYC 2 cores). Given back when the last runner closes.
        if not _LIVE and not _TORCH_THREADS:
            _TORCH_THREADS.append(torch.get_num_threads())
        torch.set_num_threads(1)
        self.pool_threads = self._size_pool()
        # the method lives in its program: the runner keeps both (a program collected under
        # its method leaves the method without its inputs)
        self._program = Runtime.get().load_program(Path(path),
                                                   verification=Verification.Minimal)
        self.method = self._program.load_method("forward")
        if self.method is None:
            raise RuntimeError(f"{path}: the program has no 'forward' method")
        _LIVE.add(id(self))
        meta = self.method.metadata.input_tensor_meta(0)
        self._shape = tuple(int(d) for d in meta.sizes())
        self._version = _version()

    def _size_pool(self) -> int:
        """Size the XNNPACK pool to ``threads`` if no loaded method uses it; its size."""
        from executorch.extension.pybindings import portable_lib as lib

        want, have = max(1, self.threads), lib._threadpool_get_thread_count()  # noqa: SLF001
        if have != want and not _LIVE:
            lib._unsafe_reset_threadpool(want)  # noqa: SLF001
        elif have != want:
            log.warning("ExecuTorch runs with %d threads, not %d: %d loaded program(s) "
                        "share the pool", have, want, len(_LIVE))
        return int(lib._threadpool_get_thread_count())  # noqa: SLF001

    def run(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] != 1:
            from okdhp_edge.backends.base import run_one_by_one

            return run_one_by_one(self, x)
        out = self.method.execute([self._torch.from_numpy(x)])[0]
        return out.numpy().copy()

    def model_metadata(self) -> dict[str, str]:
        return _program_metadata(self._program)

    def input_hw(self) -> Optional[tuple[int, int]]:
        shape = getattr(self, "_shape", ())
        return (shape[2], shape[3]) if len(shape) == 4 and shape[1] == 3 else None

    def close(self) -> None:
        self.method = self._program = None
        _LIVE.discard(id(self))
        if not _LIVE and _TORCH_THREADS:
            self._torch.set_num_threads(_TORCH_THREADS.pop())

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(version=getattr(self, "_version", None), delegate="XNNPACK",
                 threads=getattr(self, "pool_threads", self.threads))
        return d


RUNNER = ExecuTorchRunner


def _version() -> Optional[str]:
    import importlib.metadata

    try:
        return importlib.metadata.version("executorch")
    except importlib.metadata.PackageNotFoundError:
        return None


def _program_metadata(program: Any) -> dict[str, str]:
    """The ``okdhp_*`` constant methods of a loaded program, each one's string."""
    out = {}
    for name in sorted(program.method_names):
        if name.startswith("okdhp_"):
            value = program.load_method(name).execute([])
            out[name] = str(value[0] if isinstance(value, (list, tuple)) else value)
    return out


def file_metadata(path: Path) -> dict[str, str]:
    """The ``okdhp_*`` metadata a ``.pte`` carries (its constant methods)."""
    from executorch.runtime import Runtime, Verification

    return _program_metadata(Runtime.get().load_program(Path(path),
                                                        verification=Verification.Minimal))


# ------------------------------------------------------------------------------ builders


def _lower(exported: Any, dst: Path, metadata: Optional[dict[str, str]] = None
           ) -> dict[str, Any]:
    """XNNPACK-lower an exported program and write it as a ``.pte`` (atomically), with
    ``metadata`` as constant methods (``okdhp_student`` -> "hg2"); its partition count and
    the operators left outside XNNPACK (run by ExecuTorch's portable kernels, each one
    splitting the graph)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from okdhp_edge.utils.io import atomic_write_bytes

    program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()],
                                          constant_methods=dict(metadata or {}) or None)
    calls = [str(n.target) for n in program.exported_program().graph_module.graph.nodes
             if n.op == "call_function" and "getitem" not in str(n.target)]
    atomic_write_bytes(dst, bytes(program.to_executorch().buffer))
    outside = sorted({c.split(":")[0].split()[-1].rstrip(">") for c in calls
                      if "call_delegate" not in c})
    return {"xnnpack_partitions": sum("call_delegate" in c for c in calls),
            "outside_xnnpack": outside}


def _module_and_input(ctx: BuildContext) -> tuple[Any, Any]:
    reason = missing_package("executorch", "executorch", export=True)
    if reason:
        raise BackendUnavailable(reason)
    from okdhp_edge.models.student import export_module

    return export_module(_delegable(ctx.model), ctx.size)


def _delegable(model: Any) -> Any:
    """A float eval copy of ``model`` whose 2x nearest upsamplings are concatenations and
    reshapes (the same values): XNNPACK's partitioner does not take ``upsample_nearest2d``,
    which left every hourglass level's upsampling outside the delegate (9 partitions for an
    HG-2 instead of 1)."""
    import copy

    from okdhp_edge.models.blocks import NearestUp

    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, NearestUp):
            m.by_copy = True
    return model


def _build_fp32(ctx: BuildContext, fmt: ExportFormat) -> dict[str, Any]:
    import torch

    module, x = _module_and_input(ctx)
    try:
        lowered = _lower(torch.export.export(module, (x,)), ctx.path(fmt.name),
                         ctx.metadata(fmt))
    except Exception as exc:  # noqa: BLE001 - any lowering error is this row's reason
        raise conversion_failed(exc, "ExecuTorch XNNPACK lowering") from None
    return {"executorch": _build(fmt, lowered)}


def _build(fmt: ExportFormat, lowered: dict[str, Any]) -> dict[str, Any]:
    """The format record's ``executorch`` section: layout, delegate, version, partitions."""
    return {"layout": fmt.layout, "delegate": "XNNPACK", "version": _version(), **lowered}


def _quantizer(method: str) -> Any:
    """XNNPACK's PT2E quantizer: per-channel int8 weights, int8 activations whose ranges
    come from XNNPACK's default observer, or a min-max one."""
    import dataclasses

    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e import MinMaxObserver

    config = get_symmetric_quantization_config(is_per_channel=True)
    if method == "minmax":
        act = dataclasses.replace(config.input_activation,
                                  observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
        config = dataclasses.replace(config, input_activation=act, output_activation=act)
    return XNNPACKQuantizer().set_global(config)


def _build_int8(ctx: BuildContext, fmt: ExportFormat) -> dict[str, Any]:
    if ctx.recipe.method not in ("default", "minmax"):
        raise BackendUnavailable(f"ExecuTorch INT8 here estimates ranges with XNNPACK's "
                                 f"default observer or min-max, not '{ctx.recipe.method}'")
    if ctx.recipe.keep_head:
        raise BackendUnavailable("ExecuTorch INT8 here quantizes every layer "
                                 "(no --int8-keep-head)")
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from okdhp_edge.convert import pt2e

    module, x = _module_and_input(ctx)
    images, calib = ctx.calibration()
    try:
        quantizer = _quantizer(ctx.recipe.method)
        pt2e.install()
        prepared = prepare_pt2e(torch.export.export(module, (x,)).module(), quantizer)
        with torch.no_grad():
            for i in range(len(images)):
                prepared(torch.from_numpy(images[i:i + 1]))
        converted = convert_pt2e(prepared)
        lowered = _lower(torch.export.export(converted, (x,)), ctx.path(fmt.name),
                         ctx.metadata(fmt))
    except Exception as exc:  # noqa: BLE001
        raise conversion_failed(exc, "ExecuTorch PT2E INT8") from None
    method = "xnnpack-default (histogram)" if ctx.recipe.method == "default" else "minmax"
    return {"executorch": _build(fmt, lowered),
            "quantization": {"calibration": calib, "recipe": ctx.recipe.as_dict(),
                             "calibration_method": method,
                             "activations": "s8 asymmetric per tensor",
                             "higher_precision_layers": float_convolutions(converted)}}


def float_convolutions(graph_module: Any) -> list[str]:
    """Convolutions of a converted PT2E graph whose input is not dequantized int8."""
    out = []
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and "conv" in str(node.target):
            src = node.args[0]
            if not (hasattr(src, "target") and "dequantize" in str(src.target)):
                out.append(node.name)
    return out


BUILDERS = {"executorch_fp32": _build_fp32, "executorch_int8": _build_int8}


def _qat_int8(ctx: BuildContext, fmt: ExportFormat) -> dict[str, Any]:
    """A quantization-aware student's ``.pte``: its int8 program (made with XNNPACK's own
    quantizer) lowered to XNNPACK as it is."""
    from okdhp_edge.convert.qat_program import qat_fields

    reason = missing_package("executorch", "executorch", export=True)
    if reason:
        raise BackendUnavailable(reason)
    program = ctx.qat_program()
    floats = float_convolutions(program.graph_module)
    try:
        lowered = _lower(program, ctx.path(fmt.name), ctx.metadata(fmt))
    except Exception as exc:  # noqa: BLE001 - any lowering error is this row's reason
        raise conversion_failed(exc, "ExecuTorch XNNPACK lowering of the QAT program") from None
    return {"executorch": _build(fmt, lowered),
            "quantization": {**qat_fields(ctx.man.qat), "higher_precision_layers": floats}}


QAT_BUILDERS = {"executorch_int8": _qat_int8}
