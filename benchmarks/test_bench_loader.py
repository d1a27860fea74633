"""The training loader on real COCO data: ../shared/data/coco_tiny repeated, JPEG decode,
affine crop with scale / rotation / flip / half-body augmentation, 256x192 heatmap targets,
on one core. Target (issue 27): >= 150 samples/s per loader core; the trainer logs the
workers a GPU needs from the same measurement at start.

Run: pytest benchmarks/test_bench_loader.py --benchmark-only -s
"""

from pathlib import Path

import cv2
import pytest

from okdhp_edge.data.coco import CocoKeypoints
from okdhp_edge.data.transforms import AugmentParams

COCO_TINY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco_tiny"


@pytest.fixture(scope="module")
def coco_train():
    if not COCO_TINY.is_dir():
        pytest.skip(f"{COCO_TINY} is absent: the tiny real COCO sample lives in ../shared/data")
    cv2.setNumThreads(1)  # one loader core, as in a data worker
    return CocoKeypoints(COCO_TINY / "person_keypoints_tiny.json", COCO_TINY / "images",
                         input_size=(192, 256), train=True,
                         augment=AugmentParams(0.35, 40.0, 0.3, 0.5, 0.3))


def test_coco_loader_256x192_one_core(benchmark, coco_train):
    state = {"i": 0}

    def one():  # a new epoch each pass: a new augmentation of every person
        state["i"] += 1
        return coco_train[(state["i"] // len(coco_train), state["i"] % len(coco_train))]

    benchmark(one)
    rate = 1.0 / benchmark.stats.stats.median
    benchmark.extra_info["samples_per_s_one_core"] = rate
    print(f"\ncoco_tiny ({len(coco_train)} persons) at 256x192: {rate:.0f} samples/s on one core")
    assert rate >= 150, f"{rate:.0f} samples/s < 150 target"
