import hashlib
import json

import numpy as np

from okdhp_edge.data.coco import CocoKeypoints, load_coco
from okdhp_edge.data.synthetic import generate_split
from okdhp_edge.evaluation.inference import oracle_heatmap_fn, predict, score


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path):
    generate_split(tmp_path / "a", "train", 12, seed=5, image_size=(96, 80), progress=False)
    generate_split(tmp_path / "b", "train", 12, seed=5, image_size=(96, 80), progress=False)
    generate_split(tmp_path / "c", "train", 12, seed=6, image_size=(96, 80), progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_valid_coco_keypoints(synthetic_root):
    ann = synthetic_root / "annotations" / "person_keypoints_train.json"
    coco = load_coco(ann)
    doc = json.loads(ann.read_text())
    assert len(doc["images"]) == 48
    per_image = {}
    for a in doc["annotations"]:
        k = np.array(a["keypoints"]).reshape(17, 3)
        assert set(np.unique(k[:, 2])) <= {0, 1, 2}
        assert a["num_keypoints"] == int((k[:, 2] > 0).sum()) > 0
        assert a["iscrowd"] == 0 and a["area"] > 0
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0
        assert np.all(k[k[:, 2] == 0, :2] == 0)
        per_image[a["image_id"]] = per_image.get(a["image_id"], 0) + 1
    assert max(per_image.values()) <= 3
    vis = np.concatenate([np.array(a["keypoints"]).reshape(17, 3)[:, 2]
                          for a in doc["annotations"]])
    assert (vis == 1).any() and (vis == 2).mean() > 0.5  # occlusion happens, visible dominates
    assert len(coco.getImgIds()) == 48


def test_synthetic_oracle(synthetic_root):
    ds = CocoKeypoints(synthetic_root / "annotations" / "person_keypoints_val.json",
                       synthetic_root / "images" / "val", input_size=(96, 128))
    res = score(ds, predict(ds, oracle_heatmap_fn(ds)))
    assert res["AP"] >= 0.95


def test_existing_root_with_other_settings_warns(synthetic_root, caplog):
    from okdhp_edge.config import load_config
    from okdhp_edge.data.build import ensure_synthetic

    same = load_config(overrides=[f"data.root={synthetic_root}", "data.synthetic_num_train=48",
                                  "data.synthetic_num_val=16", "data.synthetic_seed=3",
                                  "data.synthetic_image_size=[160,120]"])
    with caplog.at_level("WARNING", logger="okdhp_edge.data.build"):
        ensure_synthetic(same.data)
    assert not caplog.records
    other = load_config(overrides=[f"data.root={synthetic_root}", "data.synthetic_num_train=50",
                                   "data.synthetic_num_val=16", "data.synthetic_seed=3",
                                   "data.synthetic_image_size=[160,120]"])
    with caplog.at_level("WARNING", logger="okdhp_edge.data.build"):
        ensure_synthetic(other.data)
    assert len(caplog.records) == 1
    assert "train split there has 48 images" in caplog.text and "ask for 50" in caplog.text
