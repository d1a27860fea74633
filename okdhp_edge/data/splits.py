"""The rule that holds the selection split out of the training images: one place, read by
every reader's hold-out (training, selection, calibration and manifests alike)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np


@dataclass(frozen=True)
class HoldOut:
    """``fraction`` of the training images (at most ``max_images``; 0: no cap) drawn with
    ``seed`` form the selection split; the rest train. By image: no image gives persons to
    both sides."""

    fraction: float
    seed: int
    max_images: int = 0

    @classmethod
    def of_config(cls, dcfg: Any) -> HoldOut:
        """The rule of a DataConfig."""
        return cls(dcfg.select_fraction, dcfg.synthetic_seed, dcfg.select_max_images)

    @classmethod
    def of_record(cls, splits: dict[str, Any]) -> HoldOut:
        """The rule a student manifest records (``provenance.splits``)."""
        return cls(splits["select_fraction"], splits["split_seed"], splits["select_max_images"])

    def record(self) -> dict[str, Any]:
        """The fields a manifest keeps of it (:meth:`of_record` reads them back)."""
        return {"select_fraction": self.fraction, "select_max_images": self.max_images,
                "split_seed": self.seed}

    def split(self, image_ids: Iterable[int]) -> tuple[list[int], list[int]]:
        """Deterministically hold out a share of images: returns (kept, held_out)."""
        ids = sorted(int(i) for i in image_ids)
        if self.fraction <= 0:
            return ids, []
        perm = np.random.default_rng(self.seed).permutation(len(ids))
        n_held = max(1, int(round(self.fraction * len(ids))))
        if self.max_images:
            n_held = min(n_held, self.max_images)
        held = sorted(ids[i] for i in perm[:n_held])
        held_set = set(held)
        return [i for i in ids if i not in held_set], held

    def side(self, image_ids: Iterable[int], split: str) -> list[int]:
        """The images of ``split`` (``train`` or ``select``)."""
        kept, held = self.split(image_ids)
        return kept if split == "train" else held
