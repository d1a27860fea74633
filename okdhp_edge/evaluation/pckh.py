"""MPII PCKh (head-normalised probability of correct keypoint)."""

from __future__ import annotations

import numpy as np

from okdhp_edge.data.keypoints import MPII_16, KeypointSpec

SC_BIAS = 0.6


def head_normalised_distance(pred: np.ndarray, gt: np.ndarray, headboxes: np.ndarray
                             ) -> np.ndarray:
    """Distance of each joint to its ground truth in head sizes (0.6 x the head box
    diagonal): pred, gt [N, K, 2] pixels, headboxes [N, 4] (x1, y1, x2, y2) -> [N, K]."""
    hb = np.asarray(headboxes, np.float64)
    head = SC_BIAS * np.linalg.norm(hb[:, 2:] - hb[:, :2], axis=1)  # [N]
    if not np.all(np.isfinite(head) & (head > 0)):
        raise ValueError(f"{int((~(np.isfinite(head) & (head > 0))).sum())} head boxes are "
                         "non-finite or of zero size: PCKh is undefined for them")
    diff = np.asarray(pred, np.float64) - np.asarray(gt, np.float64)
    return np.linalg.norm(diff, axis=-1) / head[:, None]


def pckh_joints(spec: KeypointSpec = MPII_16) -> np.ndarray:
    """[K] bool: the joints the PCKh mean counts (the pelvis and thorax are left out)."""
    include = np.ones(spec.num_joints, bool)
    include[list(spec.pckh_exclude)] = False
    return include


def pckh(
    pred: np.ndarray,
    gt: np.ndarray,
    visible: np.ndarray,
    headboxes: np.ndarray,
    thresholds: tuple[float, ...] = (0.5, 0.1),
    spec: KeypointSpec = MPII_16,
) -> dict:
    """PCKh at each threshold, per joint and as the mean over joints not excluded.

    Shape:
        pred, gt: [N, K, 2] pixels (same convention); visible: [N, K] bool;
        headboxes: [N, 4] (x1, y1, x2, y2).
    Returns:
        {"PCKh@0.5": mean %, "PCKh@0.5_per_joint": {name: %}, ...}
    """
    vis = np.asarray(visible, bool)
    dist = head_normalised_distance(pred, gt, headboxes)
    count = vis.sum(0)  # [K]
    include = pckh_joints(spec)
    out: dict = {}
    for thr in thresholds:
        hit = ((dist <= thr) & vis).sum(0)
        per = np.where(count > 0, 100.0 * hit / np.maximum(count, 1), np.nan)
        weights = count * include
        mean = float((per[include & (count > 0)] * weights[include & (count > 0)]).sum()
                     / max(weights.sum(), 1))
        out[f"PCKh@{thr}"] = mean
        out[f"PCKh@{thr}_per_joint"] = {n: (None if np.isnan(v) else float(v))
                                        for n, v in zip(spec.joints, per)}
    return out


def pckh_table(result: dict, thr: float = 0.5, spec: KeypointSpec = MPII_16) -> str:
    """A Markdown per-joint table in the usual MPII grouping."""
    per = result[f"PCKh@{thr}_per_joint"]
    groups = [("Head", ["head_top"]), ("Shoulder", ["l_shoulder", "r_shoulder"]),
              ("Elbow", ["l_elbow", "r_elbow"]), ("Wrist", ["l_wrist", "r_wrist"]),
              ("Hip", ["l_hip", "r_hip"]), ("Knee", ["l_knee", "r_knee"]),
              ("Ankle", ["l_ankle", "r_ankle"])]
    cells = []
    for _, names in groups:
        vals = [per[n] for n in names if per.get(n) is not None]
        cells.append(f"{np.mean(vals):.2f}" if vals else "-")
    head = "| " + " | ".join(g for g, _ in groups) + f" | Mean@{thr} |"
    sep = "|" + "---|" * (len(groups) + 1)
    row = "| " + " | ".join(cells) + f" | {result[f'PCKh@{thr}']:.2f} |"
    return "\n".join([head, sep, row])
