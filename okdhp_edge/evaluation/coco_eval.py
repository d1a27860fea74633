"""COCO keypoint AP/AR through pycocotools, with top-down rescoring and OKS-NMS."""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from typing import Optional

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from okdhp_edge.evaluation.uncertainty import UnitResults, coco_units

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def oks_iou(g: np.ndarray, ds: np.ndarray, area_g: float, areas_d: np.ndarray,
            sigmas: np.ndarray) -> np.ndarray:
    """OKS between one pose ``g`` [K, 3] and poses ``ds`` [M, K, 3] (used for NMS only)."""
    var = (2 * sigmas) ** 2
    dx = ds[:, :, 0] - g[None, :, 0]
    dy = ds[:, :, 1] - g[None, :, 1]
    e = (dx**2 + dy**2) / var[None] / ((area_g + areas_d[:, None]) / 2 + np.spacing(1)) / 2
    return np.exp(-e).mean(1)


def oks_nms(poses: np.ndarray, scores: np.ndarray, areas: np.ndarray, thr: float,
            sigmas: np.ndarray) -> list[int]:
    """Greedy NMS by OKS: indices of the kept poses, best first."""
    order = list(np.argsort(-scores))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        if not order:
            break
        rest = np.array(order)
        ious = oks_iou(poses[i], poses[rest], areas[i], areas[rest], sigmas)
        order = [j for j, o in zip(rest.tolist(), ious) if o <= thr]
    return keep


def make_results(
    image_ids: np.ndarray, coords: np.ndarray, maxvals: np.ndarray, box_scores: np.ndarray,
    areas: np.ndarray, sigmas: np.ndarray, rescore_thr: float = 0.2,
    nms_thr: float | None = 0.9,
) -> list[dict]:
    """COCO results from top-down predictions.

    Score = box score x mean confidence of the joints above ``rescore_thr``; then OKS-NMS
    per image when ``nms_thr`` is given (detector boxes).

    Shape: coords [N, K, 2] image px, maxvals [N, K], the rest [N].
    """
    per_image: dict[int, list[int]] = defaultdict(list)
    for i, img in enumerate(image_ids):
        per_image[int(img)].append(i)
    results = []
    for img, idxs in per_image.items():
        idxs = np.array(idxs)
        conf = maxvals[idxs]
        mask = conf > rescore_thr
        kpt_score = np.where(mask.sum(1) > 0, (conf * mask).sum(1) / np.maximum(mask.sum(1), 1),
                             0.0)
        scores = kpt_score * box_scores[idxs]
        poses = np.concatenate([coords[idxs], conf[..., None]], -1)
        keep = range(len(idxs))
        if nms_thr is not None and len(idxs) > 1:
            keep = oks_nms(poses, scores, areas[idxs], nms_thr, sigmas)
        for j in keep:
            kp = np.concatenate([coords[idxs[j]], conf[j][:, None]], 1).reshape(-1)
            results.append({
                "image_id": img, "category_id": 1,
                "keypoints": [round(float(v), 3) for v in kp], "score": float(scores[j]),
            })
    return results


def coco_keypoint_eval(coco_gt: COCO, results: list[dict], image_ids=None,
                       sigmas: np.ndarray | None = None) -> dict[str, float]:
    """Run ``COCOeval(iouType='keypoints')`` and return its 10 stats by name."""
    return coco_keypoint_eval_units(coco_gt, results, image_ids, sigmas)[0]


def coco_keypoint_eval_units(coco_gt: COCO, results: list[dict], image_ids=None,
                             sigmas: np.ndarray | None = None
                             ) -> tuple[dict[str, float], Optional[UnitResults]]:
    """:func:`coco_keypoint_eval` and the per-image results its AP is recomputed from on
    a bootstrap resample (None without any result: AP is 0 on every resample)."""
    if not results:
        return {k: 0.0 for k in STAT_NAMES}, None
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(STAT_NAMES, ev.stats)}, coco_units(ev)
