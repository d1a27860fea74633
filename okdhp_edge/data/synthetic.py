"""Synthetic COCO-format pose data: articulated figures on cluttered backgrounds.

``python -m okdhp_edge.data.synthetic --out DIR --num-train N --num-val M [--seed S]
[--image-size W H]`` writes ``DIR/images/{train,val}/*.jpg`` and
``DIR/annotations/person_keypoints_{train,val}.json`` with the 17 COCO keypoints.

Each figure has human proportions and joint-angle limits, a random size, rotation and
position, clothes and skin colours. Left and right are told apart the way they are in
photographs: a figure faces the camera (a face is drawn; its left side is on the image
right) or turns its back (hair, no face; its left side is on the image left). This cue
survives horizontal-flip augmentation. Figures occlude each other and are occluded by
objects; an occluded keypoint has visibility 1, one outside the image 0. Each image is
drawn from its own RNG stream keyed by (seed, split, index): same seed, same bytes.
"""

from __future__ import annotations

import json
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import cv2
import numpy as np

from okdhp_edge.data.keypoints import COCO_17
from okdhp_edge.grammar import Request, option
from okdhp_edge.utils.cli import console_entry, request_main
from okdhp_edge.utils.io import atomic_write_text

log = logging.getLogger(__name__)

SPLIT_IDS = {"train": 1, "val": 2, "test": 3}
_OCCLUDER = 255

# COCO indices
NOSE, LEYE, REYE, LEAR, REAR = 0, 1, 2, 3, 4
LSHO, RSHO, LELB, RELB, LWRI, RWRI = 5, 6, 7, 8, 9, 10
LHIP, RHIP, LKNE, RKNE, LANK, RANK = 11, 12, 13, 14, 15, 16


def _unit(deg: float) -> np.ndarray:
    r = math.radians(deg)
    return np.array([math.sin(r), -math.cos(r)])  # 0 deg points up in image coordinates


def _color(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    c = rng.integers(lo, hi, 3)
    return int(c[0]), int(c[1]), int(c[2])


def sample_pose(rng: np.random.Generator, center: np.ndarray, height: float) -> dict[str, Any]:
    """Joint positions [17, 2] and drawing parameters of one figure.

    ``height`` is the standing height in pixels; ``center`` the pelvis position.
    """
    t = 0.3 * height * rng.uniform(0.9, 1.1)  # torso length
    tilt = rng.normal(0, 12) if rng.random() < 0.85 else rng.uniform(-100, 100)
    front = bool(rng.random() < 0.7)
    up = _unit(tilt)
    right = np.array([-up[1], up[0]])  # image-right when upright
    side = 1.0 if front else -1.0  # person's left is +side * right
    lengths = {k: v * t * rng.uniform(0.88, 1.12) for k, v in dict(
        sho=0.42, hip=0.28, uarm=0.62, farm=0.55, thigh=0.85, shin=0.8, neck=0.22, head=0.26,
    ).items()}
    pelvis = np.asarray(center, float)
    neck = pelvis + up * t
    j = np.zeros((17, 2))
    j[LSHO] = neck + side * right * lengths["sho"]
    j[RSHO] = neck - side * right * lengths["sho"]
    j[LHIP] = pelvis + side * right * lengths["hip"]
    j[RHIP] = pelvis - side * right * lengths["hip"]
    for s, sho, elb, wri in ((side, LSHO, LELB, LWRI), (-side, RSHO, RELB, RWRI)):
        a = rng.uniform(-30, 175)  # abduction from hanging down, outward positive
        b = a + rng.uniform(-150, 40) * rng.uniform(0.3, 1.0)
        fs = rng.uniform(0.65, 1.0)  # foreshortening
        j[elb] = j[sho] + lengths["uarm"] * fs * (-up * math.cos(math.radians(a))
                                                  + s * right * math.sin(math.radians(a)))
        j[wri] = j[elb] + lengths["farm"] * fs * (-up * math.cos(math.radians(b))
                                                  + s * right * math.sin(math.radians(b)))
    for s, hip, kne, ank in ((side, LHIP, LKNE, LANK), (-side, RHIP, RKNE, RANK)):
        a = rng.uniform(-20, 65)
        b = a + rng.uniform(-70, 50)
        fs = rng.uniform(0.7, 1.0)
        j[kne] = j[hip] + lengths["thigh"] * fs * (-up * math.cos(math.radians(a))
                                                   + s * right * math.sin(math.radians(a)))
        j[ank] = j[kne] + lengths["shin"] * fs * (-up * math.cos(math.radians(b))
                                                  + s * right * math.sin(math.radians(b)))
    hr = lengths["head"]
    head_up = _unit(tilt + rng.normal(0, 15))
    head_right = np.array([-head_up[1], head_up[0]])
    head = neck + head_up * (lengths["neck"] + hr)
    yaw = float(np.clip(rng.normal(0, 0.25), -0.5, 0.5))
    j[NOSE] = head + head_right * yaw * hr - head_up * 0.15 * hr
    j[LEYE] = head + head_right * (side * 0.38 + yaw) * hr + head_up * 0.15 * hr
    j[REYE] = head + head_right * (-side * 0.38 + yaw) * hr + head_up * 0.15 * hr
    j[LEAR] = head + head_right * side * 0.95 * hr
    j[REAR] = head - head_right * side * 0.95 * hr
    return dict(joints=j, front=front, head=head, head_r=hr, up=head_up, right=head_right,
                yaw=yaw, side=side, t=t, neck=neck, pelvis=pelvis)


def _limbs(t: float) -> list[tuple[int, int, float, str]]:
    return [
        (LHIP, LKNE, 0.30 * t, "pants"), (LKNE, LANK, 0.24 * t, "pants"),
        (RHIP, RKNE, 0.30 * t, "pants"), (RKNE, RANK, 0.24 * t, "pants"),
        (LSHO, LELB, 0.22 * t, "shirt"), (LELB, LWRI, 0.17 * t, "skin"),
        (RSHO, RELB, 0.22 * t, "shirt"), (RELB, RWRI, 0.17 * t, "skin"),
    ]


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0] * 16)), int(round(p[1] * 16))


