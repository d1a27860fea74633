"""Benchmarks (pytest-benchmark): run with `make bench` or `pytest bench --benchmark-only`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2  # noqa: E402

cv2.setNumThreads(1)  # "per core" figures: OpenCV must not fan out
