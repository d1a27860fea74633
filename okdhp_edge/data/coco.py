"""COCO person keypoints (top-down) through pycocotools."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
from pycocotools.coco import COCO

from okdhp_edge.data.dataset import PersonRecord, TopDownDataset, check_joints
from okdhp_edge.data.errors import DataError, read_json
from okdhp_edge.data.keypoints import COCO_17, KeypointSpec
from okdhp_edge.data.splits import HoldOut
from okdhp_edge.utils.values import is_finite_number

log = logging.getLogger(__name__)


def load_coco(ann_file: str | Path, spec: KeypointSpec = COCO_17) -> COCO:
    """Load and validate a COCO keypoints json; raise :class:`DataError` naming the file."""
    ann_file = Path(ann_file)
    data = read_json(ann_file, "annotation")
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations",
                                                                  "categories")):
        raise DataError(
            f"{ann_file}: not a COCO keypoints file (needs 'images', 'annotations', 'categories')"
        )
    _check_records(data, ann_file)
    cats = [c for c in data["categories"] if isinstance(c, dict) and "keypoints" in c]
    if not cats:
        raise DataError(f"{ann_file}: no category declares 'keypoints': not a keypoints file")
    if len(cats[0]["keypoints"]) != spec.num_joints:
        raise DataError(
            f"{ann_file}: category '{cats[0].get('name')}' declares "
            f"{len(cats[0]['keypoints'])} keypoints, the {spec.name} spec has {spec.num_joints}"
        )
    for ann in data["annotations"]:
        kps = ann.get("keypoints")
        where = f"{ann_file}: annotation id {ann.get('id')}"
        if not isinstance(kps, list) or len(kps) != 3 * spec.num_joints:
            n = "no" if kps is None else len(kps) / 3
            raise DataError(f"{where}: {n} keypoints, the {spec.name} spec has {spec.num_joints}")
        if not all(is_finite_number(v) for v in kps):
            raise DataError(f"{where}: non-finite keypoint coordinates")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _check_records(data: dict, ann_file: Path) -> None:
    """The fields pycocotools and the loaders read, with their types: a bad record is named
    here instead of failing as a KeyError or TypeError further on. Boxes must be finite
    with a non-negative size."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list) or not all(isinstance(r, dict) for r in data[key]):
            raise DataError(f"{ann_file}: '{key}' must be a list of records")
    for cat in data["categories"]:
        if not isinstance(cat.get("id"), int):
            raise DataError(f"{ann_file}: category {str(cat)[:60]} needs an int 'id'")
    for img in data["images"]:
        if not isinstance(img.get("id"), int) or not isinstance(img.get("file_name"), str):
            raise DataError(f"{ann_file}: image record {str(img)[:60]} needs an int 'id' and "
                            "a 'file_name'")
    sizes = {img["id"]: (img.get("width"), img.get("height")) for img in data["images"]}
    for ann in data["annotations"]:
        where = f"{ann_file}: annotation id {ann.get('id')}"
        if not all(isinstance(ann.get(k), int) for k in ("id", "image_id", "category_id")):
            raise DataError(f"{where}: needs int 'id', 'image_id' and 'category_id'")
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(is_finite_number(v) for v in box)
                and box[2] >= 0 and box[3] >= 0):
            raise DataError(f"{where}: bbox {box!r} is not [x, y, w, h] of finite numbers "
                            "with w, h >= 0")
        _check_in_image(box, ann.get("area"), sizes.get(ann["image_id"]), where)


def _check_in_image(box: list, area: Any, size: Any, where: str) -> None:
    """A box (and area) that no image of its size can hold is refused, naming the record:
    clipped to the image it would silently become the whole image, and its area would
    weigh its OKS (a box of [0, 0, 1e30, 1e30] moved an oracle's AP from 1.0 to 0.989)."""
    if not (isinstance(size, (list, tuple)) and all(is_finite_number(v) for v in size)):
        return
    width, height = size
    x, y, w, h = box
    if x > width or y > height or x + w < 0 or y + h < 0 or w > 2 * width or h > 2 * height:
        raise DataError(f"{where}: bbox {box!r} cannot lie in its {width}x{height} image")
    if area is not None and (not is_finite_number(area) or not 0 <= area <= 4 * width * height):
        raise DataError(f"{where}: area {area!r} cannot be a person's in its {width}x{height} "
                        "image")


