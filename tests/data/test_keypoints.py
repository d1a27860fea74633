import numpy as np
import pytest

from okdhp_edge.data.keypoints import COCO_17, MPII_16


def _side_free(name):
    for side in ("left_", "right_", "l_", "r_"):
        if name.startswith(side):
            return name[len(side):]
    return name


@pytest.mark.parametrize("spec", [COCO_17, MPII_16])
def test_flip_pairs_are_involutions(spec):
    perm = spec.flip_index()
    assert np.array_equal(perm[perm], np.arange(spec.num_joints))
    for a, b in spec.flip_pairs:
        na, nb = (_side_free(spec.joints[i]) for i in (a, b))
        assert na == nb and spec.joints[a] != spec.joints[b]


def test_spec_sizes():
    assert COCO_17.num_joints == len(COCO_17.sigmas) == 17
    assert MPII_16.num_joints == 16
    assert [MPII_16.joints[i] for i in MPII_16.pckh_exclude] == ["pelvis", "thorax"]
    assert all(0 <= a < 17 and 0 <= b < 17 for a, b in COCO_17.skeleton)
