"""Top-down crop geometry and augmentation (numpy + OpenCV, no torch).

A person is described by a ``center`` (x, y) and a ``scale`` (w, h) in image pixels:
the box that is warped onto the network input. Rotation is in degrees,
counter-clockwise positive as in the HRNet codebase.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def box_to_center_scale(
    box: tuple[float, float, float, float], aspect_ratio: float, padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """Turn an ``xywh`` box into (center, scale) with the input's aspect ratio (w / h).

    The box is widened or heightened to the aspect ratio, then padded by ``padding``.
    """
    x, y, w, h = (float(v) for v in box)
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    scale = np.array([w * padding, h * padding], dtype=np.float32)
    return center, scale


def _rotate(point: np.ndarray, rad: float) -> np.ndarray:
    sn, cs = np.sin(rad), np.cos(rad)
    return np.array([point[0] * cs - point[1] * sn, point[0] * sn + point[1] * cs], np.float32)


def get_affine_transform(
    center: np.ndarray,
    scale: np.ndarray,
    rot: float,
    output_size: tuple[int, int],
    inv: bool = False,
) -> np.ndarray:
    """2x3 affine mapping the box (center, scale, rot) onto an ``output_size`` (w, h) image.

    With ``inv`` the inverse: output pixels back to image pixels.
    """
    src_w = float(scale[0])
    dst_w, dst_h = float(output_size[0]), float(output_size[1])
    rad = np.pi * rot / 180.0
    src_dir = _rotate(np.array([0.0, src_w * -0.5], np.float32), rad)
    dst_dir = np.array([0.0, dst_w * -0.5], np.float32)
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + src_dir
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = dst[0] + dst_dir
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    if inv:
        return cv2.getAffineTransform(dst, src)
    return cv2.getAffineTransform(src, dst)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.array([-d[1], d[0]], dtype=np.float32)


def affine_points(points: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to ``points`` of shape [..., 2]."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ trans[:, :2].T.astype(np.float64) + trans[:, 2].astype(np.float64)


def crop(
    image: np.ndarray, center: np.ndarray, scale: np.ndarray, rot: float, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Warp the person box of ``image`` (H, W, 3 uint8) to ``size`` (w, h).

    Returns the crop and the 2x3 affine used.
    """
    trans = get_affine_transform(center, scale, rot, size)
    out = cv2.warpAffine(image, trans, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR)
    return out, trans


@functools.lru_cache(maxsize=8)
def _normalize_lut(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 value -> normalised float32, per channel [3, 256]: one table lookup per pixel
    instead of three float passes and a transpose (3x faster on a 256x192 crop; the loader's
    second cost after JPEG decoding)."""
    return ((np.arange(256, dtype=np.float32)[None, :] / 255.0
             - np.asarray(mean, np.float32)[:, None])
            / np.asarray(std, np.float32)[:, None]).astype(np.float32)


def normalize(image: np.ndarray, mean: tuple[float, ...] = IMAGENET_MEAN,
              std: tuple[float, ...] = IMAGENET_STD) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> float32 [3, H, W]: (x / 255 - mean) / std per channel (the
    ``data.mean`` / ``data.std`` a student records in its preprocessing)."""
    lut = _normalize_lut(tuple(mean), tuple(std))
    return np.stack([lut[c][image[:, :, c]] for c in range(3)])


@dataclass
class AugmentParams:
    """Random scale / rotation / flip ranges (defaults: METHOD.md, MPII)."""

    scale_factor: float = 0.25
    rot_factor: float = 30.0
    rot_prob: float = 0.6
    flip_prob: float = 0.5
    half_body_prob: float = 0.0


def sample_augmentation(rng: np.random.Generator, p: AugmentParams) -> tuple[float, float, bool]:
    """Draw (scale multiplier, rotation degrees, flip) for one sample."""
    s = float(np.clip(1.0 + p.scale_factor * rng.standard_normal(), 1 - p.scale_factor,
                      1 + p.scale_factor))
    r = 0.0
    if rng.random() < p.rot_prob:
        r = float(np.clip(p.rot_factor * rng.standard_normal(), -2 * p.rot_factor,
                          2 * p.rot_factor))
    flip = bool(rng.random() < p.flip_prob)
    return s, r, flip


def flip_joints(
    joints: np.ndarray, width: float, flip_index: np.ndarray
) -> np.ndarray:
    """Mirror [K, 3] joints (x, y, vis) in an image of ``width`` and swap left/right."""
    out = joints[flip_index].copy()
    out[:, 0] = width - 1 - out[:, 0]
    return out


def half_body_box(
    joints: np.ndarray, upper: tuple[int, ...], rng: np.random.Generator, aspect_ratio: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Center and scale covering only the upper or the lower body, or None if too few joints."""
    vis = joints[:, 2] > 0
    if vis.sum() < 8:
        return None
    up = np.zeros(len(joints), bool)
    up[list(upper)] = True
    pick = up & vis if rng.random() < 0.5 else (~up) & vis
    if pick.sum() < 2:
        pick = up & vis if pick.sum() < 2 and (up & vis).sum() >= 2 else (~up) & vis
    if pick.sum() < 2:
        return None
    pts = joints[pick, :2]
    lo, hi = pts.min(0), pts.max(0)
    w, h = hi - lo
    center, scale = box_to_center_scale((lo[0], lo[1], w, h), aspect_ratio, 1.5)
    return center, scale
