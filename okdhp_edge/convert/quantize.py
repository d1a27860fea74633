"""The INT8 post-training quantization recipe and its calibration data, shared by every
backend's quantizer (each in its backend module: ONNX Runtime QDQ in
:mod:`okdhp_edge.backends.onnxruntime`, NNCF in :mod:`okdhp_edge.backends.openvino`, ...),
calibrated on the student's training split; accuracy control reads the selection split,
never the report split.

The recipe (method, image count, seed, the sha256 of the calibration list, what stayed in
higher precision) is recorded with each quantized file, so the same command gives the
same model.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Iterable, Optional

import numpy as np

from okdhp_edge.data.errors import DataError
from okdhp_edge.errors import QuantizationError
from okdhp_edge.grammar import option
from okdhp_edge.records import StudentManifest
from okdhp_edge.targets import BACKEND_INFO

log = logging.getLogger(__name__)

METHODS = ("default", "minmax", "percentile", "entropy")
# NNCF's fix of int8 saturation on CPUs without VNNI (first_layer: NNCF's own default)
OVERFLOW_FIXES = ("first_layer", "enable", "disable")
ORT_QUANTIZERS = ("ort", "nncf")
NNCF_ACTIVATIONS = ("per_channel", "per_tensor")  # ort_nncf_activations
TRANSPOSED_CONV = ("subpixel", "keep")  # ort_transposed_conv
# the recipe fields that take one of a few names
_CHOICES = {"ort_quantizer": ORT_QUANTIZERS, "ort_nncf_activations": NNCF_ACTIVATIONS,
            "ort_transposed_conv": TRANSPOSED_CONV, "overflow_fix": OVERFLOW_FIXES}




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
        ort_quantizer: ONNX Runtime only: who writes its QDQ file: ``nncf`` (the default:
            NNCF's post-training quantization of the ONNX model, with its range presets and
            fast bias correction, the recipe of the OpenVINO file; activations written as
            u8) or ``ort`` (ONNX Runtime's static MinMax quantization, the activations as
            ``ort_activations`` says). On the light zoo's selection split ONNX Runtime's
            own recipe lost 0.02-0.06 AP more than NNCF's per-tensor file on every
            MobileNetV2 student, and was no faster on any student (docs/int8.md).
            TensorRT's S8S8 file is always ONNX Runtime's.
        ort_nncf_activations: ``ort_quantizer=nncf`` only: ``per_tensor`` (the default:
            every activation per tensor, which ONNX Runtime fuses into QLinearConv) or
            ``per_channel`` (NNCF's own choice: a depthwise convolution's input per
            channel, which ONNX Runtime cannot fuse: 2.5x its fp32 on MobileNetV2).
        ort_transposed_conv: ONNX Runtime only: ``subpixel`` (the default: a light
            decoder's 4x4 stride-2 transposed convolutions, with their batch norms, as 3x3
            convolutions + DepthToSpace before quantizing, an exact rewrite in float, since
            ONNX Runtime has no quantized ConvTranspose; :mod:`okdhp_edge.convert.subpixel`)
            or ``keep`` (they run in float).
    """

    method: str = option("default", "activation ranges (default: ONNX Runtime MinMax, "
                         "NNCF's own)", choices=METHODS, flag="--calib-method")
    num_images: int = option(300, "calibration crops of the training split", minimum=1,
                             flag="--calib-images")
    seed: int = option(0, "which crops (numpy seed)", minimum=0, flag="--calib-seed")
    keep_head: bool = option(False, "keep the final heatmap convolution in fp32",
                             flag="--int8-keep-head")
    max_drop: Optional[float] = option(
        None, "OpenVINO: NNCF accuracy control, at most this much of the metric lost on the "
        "selection split (AP 0.005 = half a point)", minimum=0,
        flag="--int8-max-drop")
    ort_activations: str = option("u8", "ONNX Runtime activations: u8 (x86) or s8 (Arm)",
                                  choices=("u8", "s8"))
    overflow_fix: str = option(
        "first_layer", "OpenVINO: weights in half the int8 range against the saturation of "
        "CPUs without VNNI (enable: every convolution; see docs/int8.md)",
        choices=OVERFLOW_FIXES, flag="--int8-overflow-fix")
    ort_quantizer: str = option(
        "nncf", "ONNX Runtime's QDQ file: NNCF's (range presets, bias correction: the "
        "OpenVINO file's recipe; the default) or its own static quantization",
        choices=ORT_QUANTIZERS)
    ort_nncf_activations: str = option(
        "per_tensor", "with ort_quantizer nncf: activations per tensor (ONNX Runtime fuses "
        "every convolution) or NNCF's per-channel choice (slower)", choices=NNCF_ACTIVATIONS)
    ort_transposed_conv: str = option(
        "subpixel", "ONNX Runtime: a light decoder's transposed convolutions as sub-pixel "
        "convolutions, which quantize, or kept (they run in float)", choices=TRANSPOSED_CONV)

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
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise QuantizationError(f"{name} must be one of {', '.join(choices)}, got "
                                        f"{getattr(self, name)!r}")
        if self.ort_quantizer == "nncf" and self.ort_activations != "u8":
            raise QuantizationError("--ort-activations s8 is ONNX Runtime's quantizer's; NNCF "
                                    "chooses the activation types itself: add --ort-quantizer "
                                    "ort")
        if self.ort_nncf_activations != _default("ort_nncf_activations") and \
                self.ort_quantizer != "nncf":
            raise QuantizationError("--ort-nncf-activations is NNCF's choice for ONNX "
                                    "Runtime's file: add --ort-quantizer nncf")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    # the fields only one backend's quantizer reads (by the backend a file's parity runs on):
    # a change of them leaves the other backends' files as they were
    BACKEND_FIELDS: ClassVar[dict[str, tuple[str, ...]]] = {
        b.name: b.recipe_fields for b in BACKEND_INFO.values() if b.recipe_fields}

    def fields_for(self, backend: Optional[str] = None) -> tuple[str, ...]:
        """The fields a file for ``backend`` depends on (None: all of them)."""
        other = {f for b, fs in self.BACKEND_FIELDS.items() if backend and b != backend
                 for f in fs}
        return tuple(f.name for f in fields(self) if f.name not in other)

    def check_honoured(self, backends: Iterable[str]) -> None:
        """QuantizationError when a field only some backends' quantizers read is set away
        from its default but none of ``backends`` (those quantizing) reads it: an option
        that would be ignored is refused, not recorded."""
        backends, default = set(backends), QuantRecipe()
        for owner, names in self.BACKEND_FIELDS.items():
            for name in names:
                if getattr(self, name) != getattr(default, name) and owner not in backends:
                    raise QuantizationError(
                        f"{recipe_flag(name)} {getattr(self, name)}: only {owner}'s INT8 reads it, "
                        f"and it is not among the backends quantized here "
                        f"({', '.join(sorted(backends)) or 'none'})")

    def same_as(self, record: Any, backend: Optional[str] = None) -> bool:
        """Whether a recorded recipe (export.yaml; written before a field existed, it holds
        that field's default) made the same file for ``backend`` as this recipe would."""
        if not isinstance(record, dict):
            return False
        old, new = {**QuantRecipe().as_dict(), **record}, self.as_dict()
        return all(old.get(f) == new[f] for f in self.fields_for(backend))


