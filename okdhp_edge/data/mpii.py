"""MPII single-person (top-down) in the common json format, and its head boxes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from okdhp_edge.data.dataset import PersonRecord, TopDownDataset, check_joints
from okdhp_edge.data.errors import DataError, read_json
from okdhp_edge.data.keypoints import MPII_16, KeypointSpec
from okdhp_edge.data.splits import HoldOut

log = logging.getLogger(__name__)


def _load_json_list(path: Path, what: str) -> list:
    data = read_json(path, what)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of {what} records")
    return data


class MpiiKeypoints(TopDownDataset):
    """MPII records: ``image``, ``center``, ``scale`` (height / 200), 1-based ``joints``,
    ``joints_vis``. The box follows the HRNet convention: centre moved down by 15 x scale,
    scale x 1.25, square of side scale x 200 px, widened to the input aspect ratio.
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        spec: KeypointSpec = MPII_16,
        indices: Optional[list[int]] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(spec, **kwargs)
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        raw = _load_json_list(self.ann_file, "MPII annotation")
        keep = range(len(raw)) if indices is None else indices
        self.records = [self._record(i, raw[i]) for i in keep]
        log.info("%s: %d person records", self.ann_file.name, len(self.records))

    def _record(self, i: int, a: Any) -> PersonRecord:
        where = f"{self.ann_file}: record {i}"
        joints, c, s = _parse_record(a, where)
        check_joints(joints, self.spec, where)
        if c[0] != -1:
            c[1] += 15 * s
            s *= 1.25
        c -= 1.0
        side = s * 200.0
        w, h = side, side
        if w > self.aspect_ratio * h:
            h = w / self.aspect_ratio
        else:
            w = h * self.aspect_ratio
        return PersonRecord(
            image_path=str(self.image_dir / a["image"]), image_id=i, center=c,
            scale=np.array([w, h], np.float32), joints=joints, record_id=f"{a['image']}#{i}",
        )


def image_files(ann_file: str | Path) -> list[str]:
    """The file name of every image an MPII annotation file's records name."""
    path = Path(ann_file)
    names = set()
    for i, a in enumerate(_load_json_list(path, "MPII annotation")):
        names.add(_image_name(a, f"{path}: record {i}"))
    return sorted(names)


def _image_name(a: Any, where: str) -> str:
    """The image file name of one raw record, or a DataError naming the record."""
    if not isinstance(a, dict) or not isinstance(a.get("image"), str) or not a["image"]:
        raise DataError(f"{where}: 'image' must be a file name")
    return a["image"]


def load_headboxes(path: str | Path, count: Optional[int] = None) -> np.ndarray:
    """Head boxes [N, 4] (x1, y1, x2, y2) from ``gt_valid.mat`` or a headbox json."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: head-box file not found")
    if path.suffix == ".mat":
        from scipy.io import loadmat

        try:
            mat = loadmat(str(path))
        except Exception as exc:  # scipy raises several types for bad files
            raise DataError(f"{path}: not a readable .mat file: {exc}") from None
        if "headboxes_src" not in mat:
            raise DataError(f"{path}: no 'headboxes_src' (expected MPII gt_valid.mat)")
        hb = np.asarray(mat["headboxes_src"], np.float64)  # [2, 2, N]
        if hb.ndim != 3 or hb.shape[:2] != (2, 2):
            raise DataError(f"{path}: headboxes_src must be 2 x 2 x N, not {hb.shape}")
        boxes = np.concatenate([hb[0].T, hb[1].T], axis=1)
    else:
        recs = _load_json_list(path, "head-box")
        try:
            recs = sorted(recs, key=lambda r: r.get("index_in_mpii_tiny_json", 0))
            boxes = np.asarray([r["headbox_x1y1x2y2"] for r in recs], np.float64)
        except (KeyError, TypeError, AttributeError, ValueError):
            raise DataError(f"{path}: records need 'headbox_x1y1x2y2' as 4 numbers") from None
    if count is not None and len(boxes) != count:
        raise DataError(f"{path}: {len(boxes)} head boxes for {count} persons")
    _check_headboxes(boxes, path)
    return boxes


def _check_headboxes(boxes: np.ndarray, path: Path) -> None:
    """Every box [N, 4] finite with a diagonal > 0: PCKh divides by it, so one degenerate
    box would turn that person's distances into inf / NaN and skew the mean silently."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"{path}: head boxes must be N x 4 (x1, y1, x2, y2)")
    with np.errstate(over="ignore", invalid="ignore"):
        diag = np.linalg.norm(boxes[:, 2:] - boxes[:, :2], axis=1)
    bad = np.flatnonzero(~np.isfinite(boxes).all(1) | ~(diag > 0))
    if len(bad):
        raise DataError(f"{path}: {len(bad)} degenerate head box(es) (non-finite or of zero "
                        f"size), first at index {bad[0]}: {boxes[bad[0]].tolist()}")


