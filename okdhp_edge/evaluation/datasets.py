"""Datasets a student is measured or calibrated on, rebuilt from its manifest (no torch).

The report split comes from the manifest's ``accuracy`` block; the training and selection
splits from ``provenance.splits`` (the annotation file and the hold-out rule of the run
that trained it). Every split is built by :func:`okdhp_edge.data.formats.make_split`, as in
training, with the preprocessing the student records.
"""

from __future__ import annotations

from typing import Any, Optional

from okdhp_edge.data.dataset import TopDownDataset
from okdhp_edge.data.errors import DataError
from okdhp_edge.data.formats import make_split
from okdhp_edge.data.splits import HoldOut
from okdhp_edge.records import Preprocessing, StudentManifest


def reader_args(pre: Preprocessing) -> dict[str, Any]:
    """Reader arguments from a manifest's preprocessing (no augmentation)."""
    return dict(input_size=tuple(pre.input_size), stride=pre.heatmap_stride, sigma=pre.sigma,
                box_padding=pre.box_padding, mean=tuple(pre.mean), std=tuple(pre.std))


def build_eval_dataset(dataset: str, ann: str, images: str, reader_args: dict[str, Any],
                       headboxes: str = "", det_file: str = "",
                       det_thr: float = 0.0) -> TopDownDataset:
    """A report-mode dataset (no augmentation) from explicit paths; ``reader_args``: crop
    and target settings (``input_size``, ``sigma``...; a student's come from
    :func:`reader_args`)."""
    return make_split(dataset, "report", ann, images, reader_args, headboxes=headboxes,
                      det_file=det_file, det_thr=det_thr)


def report_dataset(manifest: StudentManifest, dataset: Optional[str] = None, ann: str = "",
                   images: str = "", headboxes: str = "") -> TopDownDataset:
    """The report split named in a student/bundle manifest (any field overridable), with
    the manifest's preprocessing."""
    acc = manifest.accuracy
    return build_eval_dataset(dataset or acc.dataset, ann or acc.ann, images or acc.images,
                              reader_args(manifest.preprocessing), headboxes or acc.headboxes)


def training_split(manifest: StudentManifest, split: str) -> TopDownDataset:
    """The ``train`` or ``select`` split of the run that trained a student, without
    augmentation, with the student's preprocessing: calibration crops come from ``train``,
    accuracy-controlled quantization measures on ``select`` (never on the report split).

    Raises:
        DataError: the manifest records no training data (schema 1), or it is unreadable.
    """
    if split not in ("train", "select"):
        raise ValueError(f"split must be train or select, got {split!r}")
    sp = manifest.provenance.splits
    if not sp:
        raise DataError(f"student '{manifest.name}': its manifest records no training "
                        "split (written before schema 2): retrain it, or give the data")
    return make_split(sp["dataset"], split, sp["train_ann"], sp["train_images"],
                      reader_args(manifest.preprocessing), HoldOut.of_record(sp))
