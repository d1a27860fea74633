"""Dataset-level inference and scoring, independent of the engine (torch, ONNX, ...).

An engine is any function ``images [N, 3, H, W] float32 -> heatmaps [N, K, h, w]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import numpy as np

from okdhp_edge.data.codec import HeatmapCodec
from okdhp_edge.data.dataset import TopDownDataset, collate_skip_none
from okdhp_edge.data.errors import DataError
from okdhp_edge.data.formats import format_of
from okdhp_edge.evaluation.coco_eval import coco_keypoint_eval_units, make_results
from okdhp_edge.evaluation.pckh import head_normalised_distance, pckh, pckh_joints
from okdhp_edge.evaluation.uncertainty import UnitResults, pckh_units

log = logging.getLogger(__name__)

Engine = Callable[[np.ndarray], np.ndarray]
Heatmaps = Union[np.ndarray, dict[str, np.ndarray]]


def with_flip_test(engine: Callable[[np.ndarray], Heatmaps], flip_index: np.ndarray,
                   shift: bool = True) -> Callable[[np.ndarray], Heatmaps]:
    """Average the heatmaps of the input and of its mirror image (flipped back).

    ``engine`` maps images [N, 3, H, W] to heatmaps [N, K, h, w], or to a dict of such
    (one per head of a multi-branch network); the result has the same form.
    """

    def merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return 0.5 * (np.asarray(a, np.float32)
                      + HeatmapCodec.flip_back(np.asarray(b, np.float32), flip_index, shift))

    def run(images: np.ndarray) -> Heatmaps:
        out = engine(images)
        flipped = engine(np.ascontiguousarray(images[..., ::-1]))
        if isinstance(out, dict):
            return {k: merge(v, flipped[k]) for k, v in out.items()}
        return merge(out, flipped)

    return run


def iterate_batches(dataset: TopDownDataset, batch_size: int) -> Iterator[dict[str, Any]]:
    """Sequential batches of a dataset without torch."""
    for start in range(0, len(dataset), batch_size):
        yield collate_skip_none([dataset[i] for i in range(start, min(start + batch_size,
                                                                        len(dataset)))])


@dataclass
class Predictions:
    """Decoded keypoints for dataset records ``index`` (image pixels)."""

    index: np.ndarray  # [N]
    coords: np.ndarray  # [N, K, 2]
    maxvals: np.ndarray  # [N, K]


def predict(
    dataset: TopDownDataset,
    heatmap_fn: Callable[[dict[str, Any]], np.ndarray],
    batches: Optional[Iterable[dict[str, Any]]] = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Predictions:
    """Run ``heatmap_fn(batch) -> [N, K, h, w]`` over the dataset and decode to image px."""
    return predict_heads(dataset, lambda b: {"": heatmap_fn(b)}, batches, batch_size,
                         progress)[""]


def predict_heads(
    dataset: TopDownDataset,
    heads_fn: Callable[[dict[str, Any]], dict[str, np.ndarray]],
    batches: Optional[Iterable[dict[str, Any]]] = None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Predictions]:
    """Like :func:`predict` for a network with several heads: ``heads_fn(batch)`` gives
    ``{head: [N, K, h, w]}`` and every head is decoded to image pixels."""
    batches = batches if batches is not None else iterate_batches(dataset, batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=-(-len(dataset) // batch_size), desc="eval", leave=False)
    acc: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for batch in batches:
        if "image" not in batch:
            continue
        center, scale = np.asarray(batch["center"]), np.asarray(batch["scale"])
        for name, hm in heads_fn(batch).items():
            c, m = dataset.codec.decode_to_image(np.asarray(hm, np.float32), center, scale)
            acc.setdefault(name, []).append((np.asarray(batch["index"]), c, m))
    if not acc:
        k = dataset.spec.num_joints
        empty = Predictions(np.zeros(0, int), np.zeros((0, k, 2)), np.zeros((0, k)))
        return {"": empty}
    return {name: Predictions(*(np.concatenate([part[i] for part in parts]) for i in range(3)))
            for name, parts in acc.items()}


def engine_heatmap_fn(engine: Callable[[np.ndarray], Heatmaps],
                      flip_index: Optional[np.ndarray] = None) -> Callable:
    """``heatmap_fn`` for :func:`predict` (or ``heads_fn`` for :func:`predict_heads`, when
    the engine returns a dict of heads) from an engine, with flip test if ``flip_index``."""
    run = with_flip_test(engine, flip_index) if flip_index is not None else engine

    def fn(batch: dict[str, Any]) -> Heatmaps:
        return run(np.ascontiguousarray(batch["image"], dtype=np.float32))

    return fn


def oracle_heatmap_fn(dataset: TopDownDataset) -> Callable:
    """``heatmap_fn`` that encodes the ground truth itself: the codec's upper bound."""

    def fn(batch: dict[str, Any]) -> np.ndarray:
        return np.stack([dataset.codec.encode(j)[0] for j in np.asarray(batch["joints"])])

    return fn


