"""Heatmap codec: Gaussian targets, argmax decoding, flip test, back-projection.

Coordinates: an input pixel x maps to heatmap coordinate x / stride. Decoded heatmap
coordinates go back to the original image through the inverse crop affine computed for
the heatmap size, as in the HRNet codebase.
"""

from __future__ import annotations

import numpy as np

from okdhp_edge.data.transforms import affine_points, get_affine_transform


class HeatmapCodec:
    """Encode joints to Gaussian heatmaps and decode heatmaps to joints.

    Args:
        input_size: network input (w, h).
        stride: input pixels per heatmap pixel.
        sigma: Gaussian standard deviation in heatmap pixels.
        subpixel: centre each Gaussian at the exact (sub-pixel) joint position. With
            False, the centre is rounded to the nearest heatmap pixel (released code).
    """

    def __init__(
        self, input_size: tuple[int, int], stride: int = 4, sigma: float = 2.0,
        subpixel: bool = True,
    ) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.stride = int(stride)
        self.heatmap_size = (self.input_size[0] // self.stride, self.input_size[1] // self.stride)
        self.sigma = float(sigma)
        self.subpixel = subpixel
        w, h = self.heatmap_size
        self._xs = np.arange(w, dtype=np.float32)
        self._ys = np.arange(h, dtype=np.float32)

    def encode(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian targets for joints in input-pixel coordinates.

        Shape:
            joints: [K, 3] (x, y, visibility) in input pixels.
            returns: heatmaps [K, h, w] float32 (peak 1), target weights [K] float32.

        A joint gets weight 0 when it is unlabelled (visibility 0) or when its
        3-sigma square lies wholly outside the heatmap.
        """
        k = joints.shape[0]
        w, h = self.heatmap_size
        heatmaps = np.zeros((k, h, w), np.float32)
        weights = (joints[:, 2] > 0).astype(np.float32)
        radius = 3 * self.sigma
        for j in range(k):
            if weights[j] == 0:
                continue
            mu_x = joints[j, 0] / self.stride
            mu_y = joints[j, 1] / self.stride
            if not self.subpixel:
                mu_x, mu_y = np.floor(mu_x + 0.5), np.floor(mu_y + 0.5)
            if mu_x + radius < 0 or mu_y + radius < 0 or mu_x - radius >= w or mu_y - radius >= h:
                weights[j] = 0.0
                continue
            gx = np.exp(-((self._xs - mu_x) ** 2) / (2 * self.sigma**2))
            gy = np.exp(-((self._ys - mu_y) ** 2) / (2 * self.sigma**2))
            gx[np.abs(self._xs - mu_x) > radius] = 0
            gy[np.abs(self._ys - mu_y) > radius] = 0
            heatmaps[j] = np.outer(gy, gx)
        return heatmaps, weights

    @staticmethod
    def decode(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Argmax decoding with the quarter-pixel shift toward the higher neighbour.

        Shape:
            heatmaps: [N, K, h, w].
            returns: coords [N, K, 2] in heatmap pixels, maxvals [N, K].
        """
        hm = np.asarray(heatmaps, dtype=np.float32)
        n, k, h, w = hm.shape
        flat = hm.reshape(n, k, -1)
        idx = flat.argmax(-1)
        maxvals = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
        xs = (idx % w).astype(np.int64)
        ys = (idx // w).astype(np.int64)
        coords = np.stack([xs, ys], -1).astype(np.float32)
        ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
        inner_x = (xs > 0) & (xs < w - 1)
        inner_y = (ys > 0) & (ys < h - 1)
        dx = hm[ni, ki, ys, np.clip(xs + 1, 0, w - 1)] - hm[ni, ki, ys, np.clip(xs - 1, 0, w - 1)]
        dy = hm[ni, ki, np.clip(ys + 1, 0, h - 1), xs] - hm[ni, ki, np.clip(ys - 1, 0, h - 1), xs]
        coords[..., 0] += np.where(inner_x, np.sign(dx) * 0.25, 0.0)
        coords[..., 1] += np.where(inner_y, np.sign(dy) * 0.25, 0.0)
        coords[maxvals <= 0] = 0.0  # HRNet: non-positive maxima give no location
        return coords, maxvals

    @staticmethod
    def flip_back(heatmaps: np.ndarray, flip_index: np.ndarray, shift: bool = True) -> np.ndarray:
        """Undo a horizontal flip of the input on its heatmaps [N, K, h, w].

        Mirrors the width axis, swaps left/right channels and, with ``shift``, moves the
        result one pixel right (the released flip-test alignment).
        """
        out = heatmaps[:, flip_index, :, ::-1]
        if shift:
            out = np.concatenate([out[..., :1], out[..., :-1]], axis=-1)
        return np.ascontiguousarray(out)

    def to_image(
        self, coords: np.ndarray, centers: np.ndarray, scales: np.ndarray
    ) -> np.ndarray:
        """Back-project heatmap coordinates through the inverse crop affine.

        Shape:
            coords: [N, K, 2] heatmap pixels; centers, scales: [N, 2].
            returns: [N, K, 2] original-image pixels.
        """
        out = np.zeros_like(coords, dtype=np.float64)
        for i in range(coords.shape[0]):
            inv = get_affine_transform(centers[i], scales[i], 0.0, self.heatmap_size, inv=True)
            out[i] = affine_points(coords[i], inv)
        return out

    def decode_to_image(
        self, heatmaps: np.ndarray, centers: np.ndarray, scales: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode [N, K, h, w] heatmaps to image coordinates [N, K, 2] and maxvals [N, K]."""
        coords, maxvals = self.decode(heatmaps)
        return self.to_image(coords, centers, scales), maxvals
