"""torchao's PT2E preparation and conversion without re-tracing the same patterns on every call.

``convert_pt2e`` folds each batch norm into its convolution by matching patterns, and it makes
every pattern afresh with ``torch.export``: 12 combinations (per-channel, bias, quantized bias,
training) x 2 graphs x 4 convolution kinds (conv1d, conv2d and their transposes), 96 exports
of a one-element graph, about 10 s whatever the network's size (more on a large network), on
each call; ``prepare_qat_pt2e``, XNNPACK's conv + batch-norm annotation and the train/eval
switch re-trace theirs the same way. A pattern depends only on the code that defines it, the
values that code closes over (booleans, the convolution function) and the shapes of its
example inputs, so :func:`install` memoises the traced graphs on that key for the process,
and a convolution kind a network does not contain gets a pattern that cannot match instead
of 24 traced ones (it would match nothing either way). Each caller gets its own copy of the
traced graph (XNNPACK's annotation edits its pattern), so what is prepared and converted is
what torchao makes: ``tests/convert/test_pt2e.py`` compares both ways, graph and outputs.

Where torchao's internals are not as this module expects (another version), nothing is
patched and the conversions run as torchao ships them.
"""

from __future__ import annotations

import copy
import logging
import sys
import threading
import types
import warnings
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_CACHE: dict[tuple, Any] = {}
_PATCHED: dict[str, Any] = {}  # "trace": torchao's tracer (None: not patched), "cached"
_TRACER = "_get_aten_graph_module_for_pattern"
_ABSENT = threading.local()  # .op: the convolution kind being folded that the network lacks
# the modules that bound torchao's pattern tracer by name (their own global is patched)
_TRACER_USERS = ("torchao.quantization.pt2e.utils", "torchao.quantization.pt2e.qat_utils",
                 "executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils",
                 "litert_torch.quantize.pt2e_quantizer_utils")


def _spec(value: Any) -> Any:
    """A hashable stand-in for one example input, keyword or closure value: a tensor by its
    shape, dtype and device (its values are never part of a traced pattern), a plain value
    or a function as itself. Anything else (an object that could change between two calls)
    raises TypeError: that pattern is traced every time, as torchao does."""
    import torch

    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), str(value.dtype), value.device.type)
    if value is None or isinstance(value, (bool, int, float, str, types.FunctionType,
                                           types.BuiltinFunctionType)):
        return value
    raise TypeError(f"not memoised by value: {type(value).__name__}")


def pattern_key(pattern: Any, example_inputs: tuple, is_cuda: bool, kwargs: dict
                ) -> Optional[tuple]:
    """What a traced pattern depends on, or None where that cannot be told (then it is traced
    as torchao does): the defining code, the values it closes over, the inputs' shapes."""
    fn = getattr(pattern, "fn", pattern)  # torchao's WrapperModule holds the function
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    try:
        cells = tuple(_spec(c.cell_contents) for c in (fn.__closure__ or ()))
        defaults = tuple(_spec(d) for d in (fn.__defaults__ or ()))
        inputs = tuple(_spec(x) for x in example_inputs)
        keywords = tuple(sorted((k, _spec(v)) for k, v in kwargs.items()))
    except (TypeError, ValueError):  # a value not memoised by value, or an empty cell
        return None
    return code, cells, defaults, inputs, keywords, bool(is_cuda)


def _copy(graph: Any) -> Any:
    with warnings.catch_warnings():  # torch's pytree deprecation notes, one per output spec
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(graph)


def _cached(trace: Callable[..., Any]) -> Callable[..., Any]:
    def traced(pattern: Any, example_inputs: tuple, is_cuda: bool = False, **kwargs: Any
               ) -> Any:
        absent = getattr(_ABSENT, "op", None)
        if absent is not None:
            return _unmatchable(absent)
        key = pattern_key(pattern, example_inputs, is_cuda, kwargs)
        if key is None:
            return trace(pattern, example_inputs, is_cuda, **kwargs)
        with _LOCK:
            kept = _CACHE.get(key)
        if kept is None:
            made = trace(pattern, example_inputs, is_cuda, **kwargs)
            with _LOCK:
                _CACHE.setdefault(key, _copy(made))
            return made
        return _copy(kept)  # a caller may edit its pattern (XNNPACK's annotation does)

    traced.__wrapped__ = trace  # type: ignore[attr-defined]
    return traced


def _conv_ops() -> dict[Callable, Any]:
    import torch
    import torch.nn.functional as F

    aten = torch.ops.aten
    return {F.conv1d: aten.conv1d, F.conv2d: aten.conv2d,
            F.conv_transpose1d: aten.conv_transpose1d, F.conv_transpose2d: aten.conv_transpose2d}


def _unmatchable(op: Any) -> Any:
    """A pattern graph of one ``op`` call: it matches nothing in a network without ``op``."""
    import torch

    graph = torch.fx.Graph()
    x, w = graph.placeholder("x"), graph.placeholder("w")
    overload = getattr(op, op.overloads()[0])  # conv_transpose2d has no .default
    graph.output(graph.call_function(overload, (x, w)))
    return torch.fx.GraphModule(torch.nn.Module(), graph)


def _skipping_absent(fold: Callable[..., Any]) -> Callable[..., Any]:
    """torchao's conv + batch-norm folding for one convolution kind, its patterns replaced by
    an unmatchable one where the network holds no convolution of that kind (the rest of the
    step, the dequantize bookkeeping, runs as it did)."""
    ops = _conv_ops()

    def folded(m: Any, conv_fn: Callable, example_inputs: tuple, is_cuda: bool) -> Any:
        op = ops.get(conv_fn)
        if op is None or any(getattr(n.target, "overloadpacket", None) is op
                             for n in m.graph.nodes):
            return fold(m, conv_fn, example_inputs, is_cuda)
        _ABSENT.op = op
        try:
            return fold(m, conv_fn, example_inputs, is_cuda)
        finally:
            _ABSENT.op = None

    folded.__wrapped__ = fold  # type: ignore[attr-defined]
    return folded


def install() -> bool:
    """Memoise torchao's pattern tracing in this process (thread-safe; cheap to call again,
    and called again before each preparation or conversion: a module that binds the tracer
    by name, e.g. a quantizer imported since, is patched when it is loaded by then). False
    (nothing patched) where torchao is absent or not laid out as expected."""
    with _LOCK:
        if not _PATCHED:
            _PATCHED.update(_patch_torchao())
        trace, cached = _PATCHED.get("trace"), _PATCHED.get("cached")
        if trace is None:
            return False
        for name in _TRACER_USERS:
            module = sys.modules.get(name)
            if module is not None and getattr(module, _TRACER, None) is trace:
                setattr(module, _TRACER, cached)
        return True


def _patch_torchao() -> dict[str, Any]:
    import importlib

    try:
        utils = importlib.import_module("torchao.quantization.pt2e.utils")
        qat_utils = importlib.import_module("torchao.quantization.pt2e.qat_utils")
        trace, fold = getattr(utils, _TRACER), qat_utils._fold_conv_bn_qat_helper
    except (ImportError, AttributeError) as exc:
        log.debug("PT2E patterns traced as torchao ships them: %s", exc)
        return {"trace": None}
    qat_utils._fold_conv_bn_qat_helper = _skipping_absent(fold)
    return {"trace": trace, "cached": _cached(trace)}
