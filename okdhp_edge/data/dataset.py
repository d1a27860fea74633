"""Top-down pose dataset base: records -> (crop, heatmap targets, meta), numpy only."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from okdhp_edge.data.codec import HeatmapCodec
from okdhp_edge.data.errors import DataError
from okdhp_edge.data.keypoints import KeypointSpec
from okdhp_edge.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentParams,
    affine_points,
    box_to_center_scale,
    crop,
    half_body_box,
    normalize,
    sample_augmentation,
)

log = logging.getLogger(__name__)

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as RGB uint8 [H, W, 3]; raise :class:`DataError` naming the file.

    Truncated JPEGs (no end-of-image marker) are refused rather than decoded partially.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read image: {exc}") from None
    if not data:
        raise DataError(f"{path}: empty image file (0 bytes)")
    if data[:2] == _JPEG_SOI and _JPEG_EOI not in data[-64:].rstrip(b"\x00"):
        raise DataError(f"{path}: truncated JPEG (no end-of-image marker)")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise DataError(f"{path}: unreadable image ({str(exc).strip()[:80]})") from None
    if img is None:
        raise DataError(f"{path}: unreadable image (not a decodable JPEG/PNG)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@dataclass
class PersonRecord:
    """One person instance: where its image is and where the person is."""

    image_path: str
    image_id: int
    center: np.ndarray  # [2] image px
    scale: np.ndarray  # [2] box (w, h) image px, padded
    joints: np.ndarray  # [K, 3] x, y, visibility (0 unlabelled, >0 labelled)
    score: float = 1.0
    area: float = 0.0
    record_id: Any = None
    extra: dict = field(default_factory=dict)


def check_joints(joints: np.ndarray, spec: KeypointSpec, where: str) -> None:
    """Raise :class:`DataError` when joints have the wrong count or non-finite values."""
    if joints.shape != (spec.num_joints, 3):
        raise DataError(
            f"{where}: {joints.shape[0] if joints.ndim else 0} keypoints, "
            f"but the {spec.name} spec declares {spec.num_joints}"
        )
    if not np.all(np.isfinite(joints)):
        raise DataError(f"{where}: non-finite keypoint coordinates")


def require_persons(ds: TopDownDataset, what: str) -> TopDownDataset:
    """``ds`` itself, or a DataError when it holds no person: an empty split would score
    AP 0.0 (or PCKh NaN) as if it were a result."""
    if len(ds) == 0:
        raise DataError(f"{what}: no person to score (an empty split: check the annotation "
                        "file, its image ids and the split settings)")
    return ds


class TopDownDataset:
    """Crops persons and encodes heatmap targets; subclasses fill ``self.records``.

    Each item is a dict of numpy arrays:
    ``image`` [3, H, W] float32 normalised, ``target`` [K, h, w], ``target_weight`` [K],
    ``center`` [2], ``scale`` [2], ``index`` int, ``joints`` [K, 3] in input pixels.
    With ``bad_image='skip'`` (training) an unreadable image yields ``None`` and is
    counted in ``skipped``; the collate function drops it.
    """

    def __init__(
        self,
        spec: KeypointSpec,
        input_size: tuple[int, int],
        stride: int = 4,
        sigma: float = 2.0,
        train: bool = False,
        augment: Optional[AugmentParams] = None,
        bad_image: str = "fail",
        seed: int = 0,
        box_padding: float = 1.25,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        self.spec = spec
        self.mean, self.std = tuple(mean), tuple(std)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.codec = HeatmapCodec(self.input_size, stride, sigma)
        self.train = train
        self.augment = augment or AugmentParams()
        self.bad_image = bad_image
        self.seed = seed
        self.epoch = 0
        self.box_padding = box_padding
        self.flip_index = spec.flip_index()
        self.records: list[PersonRecord] = []
        # MPII: head boxes [N, 4] (x1, y1, x2, y2), one per record, for PCKh; None elsewhere
        self.headboxes: Optional[np.ndarray] = None
        self.skipped = 0
        upper = [i for i, n in enumerate(spec.joints)
                 if any(s in n for s in ("eye", "ear", "nose", "shoulder", "elbow", "wrist",
                                         "head", "neck", "thorax"))]
        self._upper = tuple(upper)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Augmentation of item i in epoch e depends only on (seed, e, i): resumable."""
        self.epoch = int(epoch)

    def __getitem__(self, key: int | tuple[int, int]) -> Optional[dict[str, Any]]:
        """Item ``index``, or ``(epoch, index)``: the augmentation of that epoch whatever
        ``set_epoch`` said. The pair lets a sampler in the main process carry the epoch to
        persistent data workers, which keep the copy of the dataset they started with."""
        epoch, index = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (self.epoch,
                                                                                  int(key))
        rec = self.records[index]
        try:
            image = read_image(rec.image_path)
        except DataError as exc:
            if self.train and self.bad_image == "skip":
                self.skipped += 1
                log.warning("skipping record %s: %s", rec.record_id, exc)
                return None
            raise DataError(f"{exc} (record {rec.record_id})") from None
        return self.make_sample(image, rec, index, epoch)

    def make_sample(self, image: np.ndarray, rec: PersonRecord, index: int,
                    epoch: Optional[int] = None) -> dict[str, Any]:
        """Crop, augment (train; as in ``epoch``, default the current one) and encode one
        person of an RGB image."""
        center, scale, rot, flip = rec.center.copy(), rec.scale.copy(), 0.0, False
        joints = rec.joints.copy()
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch if epoch is None else epoch,
                                         index))
            if self.augment.half_body_prob > 0 and rng.random() < self.augment.half_body_prob:
                hb = half_body_box(joints, self._upper, rng, self.aspect_ratio)
                if hb is not None:
                    center, scale = hb
            s, rot, flip = sample_augmentation(rng, self.augment)
            scale = scale * s
        patch, trans = crop(image, center, scale, rot, self.input_size)
        joints_in = joints.copy()
        joints_in[:, :2] = affine_points(joints[:, :2], trans)
        if flip:
            patch = patch[:, ::-1]
            joints_in = joints_in[self.flip_index]
            joints_in[:, 0] = self.input_size[0] - 1 - joints_in[:, 0]
        target, weight = self.codec.encode(joints_in)
        return {
            "image": normalize(patch, self.mean, self.std),
            "target": target,
            "target_weight": weight,
            "center": center.astype(np.float32),
            "scale": scale.astype(np.float32),
            "joints": joints_in.astype(np.float32),
            "index": index,
        }

    def box_to_center_scale(self, box: tuple[float, float, float, float]):
        """(center, scale) of an xywh box for this dataset's input aspect ratio."""
        return box_to_center_scale(box, self.aspect_ratio, self.box_padding)


def collate_skip_none(batch: list[Optional[dict]]) -> dict[str, Any]:
    """Stack samples into a batch, dropping skipped (None) ones; counts them in ``skipped``."""
    kept = [b for b in batch if b is not None]
    out: dict[str, Any] = {"skipped": len(batch) - len(kept)}
    if not kept:
        return out
    for key in kept[0]:
        out[key] = np.stack([np.asarray(b[key]) for b in kept])
    return out
