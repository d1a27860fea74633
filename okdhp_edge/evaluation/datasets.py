"""Datasets a student is measured or calibrated on, rebuilt from its manifest (no torch).

The report split comes from the manifest's ``accuracy`` block; the training and selection
splits from ``provenance.splits`` (the annotation file and the hold-out rule of the run
that trained it), through the same split rule as training (:mod:`okdhp_edge.data.build`).
"""

from __future__ import annotations

from typing import Any, Optional

from okdhp_edge.data.coco import CocoKeypoints, load_coco, split_image_ids
from okdhp_edge.data.dataset import TopDownDataset, require_persons
from okdhp_edge.data.errors import DataError
from okdhp_edge.data.keypoints import get_spec
from okdhp_edge.data.mpii import MpiiKeypoints, load_headboxes
from okdhp_edge.records import StudentManifest


def build_eval_dataset(dataset: str, ann: str, images: str, input_size: tuple[int, int],
                       stride: int = 4, sigma: float = 2.0, headboxes: str = "",
                       det_file: str = "", det_thr: float = 0.0,
                       box_padding: float = 1.25) -> TopDownDataset:
    """A report-mode dataset (no augmentation) from explicit paths."""
    spec = get_spec(dataset)
    common: dict[str, Any] = dict(input_size=input_size, stride=stride, sigma=sigma,
                                  box_padding=box_padding)
    if dataset == "mpii":
        if not headboxes:
            raise DataError("MPII evaluation needs head boxes (gt_valid.mat or a json)")
        ds = require_persons(MpiiKeypoints(ann, images, spec, **common), ann)
        ds.headboxes = load_headboxes(headboxes, len(ds))  # counted against the persons
        return ds
    return require_persons(CocoKeypoints(ann, images, spec, det_file=det_file or None,
                                         det_score_thr=det_thr, **common), ann)


def report_dataset(manifest: StudentManifest, dataset: Optional[str] = None, ann: str = "",
                   images: str = "", headboxes: str = "") -> TopDownDataset:
    """The report split named in a student/bundle manifest (any field overridable), with
    the manifest's preprocessing."""
    acc, pre = manifest.accuracy, manifest.preprocessing
    return build_eval_dataset(dataset or acc.dataset, ann or acc.ann, images or acc.images,
                              tuple(pre.input_size), pre.heatmap_stride, pre.sigma,
                              headboxes or acc.headboxes, box_padding=pre.box_padding)


def training_split(manifest: StudentManifest, split: str) -> TopDownDataset:
    """The ``train`` or ``select`` split of the run that trained a student, without
    augmentation, with the student's preprocessing: calibration crops come from ``train``,
    accuracy-controlled quantization measures on ``select`` (never on the report split).

    Raises:
        DataError: the manifest records no training data (schema 1), or it is unreadable.
    """
    if split not in ("train", "select"):
        raise ValueError(f"split must be train or select, got {split!r}")
    sp, pre = manifest.provenance.splits, manifest.preprocessing
    if not sp:
        raise DataError(f"student '{manifest.name}': its manifest records no training "
                        "split (written before schema 2): retrain it, or give the data")
    common: dict[str, Any] = dict(input_size=tuple(pre.input_size), stride=pre.heatmap_stride,
                                  sigma=pre.sigma, box_padding=pre.box_padding)
    spec = get_spec(sp["dataset"])
    if sp["dataset"] == "mpii":
        from okdhp_edge.data.build import estimated_headboxes, mpii_split_indices

        full = MpiiKeypoints(sp["train_ann"], sp["train_images"], spec, **common)
        idx = mpii_split_indices(full, split, sp["select_fraction"], sp["split_seed"],
                                 sp["select_max_images"])
        ds: TopDownDataset = MpiiKeypoints(sp["train_ann"], sp["train_images"], spec,
                                           indices=idx, **common)
        ds.headboxes = estimated_headboxes(ds)  # as training's selection split scores
    else:
        coco = load_coco(sp["train_ann"], spec)
        kept, held = split_image_ids(coco.getImgIds(), sp["select_fraction"],
                                     sp["split_seed"], sp["select_max_images"])
        ds = CocoKeypoints(sp["train_ann"], sp["train_images"], spec,
                           image_ids=kept if split == "train" else held, **common)
    return require_persons(ds, f"{sp['train_ann']} ({split} split)")
