"""Build the train / select / report splits of a :class:`~okdhp_edge.config.DataConfig`.

- ``train``: training images, minus the held-out selection images.
- ``select``: ``select_fraction`` of the training images, held out; checkpoints and
  branches are chosen on it.
- ``report``: the split final numbers are reported on (never used for selection).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from okdhp_edge.data.coco import CocoKeypoints, load_coco, split_image_ids
from okdhp_edge.data.dataset import TopDownDataset, require_persons
from okdhp_edge.data.errors import DataError
from okdhp_edge.data.keypoints import get_spec
from okdhp_edge.data.mpii import MpiiKeypoints, load_headboxes
from okdhp_edge.data.transforms import AugmentParams

log = logging.getLogger(__name__)

SPLITS = ("train", "select", "report")


def synthetic_paths(root: str | Path) -> dict[str, Path]:
    """Annotation and image paths of a generated synthetic dataset."""
    root = Path(root)
    return {
        "train_ann": root / "annotations" / "person_keypoints_train.json",
        "train_images": root / "images" / "train",
        "report_ann": root / "annotations" / "person_keypoints_val.json",
        "report_images": root / "images" / "val",
    }


def ensure_synthetic(dcfg: Any) -> None:
    """Generate the synthetic dataset under ``dcfg.root`` if it is not there yet."""
    paths = synthetic_paths(dcfg.root)
    if paths["train_ann"].is_file() and paths["report_ann"].is_file():
        w, h = (int(v) for v in dcfg.synthetic_image_size)
        _check_synthetic(str(dcfg.root), dcfg.synthetic_num_train, dcfg.synthetic_num_val,
                         dcfg.synthetic_seed, (w, h))
        return
    from okdhp_edge.data.synthetic import generate_dataset

    log.info("generating synthetic dataset in %s", dcfg.root)
    generate_dataset(Path(dcfg.root), dcfg.synthetic_num_train, dcfg.synthetic_num_val,
                     seed=dcfg.synthetic_seed, image_size=tuple(dcfg.synthetic_image_size))


@functools.cache
def _check_synthetic(root: str, num_train: int, num_val: int, seed: int,
                     size: tuple[int, int]) -> None:
    """Warn when the dataset under ``root`` was generated with other settings than the
    config's ``synthetic_*`` (which only apply when it is generated): it is used as it is,
    so a changed ``synthetic_num_train`` needs another ``data.root``. Once per process and
    settings: build_split calls it for every split."""
    paths = synthetic_paths(root)
    want = {"train": num_train, "val": num_val}
    for split, key in (("train", "train_ann"), ("val", "report_ann")):
        doc = json.loads(paths[key].read_text())
        images = doc.get("images", [])
        got_seed = doc.get("info", {}).get("seed")
        got = (images[0]["width"], images[0]["height"]) if images else size
        if len(images) != want[split] or got_seed != seed or got != size:
            log.warning("%s: the synthetic %s split there has %d images (seed %s, %dx%d), the "
                        "config's data.synthetic_* settings ask for %d (seed %d, %dx%d); using "
                        "it as it is (point data.root elsewhere to generate another)",
                        root, split, len(images), got_seed, got[0], got[1], want[split],
                        seed, size[0], size[1])


def split_record(dcfg: Any) -> dict[str, Any]:
    """Where a run's training data is and how its selection split is held out: enough to
    rebuild both splits later (student manifests keep it as ``provenance.splits``)."""
    paths = _paths(dcfg)
    return {"dataset": dcfg.dataset, "train_ann": paths["train_ann"],
            "train_images": paths["train_images"], "select_fraction": dcfg.select_fraction,
            "select_max_images": dcfg.select_max_images, "split_seed": dcfg.synthetic_seed}


def _paths(dcfg: Any) -> dict[str, str]:
    if dcfg.dataset == "synthetic":
        return {k: str(v) for k, v in synthetic_paths(dcfg.root).items()}
    return {k: getattr(dcfg, k) for k in ("train_ann", "train_images", "report_ann",
                                          "report_images")}


def build_split(dcfg: Any, split: str, train_mode: bool | None = None,
                seed: int = 0) -> TopDownDataset:
    """The dataset of one split. ``train_mode`` (default: split == 'train') turns on
    augmentation and the bad-image policy. An empty split is a DataError."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; expected one of {SPLITS}")
    paths = _paths(dcfg)
    ds = _build_split(dcfg, split, paths, train_mode, seed)
    key = "report" if split == "report" else "train"
    return require_persons(ds, f"{paths[f'{key}_ann']} ({split} split)")


