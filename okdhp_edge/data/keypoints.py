"""Keypoint specifications: COCO-17 and MPII-16."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KeypointSpec:
    """Names, left/right pairs, OKS sigmas and skeleton of a keypoint layout."""

    name: str
    joints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton: tuple[tuple[int, int], ...]  # 0-based joint index pairs
    sigmas: tuple[float, ...] = ()
    pckh_exclude: tuple[int, ...] = ()

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def flip_index(self) -> np.ndarray:
        """Permutation mapping each joint to its mirror joint (an involution)."""
        return flip_permutation(self.flip_pairs, self.num_joints)


def flip_permutation(pairs, num_joints: int) -> np.ndarray:
    """The joint permutation of a horizontal flip: left/right ``pairs`` swapped, the rest
    in place (e.g. from a manifest's ``preprocessing.flip_pairs``)."""
    perm = np.arange(num_joints)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


COCO_17 = KeypointSpec(
    name="coco17",
    joints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
        (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
        (3, 5), (4, 6),
    ),
    # pycocotools' default keypoint sigmas
    sigmas=(
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
        0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
    ),
)

MPII_16 = KeypointSpec(
    name="mpii16",
    joints=(
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
        "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder",
        "l_elbow", "l_wrist",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    skeleton=(
        (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
        (7, 12), (12, 11), (11, 10), (7, 13), (13, 14), (14, 15),
    ),
    pckh_exclude=(6, 7),
)
