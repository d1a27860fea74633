"""The INT8 post-training quantization recipe and its calibration data, shared by every
backend's quantizer (each in its backend module: ONNX Runtime QDQ in
:mod:`okdhp_edge.backends.onnxruntime`, NNCF in :mod:`okdhp_edge.backends.openvino`, ...),
calibrated on the student's training split; accuracy control reads the selection split,
never the report split.

The recipe's shared part (method, image count, seed, keep head) is :class:`Calibration`;
each backend declares its own options in its module, and
:class:`okdhp_edge.backends.recipe.QuantRecipe` puts them together. The recipe (with the
sha256 of the calibration list and what stayed in higher precision) is recorded with each
quantized file, so the same command gives the same model.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from okdhp_edge.data.errors import DataError
from okdhp_edge.errors import QuantizationError
from okdhp_edge.grammar import option
from okdhp_edge.records import StudentManifest

log = logging.getLogger(__name__)

METHODS = ("default", "minmax", "percentile", "entropy")


def check_choices(options: Any) -> None:
    """QuantizationError when a field of ``options`` (a recipe or a backend's INT8 options)
    holds a value its :func:`~okdhp_edge.grammar.option` choices do not list."""
    for f in fields(options):
        choices = f.metadata.get("choices")
        if choices and getattr(options, f.name) not in choices:
            raise QuantizationError(f"{f.name} must be one of {', '.join(choices)}, got "
                                    f"{getattr(options, f.name)!r}")


@dataclass(frozen=True)
class Calibration:
    """The INT8 recipe's fields every backend's quantizer reads (the full recipe, with each
    backend's own options as a section, is :class:`okdhp_edge.backends.recipe.QuantRecipe`).

    Attributes:
        method: activation range estimation: ``default`` (each tool's own: ONNX Runtime
            MinMax, NNCF's defaults), ``minmax``, ``percentile`` or ``entropy``.
        num_images: calibration crops drawn from the training split.
        seed: which crops (numpy Generator seed).
        keep_head: keep the final heatmap convolution (and what follows) in fp32.
    """

    method: str = option("default", "activation ranges (default: ONNX Runtime MinMax, "
                         "NNCF's own)", choices=METHODS, flag="--calib-method")
    num_images: int = option(300, "calibration crops of the training split", minimum=1,
                             flag="--calib-images")
    seed: int = option(0, "which crops (numpy seed)", minimum=0, flag="--calib-seed")
    keep_head: bool = option(False, "keep the final heatmap convolution in fp32",
                             flag="--int8-keep-head")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise QuantizationError(f"calibration method '{self.method}' unknown; expected "
                                    f"one of {', '.join(METHODS)}")
        if self.num_images < 1:
            raise QuantizationError("calibration needs at least one image")


def nncf_range_estimator(method: str) -> Any:
    """NNCF's activation range preset for a recipe ``method`` (None: NNCF's default)."""
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet as R

    return {"minmax": R.MINMAX, "percentile": R.MEAN_QUANTILE,
            "entropy": R.HISTOGRAM}.get(method)


def calibration_set(manifest: StudentManifest, recipe: Calibration
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


def _noise_calibration(manifest: StudentManifest, recipe: Calibration
                       ) -> tuple[np.ndarray, dict[str, Any]]:
    """Seeded normal noise in the normalised input's range, for untrained (plan) students."""
    w, h = manifest.preprocessing.input_size
    rng = np.random.default_rng(recipe.seed)
    images = rng.standard_normal((recipe.num_images, 3, h, w)).astype(np.float32)
    return images, {"num_images": recipe.num_images, "seed": recipe.seed,
                    "list_sha256": "", "source": "seeded noise (untrained plan student)"}