def _build_split(dcfg: Any, split: str, paths: dict[str, str], train_mode: bool | None,
                 seed: int) -> TopDownDataset:
    if dcfg.dataset == "synthetic":
        ensure_synthetic(dcfg)
    spec = get_spec(dcfg.dataset)
    train_mode = (split == "train") if train_mode is None else train_mode
    common: dict[str, Any] = dict(
        input_size=tuple(dcfg.input_size), stride=dcfg.heatmap_stride, sigma=dcfg.sigma,
        train=train_mode, bad_image=dcfg.bad_image, seed=seed, box_padding=dcfg.box_padding,
        augment=AugmentParams(dcfg.scale_factor, dcfg.rot_factor, dcfg.rot_prob,
                              dcfg.flip_prob, dcfg.half_body_prob),
    )
    key = "report" if split == "report" else "train"
    ann, images = paths[f"{key}_ann"], paths[f"{key}_images"]
    if not ann:
        raise DataError(f"data.{key}_ann is not set for dataset '{dcfg.dataset}'")
    if dcfg.dataset == "mpii":
        return _mpii_split(dcfg, split, ann, images, spec, common)
    if split == "report":
        return CocoKeypoints(ann, images, spec, det_file=dcfg.det_file or None,
                             det_score_thr=dcfg.det_score_thr, **common)
    coco = load_coco(ann, spec)
    kept, held = split_image_ids(coco.getImgIds(), dcfg.select_fraction, dcfg.synthetic_seed,
                                 dcfg.select_max_images)
    return CocoKeypoints(ann, images, spec, image_ids=kept if split == "train" else held,
                         **common)


def _mpii_split(dcfg: Any, split: str, ann: str, images: str, spec: Any,
                common: dict) -> MpiiKeypoints:
    if split == "report":
        ds = MpiiKeypoints(ann, images, spec, **common)
        if dcfg.report_headboxes:
            ds.headboxes = load_headboxes(dcfg.report_headboxes, len(ds))
        return ds
    full = MpiiKeypoints(ann, images, spec, **{**common, "train": False})
    idx = mpii_split_indices(full, split, dcfg.select_fraction, dcfg.synthetic_seed,
                             dcfg.select_max_images)
    ds = MpiiKeypoints(ann, images, spec, indices=idx, **common)
    if split == "select":
        # selection on MPII train uses PCK normalised by a head box estimated from the
        # head-top / upper-neck segment (train has no official head boxes in the json)
        ds.headboxes = estimated_headboxes(ds)
    return ds


def mpii_split_indices(full: MpiiKeypoints, split: str, fraction: float, seed: int,
                       max_images: int = 0) -> list[int]:
    """Record indices of the train or select split, held out by image: every person of an
    image falls on the same side, so no image gives persons to both training and selection
    (``select_max_images`` counts images, as for COCO)."""
    image_of = [r.image_path for r in full.records]
    number = {name: i for i, name in enumerate(sorted(set(image_of)))}
    kept, held = split_image_ids(range(len(number)), fraction, seed, max_images)
    side = set(kept if split == "train" else held)
    return [i for i, name in enumerate(image_of) if number[name] in side]


def estimated_headboxes(ds: MpiiKeypoints) -> np.ndarray:
    """Head boxes whose 0.6 x diagonal equals the upper-neck to head-top distance."""
    boxes = []
    for r in ds.records:
        d = float(np.linalg.norm(r.joints[9, :2] - r.joints[8, :2])) or 1.0
        side = d / (0.6 * np.sqrt(2))
        cx, cy = r.joints[9, :2]
        boxes.append([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
    return np.asarray(boxes)
