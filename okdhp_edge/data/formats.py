"""Dataset formats: one row per format, as families and targets are, read by training,
evaluation, planning, bundles and the config. No torch; readers are imported when used.

A format row names its keypoint spec, the headline metric of its report split, its reader
module and what its report split needs (head boxes, person detections). A reader module
holds a :class:`~okdhp_edge.data.dataset.TopDownDataset` subclass and three functions:
``image_files(ann)`` (the images an annotation file names), ``hold_out(ann, images, spec,
common, split, rule)`` (the training or selection split under a
:class:`~okdhp_edge.data.splits.HoldOut`) and, where the report needs them,
``load_headboxes(path, count)``. Adding a format is one reader module plus one row here
(and, for a metric of its own, one scorer in
:data:`okdhp_edge.evaluation.inference.SCORERS`).

:func:`make_split` is the one split builder: training, selection, evaluation, calibration
and manifests all build their datasets through it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Optional

from okdhp_edge.data.errors import DataError
from okdhp_edge.data.keypoints import COCO_17, MPII_16, KeypointSpec
from okdhp_edge.data.splits import HoldOut

SPLITS = ("train", "select", "report")


@dataclass(frozen=True)
class DatasetFormat:
    """What the kit knows of one dataset format."""

    name: str  # data.dataset
    spec: KeypointSpec
    metric: str  # the headline metric of its report split
    reader: str  # module:Class of its TopDownDataset (the module holds its functions)
    scorer: str  # its metric's scorer in okdhp_edge.evaluation.inference.SCORERS
    generated: bool = False  # written under data.root by okdhp_edge.data.synthetic
    detections: bool = False  # its report split can take person detections (data.det_file)
    headboxes: bool = False  # its report split is scored against head boxes (a file)

    def module(self) -> ModuleType:
        return importlib.import_module(self.reader.split(":")[0])

    def reader_class(self) -> Any:
        return getattr(self.module(), self.reader.split(":")[1])


DATASET_FORMATS = {f.name: f for f in (
    DatasetFormat("coco", COCO_17, "AP", "okdhp_edge.data.coco:CocoKeypoints", "coco_ap",
                  detections=True),
    DatasetFormat("synthetic", COCO_17, "AP", "okdhp_edge.data.coco:CocoKeypoints", "coco_ap",
                  generated=True, detections=True),
    DatasetFormat("mpii", MPII_16, "PCKh@0.5", "okdhp_edge.data.mpii:MpiiKeypoints", "pckh",
                  headboxes=True),
)}


def format_of(dataset: Any) -> DatasetFormat:
    """The row a dataset was read by: the one whose reader is the dataset's class (rows
    sharing a reader share its metric and scorer)."""
    path = f"{type(dataset).__module__}:{type(dataset).__name__}"
    for row in DATASET_FORMATS.values():
        if row.reader == path:
            return row
    raise DataError(f"no dataset format reads {path}")


def dataset_format(name: str) -> DatasetFormat:
    """The row of ``name``; ValueError naming the known ones."""
    try:
        return DATASET_FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown dataset '{name}'; expected one of "
                         f"{sorted(DATASET_FORMATS)}") from None


def get_spec(dataset: str) -> KeypointSpec:
    """The keypoint spec of a dataset format."""
    return dataset_format(dataset).spec


def make_split(dataset: str, split: str, ann: str, images: str, common: dict[str, Any],
               rule: Optional[HoldOut] = None, headboxes: str = "", det_file: str = "",
               det_thr: float = 0.0) -> Any:
    """The dataset of one split of a format. ``common``: the reader's crop, target and
    augmentation arguments. ``train``/``select`` are held out of the training file ``ann``
    by ``rule``; ``report`` reads ``ann`` whole (with ``det_file`` person boxes where the
    format takes them, and ``headboxes`` where it is scored against them). An empty split,
    or a report split without the head boxes it needs, is a DataError."""
    from okdhp_edge.data.dataset import require_persons

    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; expected one of {SPLITS}")
    fmt = dataset_format(dataset)
    if not ann:
        raise DataError(f"no annotation file for the {split} split of dataset '{dataset}'")
    if split != "report":
        if rule is None:
            raise ValueError(f"the {split} split needs a hold-out rule")
        ds = fmt.module().hold_out(ann, images, fmt.spec, common, split, rule)
        return require_persons(ds, f"{ann} ({split} split)")
    extra = {"det_file": det_file or None, "det_score_thr": det_thr} if fmt.detections else {}
    ds = require_persons(fmt.reader_class()(ann, images, fmt.spec, **extra, **common),
                         f"{ann} (report split)")
    if fmt.headboxes:
        if not headboxes:
            raise DataError(f"{dataset} evaluation needs head boxes (data.report_headboxes: "
                            "gt_valid.mat or a head-box json)")
        ds.headboxes = fmt.module().load_headboxes(headboxes, len(ds))  # one per person
    return ds


def image_files(dataset: str, ann: str | Path) -> list[str]:
    """The image files an annotation file of ``dataset`` names (what a bundle copies)."""
    return dataset_format(dataset).module().image_files(ann)
