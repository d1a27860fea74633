"""A model file's heatmaps against a reference's: the figures a parity is judged on, and
the bounds of each precision (:data:`okdhp_edge.targets.TOLERANCE`). Numpy only: the export
compares a file with the student in PyTorch, ``okdhp bench parity`` one device's run of a
bundle with another's."""

from __future__ import annotations

import numpy as np

from okdhp_edge.data.codec import HeatmapCodec

# joints the reference detects (peak above the evaluation's rescoring threshold): where the
# fp32 heatmap has no peak, its argmax is noise and a displacement there measures nothing
PARITY_MIN_PEAK = 0.2
# the spread of a file's heatmaps against the reference's (std ratio) stays within these: an
# output that collapsed (LiteRT ran ai-edge-quantizer's INT8 file of an untrained MobileNetV2
# student to all zeros, within the INT8 error tolerance of its small heatmaps) fails
PARITY_STD_RATIO = (0.5, 2.0)


def parity(reference: np.ndarray, other: np.ndarray, stride: int) -> dict[str, float]:
    """Max heatmap error, the displacement of the decoded keypoints (input pixels) over the
    joints the reference detects (``joints_compared`` of them), and the ratio of the
    heatmaps' standard deviations (other / reference: 1 when the spread is kept).

    Shape: reference, other [N, K, h, w].
    """
    c_ref, m_ref = HeatmapCodec.decode(reference)
    c_oth, _ = HeatmapCodec.decode(other)
    disp = np.linalg.norm((c_ref - c_oth) * stride, axis=-1)[m_ref > PARITY_MIN_PEAK]
    spread = float(reference.std())
    return {"max_abs_heatmap_err": float(np.abs(reference - other).max()),
            "std_ratio": float(other.std()) / spread if spread > 0 else 1.0,
            "mean_kpt_disp_px": float(disp.mean()) if disp.size else 0.0,
            "max_kpt_disp_px": float(disp.max()) if disp.size else 0.0,
            "joints_compared": int(disp.size)}
