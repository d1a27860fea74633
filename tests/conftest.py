"""Shared fixtures: the tiny real data in ../shared/data and a tiny synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the tiny real COCO/MPII samples live in ../shared/data")
    return path


@pytest.fixture(scope="session")
def coco_tiny() -> Path:
    return _shared("coco_tiny")


@pytest.fixture(scope="session")
def mpii_tiny() -> Path:
    return _shared("mpii_tiny")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    from okdhp_edge.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, 48, 16, seed=3, image_size=(160, 120), workers=1)
    return root
