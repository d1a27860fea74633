import json

import numpy as np
import pytest

from okdhp_edge.data.errors import DataError
from okdhp_edge.data.mpii import MpiiKeypoints, load_headboxes
from okdhp_edge.evaluation.inference import oracle_heatmap_fn, predict, score
from okdhp_edge.evaluation.pckh import pckh


def test_pckh_hand_computed():
    # one person, head box 10x0 -> head size 6; joints at distances 0, 2.9, 3.1, 0.5
    hb = np.array([[0, 0, 10, 0]], float)
    gt = np.zeros((1, 16, 2))
    pred = gt.copy()
    pred[0, 0, 0] = 2.9   # hit @0.5 (<= 3)
    pred[0, 1, 0] = 3.1   # miss @0.5
    pred[0, 2, 0] = 0.5   # hit @0.1 (<= 0.6)
    pred[0, 6, 0] = 100   # pelvis: excluded from the mean
    vis = np.zeros((1, 16), bool)
    vis[0, [0, 1, 2, 6]] = True
    res = pckh(pred, gt, vis, hb)
    assert res["PCKh@0.5"] == pytest.approx(200 / 3)
    assert res["PCKh@0.1"] == pytest.approx(100 / 3)
    assert res["PCKh@0.5_per_joint"]["pelvis"] == 0.0
    assert res["PCKh@0.5_per_joint"]["head_top"] is None


def test_headboxes_json(mpii_tiny):
    hb = load_headboxes(mpii_tiny / "mpii_tiny_headboxes.json", 5)
    head = 0.6 * np.linalg.norm(hb[:, 2:] - hb[:, :2], axis=1)
    assert np.allclose(head, [117.96, 44.05, 78.48, 81.22, 84.37], atol=0.01)
    with pytest.raises(DataError, match="5 head boxes for 6 persons"):
        load_headboxes(mpii_tiny / "mpii_tiny_headboxes.json", 6)


@pytest.mark.parametrize("box", [[5, 5, 5, 5], [0, 0, float("nan"), 4]])
def test_degenerate_headbox_refused(tmp_path, box):
    """PCKh divides by the head size: a zero-size or NaN box is refused by name, not left to
    turn that person's distances into inf and skew the mean."""
    f = tmp_path / "hb.json"
    f.write_text(json.dumps([{"headbox_x1y1x2y2": [0, 0, 10, 10]},
                             {"headbox_x1y1x2y2": box}]))
    with pytest.raises(DataError, match="1 degenerate head box.*index 1"):
        load_headboxes(f, 2)
    gt = np.zeros((2, 16, 2))
    with pytest.raises(ValueError, match="1 head boxes are non-finite or of zero size"):
        pckh(gt, gt, np.ones((2, 16), bool), np.array([[0, 0, 10, 10], box], float))


def test_headboxes_mat(tmp_path):
    from scipy.io import savemat

    hb = np.zeros((2, 2, 3))
    hb[0] = [[1, 2, 3], [4, 5, 6]]  # x1 y1 per person
    hb[1] = hb[0] + 10
    savemat(tmp_path / "gt_valid.mat", {"headboxes_src": hb})
    boxes = load_headboxes(tmp_path / "gt_valid.mat", 3)
    assert boxes[0].tolist() == [1, 4, 11, 14]


def test_oracle_pckh_is_100(mpii_tiny):
    ds = MpiiKeypoints(mpii_tiny / "mpii_tiny.json", mpii_tiny / "images", input_size=(256, 256))
    hb = load_headboxes(mpii_tiny / "mpii_tiny_headboxes.json", len(ds))
    res = score(ds, predict(ds, oracle_heatmap_fn(ds)), headboxes=hb)
    assert res["PCKh@0.5"] == 100.0


def test_bad_mpii_record(tmp_path):
    f = tmp_path / "m.json"
    f.write_text(json.dumps([{"image": "a.jpg", "center": [1, 2], "scale": 1.0,
                              "joints": [[1, 2]] * 15, "joints_vis": [1] * 15}]))
    with pytest.raises(DataError, match=r"m\.json: record 0: 15 keypoints.*16"):
        MpiiKeypoints(f, tmp_path, input_size=(64, 64))


def test_selection_split_is_held_out_by_image(mpii_tiny, tmp_path):
    """Two persons per image: every person of an image lands on the same side, so no image
    gives persons to both training and selection."""
    from okdhp_edge.config import load_config
    from okdhp_edge.data.build import build_split

    recs = json.loads((mpii_tiny / "mpii_tiny.json").read_text())
    twice = []
    for r in recs:
        twice += [r, {**r, "center": [r["center"][0] + 5, r["center"][1]]}]
    ann = tmp_path / "train.json"
    ann.write_text(json.dumps(twice))
    cfg = load_config(overrides=["data.dataset=mpii", f"data.train_ann={ann}",
                                 f"data.train_images={mpii_tiny / 'images'}",
                                 "data.select_fraction=0.4", "data.input_size=[64,64]"])
    train, select = (build_split(cfg.data, s) for s in ("train", "select"))
    images = [{r.image_path for r in ds.records} for ds in (train, select)]
    assert len(train) + len(select) == 10 and len(select) == 4
    assert len(images[1]) == 2 and not images[0] & images[1]