def _default(name: str) -> Any:
    """A :class:`QuantRecipe` field's default."""
    return next(f.default for f in fields(QuantRecipe) if f.name == name)


def nncf_range_estimator(method: str) -> Any:
    """NNCF's activation range preset for a recipe ``method`` (None: NNCF's default)."""
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet as R

    return {"minmax": R.MINMAX, "percentile": R.MEAN_QUANTILE,
            "entropy": R.HISTOGRAM}.get(method)


def recipe_flag(name: str) -> str:
    """The command-line option of a recipe field (``num_images`` -> ``--calib-images``)."""
    f = next(f for f in fields(QuantRecipe) if f.name == name)
    return f.metadata.get("flag") or "--" + name.replace("_", "-")


# the recipe keys a reproducing command always spells out (the calibration's identity)
ALWAYS_SPELLED = ("calib_method", "calib_images", "calib_seed")


def calibration_set(manifest: StudentManifest, recipe: QuantRecipe
                    ) -> tuple[np.ndarray, dict[str, Any]]:
    """``num_images`` crops [N, 3, H, W] of the training split, made exactly as training
    and the bench make them (no augmentation), and their record: which records (sha256
    of the list), how many, the seed.

    Raises:
        DataError: no training split recorded, unreadable, or fewer persons than asked.
    """
    from okdhp_edge.evaluation.datasets import training_split
    if manifest.untrained:  # a plan's student: its latency does not depend on the data
        return _noise_calibration(manifest, recipe)
    ds = training_split(manifest, "train")
    if len(ds) < recipe.num_images:
        raise DataError(f"calibration asks for {recipe.num_images} images but the training "
                        f"split of '{manifest.name}' has {len(ds)} persons")
    rng = np.random.default_rng(recipe.seed)
    idx = np.sort(rng.choice(len(ds), recipe.num_images, replace=False))
    images = np.stack([ds[int(i)]["image"] for i in idx]).astype(np.float32)
    ids = "\n".join(str(ds.records[int(i)].record_id) for i in idx)
    record = {"num_images": int(len(idx)), "seed": recipe.seed,
              "list_sha256": hashlib.sha256(ids.encode()).hexdigest(),
              "source": "train split, no augmentation"}
    return images, record


def _noise_calibration(manifest: StudentManifest, recipe: QuantRecipe
                       ) -> tuple[np.ndarray, dict[str, Any]]:
    """Seeded normal noise in the normalised input's range, for untrained (plan) students."""
    w, h = manifest.preprocessing.input_size
    rng = np.random.default_rng(recipe.seed)
    images = rng.standard_normal((recipe.num_images, 3, h, w)).astype(np.float32)
    return images, {"num_images": recipe.num_images, "seed": recipe.seed,
                    "list_sha256": "", "source": "seeded noise (untrained plan student)"}
