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

from okdhp_edge.data.dataset import TopDownDataset
from okdhp_edge.data.errors import DataError
from okdhp_edge.data.formats import dataset_format, make_split
from okdhp_edge.data.splits import HoldOut
from okdhp_edge.data.transforms import AugmentParams

log = logging.getLogger(__name__)


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
    paths = data_paths(dcfg)
    return {"dataset": dcfg.dataset, "train_ann": paths["train_ann"],
            "train_images": paths["train_images"], **HoldOut.of_config(dcfg).record()}


def data_paths(dcfg: Any) -> dict[str, str]:
    """The annotation files and image folders of a DataConfig's training and report data
    (under ``data.root`` for a generated format)."""
    if dataset_format(dcfg.dataset).generated:
        return {k: str(v) for k, v in synthetic_paths(dcfg.root).items()}
    return {k: getattr(dcfg, k) for k in ("train_ann", "train_images", "report_ann",
                                          "report_images")}


def common_args(dcfg: Any, train: bool, seed: int) -> dict[str, Any]:
    """The reader arguments a DataConfig sets: crop, targets, normalisation, augmentation."""
    return dict(
        input_size=tuple(dcfg.input_size), stride=dcfg.heatmap_stride, sigma=dcfg.sigma,
        train=train, bad_image=dcfg.bad_image, seed=seed, box_padding=dcfg.box_padding,
        mean=tuple(dcfg.mean), std=tuple(dcfg.std),
        augment=AugmentParams(dcfg.scale_factor, dcfg.rot_factor, dcfg.rot_prob,
                              dcfg.flip_prob, dcfg.half_body_prob),
    )


def build_split(dcfg: Any, split: str, train_mode: bool | None = None,
                seed: int = 0) -> TopDownDataset:
    """The dataset of one split (:func:`okdhp_edge.data.formats.make_split`).
    ``train_mode`` (default: split == 'train') turns on augmentation and the bad-image
    policy. An empty split is a DataError."""
    if dataset_format(dcfg.dataset).generated:
        ensure_synthetic(dcfg)
    paths = data_paths(dcfg)
    key = "report" if split == "report" else "train"
    if not paths[f"{key}_ann"]:
        raise DataError(f"data.{key}_ann is not set for dataset '{dcfg.dataset}'")
    common = common_args(dcfg, (split == "train") if train_mode is None else train_mode, seed)
    return make_split(dcfg.dataset, split, paths[f"{key}_ann"], paths[f"{key}_images"], common,
                      HoldOut.of_config(dcfg), headboxes=dcfg.report_headboxes,
                      det_file=dcfg.det_file, det_thr=dcfg.det_score_thr)
