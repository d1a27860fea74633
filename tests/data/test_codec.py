import numpy as np
import pytest

from okdhp_edge.data.codec import HeatmapCodec
from okdhp_edge.data.keypoints import COCO_17
from okdhp_edge.data.transforms import affine_points, box_to_center_scale, get_affine_transform


def test_round_trip_within_quarter_stride():
    codec = HeatmapCodec((192, 256), stride=4, sigma=2.0)
    rng = np.random.default_rng(0)
    joints = np.concatenate([rng.uniform(8, 180, (500, 1)), rng.uniform(8, 245, (500, 1)),
                             np.ones((500, 1))], 1)
    hms = np.stack([codec.encode(j[None])[0] for j in joints])  # [500, 1, 64, 48]
    coords, maxvals = codec.decode(hms)
    err = np.abs(coords[:, 0] * 4 - joints[:, :2])
    assert err.max() <= 0.25 * 4 + 1e-4
    assert np.all(maxvals > 0.5)


def test_target_weights():
    codec = HeatmapCodec((64, 64), stride=4, sigma=2.0)
    joints = np.array([[30, 30, 2], [30, 30, 0], [-100, 30, 2], [63, 63, 1]], np.float32)
    hm, w = codec.encode(joints)
    assert w.tolist() == [1, 0, 0, 1]
    assert hm[1].max() == 0 and hm[2].max() == 0
    assert hm[0].max() == pytest.approx(np.exp(-(0.5**2) / 8) ** 2, rel=1e-5)


def test_quarter_shift_toward_higher_neighbour():
    hm = np.zeros((1, 1, 5, 5), np.float32)
    hm[0, 0, 2, 2] = 1.0
    hm[0, 0, 2, 3] = 0.5
    hm[0, 0, 1, 2] = 0.2
    coords, maxvals = HeatmapCodec.decode(hm)
    assert coords[0, 0].tolist() == [2.25, 1.75]
    assert maxvals[0, 0] == 1.0


def test_flip_back_symmetry():
    """A heatmap, flipped and flipped back without the shift, is itself."""
    perm = COCO_17.flip_index()
    hm = np.random.default_rng(1).random((2, 17, 8, 6)).astype(np.float32)
    flipped = hm[:, perm, :, ::-1]
    assert np.array_equal(HeatmapCodec.flip_back(flipped, perm, shift=False), hm)
    shifted = HeatmapCodec.flip_back(flipped, perm, shift=True)
    assert np.array_equal(shifted[..., 1:], hm[..., :-1])


def test_flip_test_of_symmetric_input_is_consistent():
    """Mirror input: the flip-test estimate of a joint lands within 1 heatmap px."""
    codec = HeatmapCodec((64, 64), stride=4, sigma=2.0)
    perm = COCO_17.flip_index()
    joints = np.zeros((17, 3), np.float32)
    joints[:, :2] = 32
    joints[:, 2] = 1
    joints[5] = [20, 30, 1]
    joints[6] = [44, 30, 1]
    hm, _ = codec.encode(joints)
    mirrored = joints[perm].copy()
    mirrored[:, 0] = 64 - 1 - mirrored[:, 0]
    hm_m, _ = codec.encode(mirrored)
    back = HeatmapCodec.flip_back(hm_m[None], perm, shift=True)
    c0, _ = codec.decode(hm[None])
    c1, _ = codec.decode(back)
    assert np.abs(c0 - c1).max() <= 1.0


def test_affine_inverse_round_trip():
    center, scale = box_to_center_scale((100, 50, 80, 200), 192 / 256)
    assert scale[0] / scale[1] == pytest.approx(0.75)
    fwd = get_affine_transform(center, scale, 25.0, (192, 256))
    inv = get_affine_transform(center, scale, 25.0, (192, 256), inv=True)
    pts = np.array([[120.0, 80.0], [150.0, 200.0]])
    assert np.allclose(affine_points(affine_points(pts, fwd), inv), pts, atol=1e-3)