def draw_figure(canvas: np.ndarray, pose: dict[str, Any], colors: dict[str, tuple],
                mask_value: Optional[int] = None) -> None:
    """Draw a figure (or its silhouette with ``mask_value``) with sub-pixel precision."""
    j, t = pose["joints"], pose["t"]
    col = (lambda k: (mask_value,) * canvas.shape[2]) if mask_value is not None and \
        canvas.ndim == 3 else (lambda k: mask_value if mask_value is not None else colors[k])
    sh = 4  # fractional bits for cv2 drawing
    legs, arms = _limbs(t)[:4], _limbs(t)[4:]
    for a, b, w, part in legs:
        cv2.line(canvas, _pt(j[a]), _pt(j[b]), col(part), max(1, int(w)), cv2.LINE_AA, sh)
        cv2.circle(canvas, _pt(j[b]), int(w * 8), col(part), -1, cv2.LINE_AA, sh)
    for ank in (LANK, RANK):
        cv2.circle(canvas, _pt(j[ank]), int(0.16 * t * 16), col("shoes"), -1, cv2.LINE_AA, sh)
    torso = np.array([_pt(j[LSHO]), _pt(j[RSHO]), _pt(j[RHIP]), _pt(j[LHIP])], np.int32)
    cv2.fillConvexPoly(canvas, torso, col("shirt"), cv2.LINE_AA, sh)
    cv2.line(canvas, _pt(pose["neck"]), _pt(pose["head"]), col("skin"), max(1, int(0.16 * t)),
             cv2.LINE_AA, sh)
    for a, b, w, part in arms:
        cv2.line(canvas, _pt(j[a]), _pt(j[b]), col(part), max(1, int(w)), cv2.LINE_AA, sh)
        cv2.circle(canvas, _pt(j[a]), int(w * 8), col(part), -1, cv2.LINE_AA, sh)
    for wri in (LWRI, RWRI):
        cv2.circle(canvas, _pt(j[wri]), int(0.12 * t * 16), col("skin"), -1, cv2.LINE_AA, sh)
    hr = pose["head_r"]
    cv2.circle(canvas, _pt(pose["head"]), int(hr * 16), col("skin"), -1, cv2.LINE_AA, sh)
    if mask_value is not None:
        return
    if pose["front"]:
        # hair on top, eyes, nose, mouth: the figure faces the camera
        top = pose["head"] + pose["up"] * 0.55 * hr
        cv2.ellipse(canvas, _pt(top), (int(hr * 16), int(hr * 0.45 * 16)),
                    -math.degrees(math.atan2(pose["up"][0], -pose["up"][1])), 0, 360,
                    colors["hair"], -1, cv2.LINE_AA, sh)
        for e in (LEYE, REYE):
            cv2.circle(canvas, _pt(j[e]), max(8, int(0.11 * hr * 16)), (20, 20, 20), -1,
                       cv2.LINE_AA, sh)
        cv2.circle(canvas, _pt(j[NOSE]), max(8, int(0.1 * hr * 16)), colors["nose"], -1,
                   cv2.LINE_AA, sh)
        mouth = j[NOSE] - pose["up"] * 0.35 * hr
        cv2.line(canvas, _pt(mouth - pose["right"] * 0.25 * hr),
                 _pt(mouth + pose["right"] * 0.25 * hr), (90, 30, 40), max(1, int(hr * 0.1)),
                 cv2.LINE_AA, sh)
    else:
        cv2.circle(canvas, _pt(pose["head"] + pose["up"] * 0.1 * hr), int(hr * 0.92 * 16),
                   colors["hair"], -1, cv2.LINE_AA, sh)
    for e in (LEAR, REAR):
        cv2.circle(canvas, _pt(j[e]), max(8, int(0.16 * hr * 16)), colors["ear"], -1,
                   cv2.LINE_AA, sh)


