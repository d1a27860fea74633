"""Data-path speed: the sample path (read, crop, encode) and the synthetic generator.

Targets (issue #2): >= 150 samples/s per core on 640x480 JPEGs at a 256x192 crop;
>= 100 synthetic images/s on one core at 320x240.
"""

import cv2
import numpy as np
import pytest

from okdhp_edge.data.dataset import PersonRecord, TopDownDataset
from okdhp_edge.data.keypoints import COCO_17
from okdhp_edge.data.synthetic import _make_one


@pytest.fixture(scope="module")
def jpeg_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    ds = TopDownDataset(COCO_17, input_size=(192, 256), train=True)
    for i in range(16):
        img = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (7, 7), 0)
        path = root / f"{i}.jpg"
        cv2.imwrite(str(path), img)
        joints = np.concatenate([rng.uniform(200, 440, (17, 1)), rng.uniform(100, 380, (17, 1)),
                                 np.full((17, 1), 2.0)], 1).astype(np.float32)
        c, s = ds.box_to_center_scale((200, 100, 240, 280))
        ds.records.append(PersonRecord(str(path), i, c, s, joints))
    return ds


def test_sample_path_640x480_to_256x192(benchmark, jpeg_dataset):
    """One training sample: JPEG decode, augmented affine crop, normalise, encode."""
    state = {"i": 0}

    def one():
        state["i"] += 1
        return jpeg_dataset[state["i"] % len(jpeg_dataset)]

    benchmark(one)
    rate = 1.0 / benchmark.stats.stats.median
    benchmark.extra_info["samples_per_s_one_core"] = rate
    assert rate >= 150, f"{rate:.0f} samples/s < 150 target"


def test_synthetic_generator_320x240(benchmark, tmp_path):
    state = {"i": 0}

    def one():
        state["i"] += 1
        return _make_one((0, "train", state["i"], 320, 240, str(tmp_path)))

    benchmark(one)
    rate = 1.0 / benchmark.stats.stats.median
    benchmark.extra_info["images_per_s_one_core"] = rate
    assert rate >= 100, f"{rate:.0f} images/s < 100 target"