def _parse_record(a: Any, where: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(joints [K, 3] 0-based with visibility, center [2], scale) of one raw record, or a
    DataError naming the record: every field checked for type, shape and finiteness."""
    if not isinstance(a, dict) or not all(k in a for k in ("image", "center", "scale",
                                                            "joints")):
        raise DataError(f"{where}: not an MPII record (needs image, center, scale, joints)")
    _image_name(a, where)
    try:  # huge numbers become inf (refused below), without numpy's overflow warning
        with np.errstate(over="ignore"):
            joints_xy = np.asarray(a["joints"], np.float32)
            vis = np.asarray(a.get("joints_vis", np.ones(len(joints_xy))), np.float32)
            c = np.asarray(a["center"], np.float32).copy()
        s = float(a["scale"])
    except (TypeError, ValueError):
        raise DataError(f"{where}: joints, joints_vis, center and scale must be numbers") from None
    if joints_xy.ndim != 2 or joints_xy.shape[-1] != 2 or vis.shape != (len(joints_xy),):
        raise DataError(f"{where}: joints must be K x [x, y] with K joints_vis flags")
    if c.shape != (2,) or not np.all(np.isfinite(c)) or not np.isfinite(s) or s <= 0:
        raise DataError(f"{where}: center must be 2 finite numbers, scale finite and > 0")
    joints = np.concatenate([joints_xy - 1.0, (vis > 0)[:, None].astype(np.float32)], 1)
    return joints, c, s


def hold_out(ann: str, images: str, spec: KeypointSpec, common: dict[str, Any], split: str,
             rule: HoldOut) -> MpiiKeypoints:
    """The ``train`` or ``select`` split of an MPII training file under ``rule``, held out
    by image (every person of an image on the same side; ``max_images`` counts images, as
    for COCO). The training file has no official head boxes: both splits get boxes estimated
    from the head-top / upper-neck segment, which selection's PCKh is normalised by."""
    full = MpiiKeypoints(ann, images, spec, **{**common, "train": False})
    image_of = [r.image_path for r in full.records]
    number = {name: i for i, name in enumerate(sorted(set(image_of)))}
    side = set(rule.side(range(len(number)), split))
    ds = MpiiKeypoints(ann, images, spec, indices=[i for i, name in enumerate(image_of)
                                                  if number[name] in side], **common)
    ds.headboxes = estimated_headboxes(ds)
    return ds


def estimated_headboxes(ds: MpiiKeypoints) -> np.ndarray:
    """Head boxes whose 0.6 x diagonal equals the upper-neck to head-top distance."""
    boxes = []
    for r in ds.records:
        d = float(np.linalg.norm(r.joints[9, :2] - r.joints[8, :2])) or 1.0
        side = d / (0.6 * np.sqrt(2))
        cx, cy = r.joints[9, :2]
        boxes.append([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
    return np.asarray(boxes)