class CocoKeypoints(TopDownDataset):
    """Top-down COCO keypoints: one record per person box.

    Args:
        ann_file: ``person_keypoints_*.json``.
        image_dir: folder of the images named in it.
        image_ids: keep only these images (e.g. a held-out selection split).
        det_file: person detections (COCO results json) to use instead of GT boxes.
        det_score_thr: detections below this score are dropped.
        **kwargs: see :class:`TopDownDataset`.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        spec: KeypointSpec = COCO_17,
        image_ids: Optional[Iterable[int]] = None,
        det_file: Optional[str | Path] = None,
        det_score_thr: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(spec, **kwargs)
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.coco = load_coco(self.ann_file, spec)
        ids = sorted(self.coco.getImgIds()) if image_ids is None else sorted(image_ids)
        self.image_ids = ids
        if det_file:
            self.records = self._det_records(Path(det_file), det_score_thr)
        else:
            self.records = self._gt_records()
        log.info("%s: %d images, %d person records", self.ann_file.name, len(ids),
                 len(self.records))

    def _gt_records(self) -> list[PersonRecord]:
        records = []
        for img_id in self.image_ids:
            info = self.coco.imgs[img_id]
            width, height = info["width"], info["height"]
            for ann in self.coco.imgToAnns.get(img_id, []):
                if ann.get("iscrowd", 0) or max(ann["keypoints"][2::3]) == 0:
                    continue  # crowd and zero-keypoint instances are not persons to learn
                x, y, w, h = ann["bbox"]
                x1, y1 = max(0.0, x), max(0.0, y)
                x2, y2 = min(width - 1.0, x1 + max(0.0, w - 1)), min(height - 1.0,
                                                                      y1 + max(0.0, h - 1))
                if ann.get("area", 1) <= 0 or x2 < x1 or y2 < y1:
                    continue
                joints = np.array(ann["keypoints"], np.float32).reshape(-1, 3)
                check_joints(joints, self.spec, f"{self.ann_file}: annotation id {ann['id']}")
                joints[:, 2] = (joints[:, 2] > 0).astype(np.float32)
                center, scale = self.box_to_center_scale((x1, y1, x2 - x1, y2 - y1))
                records.append(PersonRecord(
                    image_path=str(self.image_dir / info["file_name"]), image_id=img_id,
                    center=center, scale=scale, joints=joints, score=1.0,
                    area=float(ann.get("area", w * h)), record_id=ann["id"],
                ))
        return records

    def _det_records(self, det_file: Path, thr: float) -> list[PersonRecord]:
        dets = read_json(det_file, "detection")
        if not isinstance(dets, list):
            raise DataError(f"{det_file}: expected a list of COCO detection results")
        keep = set(self.image_ids)
        records = []
        k = self.spec.num_joints
        for i, det in enumerate(dets):
            if not isinstance(det, dict) or "bbox" not in det or "image_id" not in det:
                raise DataError(f"{det_file}: entry {i} is not a COCO detection result")
            score, box = _checked_detection(det, det_file, i)  # every entry, kept or not
            if det.get("category_id", 1) != 1 or det["image_id"] not in keep or score < thr:
                continue
            info = self.coco.imgs[det["image_id"]]
            center, scale = self.box_to_center_scale(box)
            records.append(PersonRecord(
                image_path=str(self.image_dir / info["file_name"]), image_id=det["image_id"],
                center=center, scale=scale, joints=np.zeros((k, 3), np.float32),
                score=score, area=float(scale[0] * scale[1]), record_id=f"det{i}",
            ))
        return records


# a detection box side beyond this (pixels) is not a person in an image
MAX_BOX_SIDE = 1e5


def _checked_detection(det: dict, det_file: Path, i: int) -> tuple[float, list[float]]:
    """(score, [x, y, w, h]) of detection ``i``; DataError naming it when its image or
    category id is not a whole number, the score is not a finite number or the box is not
    four finite numbers with 0 < w, h <= MAX_BOX_SIDE."""
    from okdhp_edge.utils.values import is_finite_number

    score, box = det.get("score", 1.0), det["bbox"]
    for key in ("image_id", "category_id"):
        value = det.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool):
            raise DataError(f"{det_file}: entry {i}: {key} {value!r} is not a whole number")
    if not is_finite_number(score):
        raise DataError(f"{det_file}: entry {i}: score {score!r} is not a finite number")
    if not (isinstance(box, list) and len(box) == 4 and all(is_finite_number(v) for v in box)
            and 0 < box[2] <= MAX_BOX_SIDE and 0 < box[3] <= MAX_BOX_SIDE
            and all(abs(v) <= MAX_BOX_SIDE for v in box[:2])):
        raise DataError(f"{det_file}: entry {i}: bbox {box!r} is not [x, y, w, h] with a "
                        f"positive width and height up to {MAX_BOX_SIDE:g} px")
    return float(score), [float(v) for v in box]


def image_files(ann_file: str | Path) -> list[str]:
    """The file name of every image a COCO keypoints file lists (checked as load_coco does)."""
    return sorted({img["file_name"] for img in load_coco(ann_file).dataset["images"]})


def hold_out(ann: str, images: str, spec: KeypointSpec, common: dict[str, Any], split: str,
             rule: HoldOut) -> CocoKeypoints:
    """The ``train`` or ``select`` split of a COCO-format training file under ``rule``."""
    coco = load_coco(ann, spec)
    return CocoKeypoints(ann, images, spec, image_ids=rule.side(coco.getImgIds(), split),
                         **common)