def score(dataset: TopDownDataset, preds: Predictions, rescore_thr: float = 0.2,
          oks_nms_thr: float = 0.9, headboxes: Optional[np.ndarray] = None,
          subset: bool = False) -> dict[str, Any]:
    """Metrics of predictions: COCO AP/AR for COCO-style data, PCKh for MPII. With
    ``subset``, COCO AP counts only the images the predictions cover (a sample of the
    split); otherwise a person without a prediction is a miss."""
    return score_units(dataset, preds, rescore_thr, oks_nms_thr, headboxes, subset)[0]


def score_units(dataset: TopDownDataset, preds: Predictions, rescore_thr: float = 0.2,
                oks_nms_thr: float = 0.9, headboxes: Optional[np.ndarray] = None,
                subset: bool = False) -> tuple[dict[str, Any], Optional[UnitResults]]:
    """:func:`score` and the per-unit results (images for AP, persons for PCKh) its
    headline metric is recomputed from on a bootstrap resample."""
    if len(preds.index) == 0:
        raise DataError("no person to score: the split (or the sample of it) is empty")
    return SCORERS[format_of(dataset).scorer](dataset, preds, rescore_thr, oks_nms_thr,
                                              headboxes, subset)


def _coco_ap(dataset: Any, preds: Predictions, rescore_thr: float, oks_nms_thr: float,
             headboxes: Optional[np.ndarray], subset: bool
             ) -> tuple[dict[str, Any], Optional[UnitResults]]:
    """COCO keypoint AP (OKS), per image."""
    recs = [dataset.records[i] for i in preds.index]
    use_nms = any(str(r.record_id).startswith("det") for r in recs)
    results = make_results(
        np.array([r.image_id for r in recs]), preds.coords, preds.maxvals,
        np.array([r.score for r in recs]), np.array([r.area for r in recs]),
        np.asarray(dataset.spec.sigmas), rescore_thr, oks_nms_thr if use_nms else None,
    )
    ids = sorted({r.image_id for r in recs}) if subset else dataset.image_ids
    stats, units = coco_keypoint_eval_units(dataset.coco, results, ids,
                                            np.asarray(dataset.spec.sigmas))
    return {"metric": "AP", "value": stats["AP"], **stats}, units


def _pckh(dataset: Any, preds: Predictions, rescore_thr: float, oks_nms_thr: float,
          headboxes: Optional[np.ndarray], subset: bool
          ) -> tuple[dict[str, Any], Optional[UnitResults]]:
    """PCKh@0.5 against head boxes, per person."""
    if headboxes is None:
        raise ValueError("MPII scoring needs head boxes")
    gt = np.stack([dataset.records[i].joints for i in preds.index])
    hb = np.asarray(headboxes)[preds.index]
    vis = gt[..., 2] > 0
    res = pckh(preds.coords, gt[..., :2], vis, hb, spec=dataset.spec)
    hits = (head_normalised_distance(preds.coords, gt[..., :2], hb) <= 0.5) & vis
    units = pckh_units(hits, vis, pckh_joints(dataset.spec), preds.index)
    return {"metric": "PCKh@0.5", "value": res["PCKh@0.5"], **res}, units


# a dataset format's scorer (DatasetFormat.scorer) -> the function that scores it
SCORERS = {"coco_ap": _coco_ap, "pckh": _pckh}
