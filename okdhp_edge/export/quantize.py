"""INT8 post-training quantization of a student's ONNX file, calibrated on its training
split: ONNX Runtime static quantization (QDQ, per-channel symmetric int8 weights; uint8
activations for ONNX Runtime on x86, a signed symmetric S8S8 file for TensorRT's explicit
quantization) and NNCF for OpenVINO, plain or with accuracy control on the selection split
(never the report split).

The recipe (method, image count, seed, the sha256 of the calibration list, what stayed in
higher precision) is recorded with each quantized file, so the same command gives the
same model. NNCF is imported only here: the torch-free runtime runs quantized files
without it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np

from okdhp_edge.data.errors import DataError
from okdhp_edge.runtime.base import BackendUnavailable

log = logging.getLogger(__name__)

METHODS = ("default", "minmax", "percentile", "entropy")
# NNCF's fix of int8 saturation on CPUs without VNNI (first_layer: NNCF's own default)
OVERFLOW_FIXES = ("first_layer", "enable", "disable")
# layer types whose precision is reported (the ones that carry the MACs)
WEIGHTED_ONNX = ("Conv", "ConvTranspose", "MatMul", "Gemm")
WEIGHTED_OV = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")


# what a quantized file's record carries (export.yaml, bench rows, bundle.yaml)
RECORD_FIELDS = ("recipe", "calibration", "calibration_method", "activations",
                 "higher_precision_layers")


class QuantizationError(ValueError):
    """A quantization request that cannot be met (bad recipe, too little data)."""


@dataclass(frozen=True)
class QuantRecipe:
    """How a student is quantized.

    Attributes:
        method: activation range estimation: ``default`` (each tool's own: ONNX Runtime
            MinMax, NNCF's defaults), ``minmax``, ``percentile`` or ``entropy``.
        num_images: calibration crops drawn from the training split.
        seed: which crops (numpy Generator seed).
        keep_head: keep the final heatmap convolution (and what follows) in fp32.
        max_drop: OpenVINO only: NNCF accuracy control, the largest loss of the metric
            (AP, or PCKh points) allowed on the selection split; layers go back to
            higher precision until it holds. None: plain post-training quantization.
        ort_activations: ONNX Runtime's activation type: ``u8`` (asymmetric, U8S8: the
            fast form on x86 CPUs, measured 1.8-2x faster than S8S8 on AVX2) or ``s8``
            (symmetric S8S8, for Arm targets). TensorRT always gets its own S8S8 file.
        overflow_fix: OpenVINO only: NNCF's fix of the int8 saturation of x86 CPUs without
            VNNI (AVX2, AVX-512 without VNNI): ``first_layer`` (NNCF's default: the first
            convolution's weights use half the int8 range), ``enable`` (every
            convolution's) or ``disable``. A property of the target, not of the model.
    """

    method: str = "default"
    num_images: int = 300
    seed: int = 0
    keep_head: bool = False
    max_drop: Optional[float] = None
    ort_activations: str = "u8"
    overflow_fix: str = "first_layer"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise QuantizationError(f"calibration method '{self.method}' unknown; expected "
                                    f"one of {', '.join(METHODS)}")
        if self.num_images < 1:
            raise QuantizationError("calibration needs at least one image")
        if self.max_drop is not None and self.max_drop < 0:
            raise QuantizationError("max_drop must be >= 0")
        if self.ort_activations not in ("u8", "s8"):
            raise QuantizationError(f"ort_activations must be u8 or s8, got "
                                    f"{self.ort_activations!r}")
        if self.overflow_fix not in OVERFLOW_FIXES:
            raise QuantizationError(f"overflow_fix must be one of {', '.join(OVERFLOW_FIXES)}, "
                                    f"got {self.overflow_fix!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    # the fields only one backend's quantizer reads (by the backend a file's parity runs on):
    # a change of them leaves the other backends' files as they were
    BACKEND_FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "onnxruntime": ("ort_activations",), "openvino": ("max_drop", "overflow_fix")}

    def fields_for(self, backend: Optional[str] = None) -> tuple[str, ...]:
        """The fields a file for ``backend`` depends on (None: all of them)."""
        other = {f for b, fs in self.BACKEND_FIELDS.items() if backend and b != backend
                 for f in fs}
        return tuple(f.name for f in fields(self) if f.name not in other)

    def same_as(self, record: Any, backend: Optional[str] = None) -> bool:
        """Whether a recorded recipe (export.yaml; written before a field existed, it holds
        that field's default) made the same file for ``backend`` as this recipe would."""
        if not isinstance(record, dict):
            return False
        old, new = {**QuantRecipe().as_dict(), **record}, self.as_dict()
        return all(old.get(f) == new[f] for f in self.fields_for(backend))


def add_recipe_arguments(parser: Any) -> None:
    """The command-line options of a recipe (bench, zoo export)."""
    q = parser.add_argument_group("INT8 (precision int8): calibrated on the training split")
    q.add_argument("--calib-method", choices=METHODS, default="default",
                   help="activation ranges (default: ONNX Runtime MinMax, NNCF's own)")
    q.add_argument("--calib-images", type=int, default=300, help="calibration crops")
    q.add_argument("--calib-seed", type=int, default=0)
    q.add_argument("--int8-keep-head", action="store_true",
                   help="keep the final heatmap convolution in fp32")
    q.add_argument("--int8-max-drop", type=float, default=None, metavar="DROP",
                   help="OpenVINO: NNCF accuracy control, at most DROP of the metric lost on "
                        "the selection split (AP 0.005 = half a point)")
    q.add_argument("--ort-activations", choices=("u8", "s8"), default="u8",
                   help="ONNX Runtime activations: u8 (x86) or s8 (Arm)")
    q.add_argument("--int8-overflow-fix", choices=OVERFLOW_FIXES, default="first_layer",
                   help="OpenVINO: weights in half the int8 range against the saturation of "
                        "CPUs without VNNI (enable: every convolution; see docs/int8.md)")


def recipe_from_args(args: Any) -> QuantRecipe:
    """The recipe of parsed :func:`add_recipe_arguments` options."""
    return QuantRecipe(args.calib_method, args.calib_images, args.calib_seed,
                       args.int8_keep_head, args.int8_max_drop, args.ort_activations,
                       args.int8_overflow_fix)


def recipe_args(recipe: QuantRecipe) -> list[str]:
    """The command-line options that give ``recipe`` (for reproducing commands)."""
    out = ["--calib-method", recipe.method, "--calib-images", str(recipe.num_images),
           "--calib-seed", str(recipe.seed)]
    if recipe.keep_head:
        out.append("--int8-keep-head")
    if recipe.max_drop is not None:
        out += ["--int8-max-drop", str(recipe.max_drop)]
    if recipe.ort_activations != "u8":
        out += ["--ort-activations", recipe.ort_activations]
    if recipe.overflow_fix != "first_layer":
        out += ["--int8-overflow-fix", recipe.overflow_fix]
    return out


def calibration_set(manifest: dict[str, Any], recipe: QuantRecipe
                    ) -> tuple[np.ndarray, dict[str, Any]]:
    """``num_images`` crops [N, 3, H, W] of the training split, made exactly as training
    and the bench make them (no augmentation), and their record: which records (sha256
    of the list), how many, the seed.

    Raises:
        DataError: no training split recorded, unreadable, or fewer persons than asked.
    """
    from okdhp_edge.evaluation.datasets import training_split
    from okdhp_edge.manifest import is_untrained

    if is_untrained(manifest):  # a plan's student: its latency does not depend on the data
        return _noise_calibration(manifest, recipe)
    ds = training_split(manifest, "train")
    if len(ds) < recipe.num_images:
        raise DataError(f"calibration asks for {recipe.num_images} images but the training "
                        f"split of '{manifest['name']}' has {len(ds)} persons")
    rng = np.random.default_rng(recipe.seed)
    idx = np.sort(rng.choice(len(ds), recipe.num_images, replace=False))
    images = np.stack([ds[int(i)]["image"] for i in idx]).astype(np.float32)
    ids = "\n".join(str(ds.records[int(i)].record_id) for i in idx)
    record = {"num_images": int(len(idx)), "seed": recipe.seed,
              "list_sha256": hashlib.sha256(ids.encode()).hexdigest(),
              "source": "train split, no augmentation"}
    return images, record


def _noise_calibration(manifest: dict[str, Any], recipe: QuantRecipe
                       ) -> tuple[np.ndarray, dict[str, Any]]:
    """Seeded normal noise in the normalised input's range, for untrained (plan) students."""
    w, h = manifest["preprocessing"]["input_size"]
    rng = np.random.default_rng(recipe.seed)
    images = rng.standard_normal((recipe.num_images, 3, h, w)).astype(np.float32)
    return images, {"num_images": recipe.num_images, "seed": recipe.seed,
                    "list_sha256": "", "source": "seeded noise (untrained plan student)"}


# ------------------------------------------------------------------------- ONNX Runtime


def _head_node(model: Any) -> str:
    """Name of the ONNX node that writes the graph's output (the heatmap convolution)."""
    out = model.graph.output[0].name
    for node in model.graph.node:
        if out in node.output:
            return node.name
    raise QuantizationError("no node writes the model's output")


def _calibration_reader(base: type, images: np.ndarray, input_name: str) -> Any:
    """ONNX Runtime's calibration reader (a subclass of ``base``,
    ``CalibrationDataReader``) feeding ``images`` [N, 3, H, W] one at a time."""

    class Reader(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.items = iter(images[i:i + 1] for i in range(len(images)))

        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            x = next(self.items, None)
            return None if x is None else {input_name: x}

    return Reader()


def quantize_onnx(src: Path, dst: Path, images: np.ndarray, recipe: QuantRecipe,
                  activations: Optional[str] = None) -> dict[str, Any]:
    """Static QDQ quantization of ``src`` into ``dst``: per-channel symmetric int8 weights,
    activations as ``activations`` (default the recipe's ``ort_activations``: ``u8``
    asymmetric, or ``s8`` symmetric, the only form TensorRT reads); returns what stayed
    in higher precision.

    Shape: images [N, 3, H, W] float32, fed one at a time (the model has batch 1).
    """
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime quantization is not installed ({exc})") from None
    from okdhp_edge.utils.io import atomic_write

    method = {"default": CalibrationMethod.MinMax, "minmax": CalibrationMethod.MinMax,
              "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[recipe.method]
    model = onnx.load(str(src))
    reader = _calibration_reader(CalibrationDataReader, images, model.graph.input[0].name)
    exclude = [_head_node(model)] if recipe.keep_head else []
    signed = (activations or recipe.ort_activations) == "s8"

    def write(tmp: Path) -> None:
        quantize_static(str(src), str(tmp), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if signed else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=method,
                        nodes_to_exclude=exclude,
                        extra_options={"ActivationSymmetric": signed, "WeightSymmetric": True})

    atomic_write(Path(dst), write)
    return {"higher_precision_layers": onnx_float_layers(Path(dst)),
            "calibration_method": "minmax" if recipe.method == "default" else recipe.method,
            "activations": "s8 symmetric" if signed else "u8 asymmetric"}


def onnx_float_layers(path: Path) -> list[str]:
    """Weighted layers of a QDQ ONNX whose activation or weight is not dequantized int8
    (they run in float)."""
    import onnx

    model = onnx.load(str(path))
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type in WEIGHTED_ONNX and not all(i in dq for i in n.input[:2])]


# ----------------------------------------------------------------------------- OpenVINO


def _nncf():
    try:
        import nncf
    except ImportError as exc:
        raise BackendUnavailable(f"nncf is not installed ({exc}); OpenVINO INT8 needs the "
                                 "training/export install: pip install 'okdhp_edge[train]'"
                                 ) from None
    return nncf


def _ov_head(model: Any) -> str:
    """Friendly name of the convolution that makes the heatmaps (walking back from the
    result through bias adds and converts)."""
    node = model.outputs[0].get_node()
    for _ in range(8):
        node = node.input_value(0).get_node()
        if node.get_type_name() in WEIGHTED_OV:
            return node.get_friendly_name()
    raise QuantizationError("no convolution found before the model's output")


def _nncf_options(nncf: Any, recipe: QuantRecipe, model: Any) -> dict[str, Any]:
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet as R

    opts: dict[str, Any] = {"subset_size": recipe.num_images}
    if recipe.keep_head:
        opts["ignored_scope"] = nncf.IgnoredScope(names=[_ov_head(model)])
    advanced: dict[str, Any] = {}
    estimator = {"minmax": R.MINMAX, "percentile": R.MEAN_QUANTILE,
                 "entropy": R.HISTOGRAM}.get(recipe.method)
    if estimator is not None:
        advanced["activations_range_estimator_params"] = estimator
    if recipe.overflow_fix != "first_layer":  # NNCF's default otherwise, left to NNCF
        advanced["overflow_fix"] = {"enable": OverflowFix.ENABLE,
                                    "disable": OverflowFix.DISABLE}[recipe.overflow_fix]
    if advanced:
        opts["advanced"] = AdvancedQuantizationParameters(**advanced)
    return opts


def quantize_openvino(src_onnx: Path, dst_xml: Path, images: np.ndarray,
                      recipe: QuantRecipe,
                      validation: Optional[tuple[list, Callable, Callable]] = None
                      ) -> dict[str, Any]:
    """NNCF post-training quantization of the ONNX model into an OpenVINO IR (``.xml`` +
    ``.bin``). With ``recipe.max_drop``, the accuracy-controlled variant: ``validation`` =
    (items, to_input, fn) where ``to_input(item)`` is a model input [1, 3, H, W] and
    ``fn(compiled_model, items) -> metric`` measures the selection split. Returns what
    stayed in higher precision."""
    nncf = _nncf()
    import openvino as ov

    from okdhp_edge.export.openvino_export import save_ir

    model = ov.convert_model(str(src_onnx))
    calib = nncf.Dataset([images[i:i + 1] for i in range(len(images))])
    opts = _nncf_options(nncf, recipe, model)
    advanced = opts.pop("advanced", None)
    if recipe.max_drop is None:
        q = nncf.quantize(model, calib, advanced_parameters=advanced, **opts)
    else:
        if validation is None:
            raise QuantizationError("accuracy control needs the selection split")
        items, to_input, fn = validation
        q = nncf.quantize_with_accuracy_control(
            model, calib, nncf.Dataset(items, to_input),
            validation_fn=lambda m, data: fn(m, list(data)),
            max_drop=recipe.max_drop, drop_type=nncf.DropType.ABSOLUTE,
            advanced_quantization_parameters=advanced, **opts)
    save_ir(q, Path(dst_xml), compress_fp16=False)
    method = "nncf-default" if recipe.method == "default" else recipe.method
    return {"higher_precision_layers": openvino_float_layers(Path(dst_xml)),
            "calibration_method": method}


def openvino_float_layers(xml: Path) -> list[str]:
    """Weighted layers of a quantized IR whose data input is not fake-quantized."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    out = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in WEIGHTED_OV:
            continue
        src = op.input_value(0).get_node()
        while src.get_type_name() in _PRECISION_PRESERVING:  # int8 flows through these
            src = src.input_value(0).get_node()
        if src.get_type_name() != "FakeQuantize":
            out.append(op.get_friendly_name())
    return out


# OpenVINO ops that pass an int8 tensor on unchanged (a FakeQuantize before them quantizes
# the convolution after them)
_PRECISION_PRESERVING = ("MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
                         "StridedSlice", "Split", "VariadicSplit")
