"""Image + person box -> keypoints with any runner: the same crop, normalisation and
decoding as training and evaluation (numpy + OpenCV only)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from okdhp_edge.backends.base import Runner
from okdhp_edge.data.codec import HeatmapCodec
from okdhp_edge.data.keypoints import flip_permutation
from okdhp_edge.data.transforms import box_to_center_scale, crop
from okdhp_edge.records import BundleManifest, Preprocessing


class KeypointPipeline:
    """Top-down inference around a runner.

    Args:
        runner: a loaded :class:`Runner`.
        preprocessing: the preprocessing record of a student or bundle manifest.
        manifest: the bundle manifest it was loaded from, if any.
        layout: the model file's input layout, ``NCHW`` or ``NHWC`` (the runner is fed so).
    """

    def __init__(self, runner: Runner, preprocessing: Preprocessing,
                 manifest: Optional[BundleManifest] = None, layout: str = "NCHW") -> None:
        self.runner = runner
        self.manifest = manifest
        self.nhwc = layout == "NHWC"
        self.input_size = tuple(preprocessing.input_size)
        self.mean = np.asarray(preprocessing.mean, np.float32)
        self.std = np.asarray(preprocessing.std, np.float32)
        self.padding = float(preprocessing.box_padding)
        self.codec = HeatmapCodec(self.input_size, preprocessing.heatmap_stride,
                                  float(preprocessing.sigma))
        pairs = preprocessing.flip_pairs
        self.flip_index: Optional[np.ndarray] = (
            flip_permutation(pairs, max(max(p) for p in pairs) + 1) if pairs else None)
        w, h = self.input_size
        self._buf = np.zeros((1, h, w, 3) if self.nhwc else (1, 3, h, w), np.float32)

    def preprocess(self, image: np.ndarray, box: tuple[float, float, float, float]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RGB uint8 image + xywh box -> (input [1, 3, H, W] float32, or [1, H, W, 3] for an
        NHWC model, center, scale)."""
        center, scale = box_to_center_scale(box, self.input_size[0] / self.input_size[1],
                                            self.padding)
        patch, _ = crop(image, center, scale, 0.0, self.input_size)
        x = (patch.astype(np.float32) * (1.0 / 255.0) - self.mean) / self.std
        self._buf[0] = x if self.nhwc else x.transpose(2, 0, 1)
        return self._buf, center, scale

    def __call__(self, image: np.ndarray, box: tuple[float, float, float, float],
                 flip: bool = False) -> np.ndarray:
        """Keypoints [K, 3] (x, y, confidence) in image pixels.

        Shape: image [H, W, 3] RGB uint8; box (x, y, w, h).
        """
        x, center, scale = self.preprocess(image, box)
        hm = np.asarray(self.runner.run(x), np.float32)
        if flip and self.flip_index is not None:
            mirrored = x[:, :, ::-1] if self.nhwc else x[..., ::-1]
            fl = np.asarray(self.runner.run(np.ascontiguousarray(mirrored)), np.float32)
            hm = 0.5 * (hm + HeatmapCodec.flip_back(fl, self.flip_index))
        coords, maxvals = self.codec.decode_to_image(hm, center[None], scale[None])
        return np.concatenate([coords[0], maxvals[0][:, None]], 1).astype(np.float32)