def _figure_colors(rng: np.random.Generator) -> dict[str, tuple]:
    skin_tones = [(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66),
                  (141, 85, 36), (92, 59, 38)]
    skin = skin_tones[int(rng.integers(len(skin_tones)))]
    skin = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in skin)
    ear = tuple(int(c * 0.75) for c in skin)
    return {"skin": skin, "ear": ear, "shirt": _color(rng), "pants": _color(rng, 0, 200),
            "shoes": _color(rng, 0, 90), "hair": _color(rng, 0, 110),
            "nose": tuple(int(c * 0.6) for c in skin)}


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    low = rng.uniform(0, 255, (int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3))
    img = cv2.resize(low.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, rng.uniform(3, 20), (h, w, 3)).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(4, 14))):
        _clutter(rng, img, w, h)
    return img


def _clutter(rng: np.random.Generator, img: np.ndarray, w: int, h: int,
             mask: Optional[np.ndarray] = None) -> None:
    """One random shape: rectangle, ellipse, polyline or a limb-like bar (distractor).

    With ``mask``, the same shape is also drawn there as an occluder.
    """
    kind = int(rng.integers(4))
    color = _color(rng)
    x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
    s = int(rng.integers(max(4, min(w, h) // 16), max(8, min(w, h) // 3)))
    a, b = float(rng.uniform(0.2, 2.0)), float(rng.uniform(0, 360))
    pts = (rng.integers(-s, s, (int(rng.integers(3, 6)), 2)) + np.array([x, y])).astype(np.int32)
    thick = int(rng.integers(1, 5))
    targets = [(img, color)] + ([(mask, _OCCLUDER)] if mask is not None else [])
    for canvas, c in targets:
        if kind == 0:
            cv2.rectangle(canvas, (x, y), (x + s, y + int(s * a)), c, -1)
        elif kind == 1:
            cv2.ellipse(canvas, (x, y), (s // 2, max(1, int(s * a * 0.4))), b, 0, 360, c, -1,
                        cv2.LINE_AA)
        elif kind == 2:
            cv2.polylines(canvas, [pts], False, c, thick, cv2.LINE_AA)
        else:
            d = _unit(b) * s
            cv2.line(canvas, (x, y), (int(x + d[0]), int(y + d[1])), c,
                     int(max(2, s * a * 0.12)), cv2.LINE_AA)


def render_image(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, list[dict]]:
    """One RGB image [h, w, 3] uint8 and its person annotations (COCO fields)."""
    img = _background(rng, w, h)
    n = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    owner = np.zeros((h, w), np.uint8)
    scratch = np.zeros((h, w), np.uint8)
    people = []
    for i in range(n):
        height = h * (rng.uniform(0.45, 0.95) if n == 1 else rng.uniform(0.3, 0.75))
        center = np.array([rng.uniform(0.15, 0.85) * w, rng.uniform(0.35, 0.75) * h])
        pose = sample_pose(rng, center, height)
        colors = _figure_colors(rng)
        draw_figure(img, pose, colors)
        scratch.fill(0)
        draw_figure(scratch, pose, colors, mask_value=1)
        owner[scratch > 0] = i + 1
        people.append((pose, int(cv2.countNonZero(scratch)), cv2.boundingRect(scratch)))
    for _ in range(int(rng.integers(0, 3))):  # occluding objects and distractors on top
        if rng.random() < 0.6:
            _clutter(rng, img, w, h, owner)
    anns = []
    for i, (pose, area, (bx, by, bw, bh)) in enumerate(people):
        kps = np.zeros((17, 3))
        for k, (x, y) in enumerate(pose["joints"]):
            xi, yi = int(round(x)), int(round(y))
            if not (0 <= xi < w and 0 <= yi < h):
                continue  # outside the image: unlabelled
            if not pose["front"] and k in (NOSE, LEYE, REYE):
                continue  # face not visible from the back: unlabelled, as in COCO
            vis = 2 if owner[yi, xi] == i + 1 else 1
            kps[k] = (round(float(x), 2), round(float(y), 2), vis)
        nk = int((kps[:, 2] > 0).sum())
        if nk == 0 or bw * bh == 0:
            continue
        anns.append({"keypoints": kps.reshape(-1).tolist(), "num_keypoints": nk,
                     "bbox": [float(bx), float(by), float(bw), float(bh)],
                     "area": float(area), "iscrowd": 0, "category_id": 1})
    return img, anns


def _make_one(args: tuple[int, str, int, int, int, str]) -> tuple[dict, list[dict]]:
    seed, split, index, w, h, image_dir = args
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    img, anns = render_image(rng, w, h)
    name = f"{split}_{index:07d}.jpg"
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise RuntimeError(f"cannot encode {name}")
    path = Path(image_dir) / name
    tmp = path.with_suffix(".jpg.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)
    return {"id": index + 1, "file_name": name, "width": w, "height": h}, anns


def generate_split(out: Path, split: str, num: int, seed: int, image_size: tuple[int, int],
                   workers: int = 1, progress: bool = True) -> Path:
    """Write one split's images and its ``person_keypoints_<split>.json``; return the json."""
    w, h = int(image_size[0]), int(image_size[1])
    image_dir = out / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(seed, split, i, w, h, str(image_dir)) for i in range(num)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_make_one, jobs, chunksize=32)
            results = _progress(results, num, split, progress)
            results = list(results)
    else:
        results = list(_progress(map(_make_one, jobs), num, split, progress))
    images, annotations = [], []
    for info, anns in results:
        images.append(info)
        for a in anns:
            a.update(id=len(annotations) + 1, image_id=info["id"])
            annotations.append(a)
    category = {"id": 1, "name": "person", "supercategory": "person",
                "keypoints": list(COCO_17.joints),
                "skeleton": [[a + 1, b + 1] for a, b in COCO_17.skeleton]}
    doc = {"info": {"description": "okdhp_edge synthetic poses", "seed": seed, "split": split},
           "licenses": [], "images": images, "annotations": annotations,
           "categories": [category]}
    ann_path = out / "annotations" / f"person_keypoints_{split}.json"
    atomic_write_text(ann_path, json.dumps(doc, separators=(",", ":")))
    return ann_path


def _progress(it, total: int, split: str, enabled: bool):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=f"synthetic {split}", unit="img", leave=False)


def generate_dataset(out: Path, num_train: int, num_val: int, seed: int = 0,
                     image_size: tuple[int, int] = (320, 240), workers: int = 0) -> None:
    """Generate train and val splits under ``out`` (val is written last: its json marks
    a complete dataset)."""
    workers = workers or min(4, os.cpu_count() or 1)
    generate_split(Path(out), "train", num_train, seed, image_size, workers)
    generate_split(Path(out), "val", num_val, seed, image_size, workers)


@dataclass(frozen=True)
class SyntheticRequest(Request):
    """Generates a synthetic COCO-format pose dataset (train and val splits; val is written
    last, so its JSON marks a complete dataset)."""

    COMMAND: ClassVar[str] = "okdhp synthetic"

    out: Path = option(help="the dataset folder")
    num_train: int = option(3000, "training images", minimum=1, maximum=10_000_000)
    num_val: int = option(300, "validation images", minimum=1, maximum=10_000_000)
    seed: int = option(0, "the generator's seed", minimum=0)
    image_size: tuple[int, int] = option((320, 240), "image size", minimum=32, maximum=8192,
                                         metavar=("W", "H"))
    workers: int = option(0, "processes (0: up to 4 cores)", minimum=0, maximum=256)


def _run(args: SyntheticRequest) -> int:
    generate_dataset(args.out, args.num_train, args.num_val, args.seed, args.image_size,
                     args.workers)
    log.info("wrote %s", args.out)
    return 0


main = request_main(SyntheticRequest, _run)
cli = console_entry(main)  # the console script: as python -m, one-line errors


if __name__ == "__main__":
    from okdhp_edge.utils.cli import run_cli

    run_cli(main)
