import json
import shutil

import numpy as np
import pytest
from pycocotools.coco import COCO

from okdhp_edge.data.coco import CocoKeypoints, load_coco
from okdhp_edge.data.dataset import collate_skip_none
from okdhp_edge.data.errors import DataError
from okdhp_edge.evaluation.coco_eval import coco_keypoint_eval
from okdhp_edge.evaluation.inference import Predictions, oracle_heatmap_fn, predict, score


def test_gt_as_prediction_ap_is_one(coco_tiny):
    coco = COCO(str(coco_tiny / "person_keypoints_tiny.json"))
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"],
                "score": 1.0} for a in coco.dataset["annotations"] if a["num_keypoints"] > 0]
    assert len(results) == 12
    stats = coco_keypoint_eval(coco, results)
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)


def test_records_exclude_zero_keypoint_persons(coco_tiny):
    ds = CocoKeypoints(coco_tiny / "person_keypoints_tiny.json", coco_tiny / "images",
                       input_size=(192, 256))
    assert len(ds) == 12
    s = ds[0]
    assert s["image"].shape == (3, 256, 192) and s["target"].shape == (17, 64, 48)
    assert s["target_weight"].shape == (17,)


def test_oracle_ap_on_coco_tiny(coco_tiny):
    ds = CocoKeypoints(coco_tiny / "person_keypoints_tiny.json", coco_tiny / "images",
                       input_size=(192, 256))
    res = score(ds, predict(ds, oracle_heatmap_fn(ds)))
    assert res["AP"] >= 0.97


def test_detection_boxes_with_threshold(coco_tiny):
    ds = CocoKeypoints(coco_tiny / "person_keypoints_tiny.json", coco_tiny / "images",
                       input_size=(192, 256), det_file=coco_tiny / "person_detections_tiny.json",
                       det_score_thr=0.5)
    assert len(ds) == 18
    assert all(r.score >= 0.5 for r in ds.records)


def test_train_augmentation_is_deterministic_per_epoch(coco_tiny):
    ds = CocoKeypoints(coco_tiny / "person_keypoints_tiny.json", coco_tiny / "images",
                       input_size=(96, 128), train=True, seed=1)
    a, b = ds[3], ds[3]
    assert np.array_equal(a["image"], b["image"])
    ds.set_epoch(1)
    c = ds[3]
    assert not np.array_equal(c["image"], a["image"])
    # an (epoch, index) key gives that epoch's augmentation whatever set_epoch said
    assert np.array_equal(ds[(0, 3)]["image"], a["image"])
    ds.set_epoch(5)
    assert np.array_equal(ds[(1, 3)]["image"], c["image"])


def _copy_tiny(coco_tiny, tmp_path):
    shutil.copytree(coco_tiny, tmp_path / "c")
    return tmp_path / "c"


def test_missing_image_names_file_and_record(coco_tiny, tmp_path):
    root = _copy_tiny(coco_tiny, tmp_path)
    (root / "images" / "000000000785.jpg").unlink()
    ds = CocoKeypoints(root / "person_keypoints_tiny.json", root / "images", input_size=(64, 64))
    with pytest.raises(DataError, match=r"000000000785\.jpg: image file not found.*record 442619"):
        ds[0]


def test_truncated_jpeg_refused(coco_tiny, tmp_path):
    root = _copy_tiny(coco_tiny, tmp_path)
    p = root / "images" / "000000000785.jpg"
    p.write_bytes(p.read_bytes()[:5000])
    ds = CocoKeypoints(root / "person_keypoints_tiny.json", root / "images", input_size=(64, 64))
    with pytest.raises(DataError, match="truncated JPEG"):
        ds[0]


@pytest.mark.parametrize("content", [b"not an image at all", b""])
def test_unreadable_image_refused_or_skipped(coco_tiny, tmp_path, content):
    root = _copy_tiny(coco_tiny, tmp_path)
    (root / "images" / "000000000785.jpg").write_bytes(content)
    ds = CocoKeypoints(root / "person_keypoints_tiny.json", root / "images", input_size=(64, 64))
    with pytest.raises(DataError, match="unreadable image|empty image file"):
        ds[0]
    ds = CocoKeypoints(root / "person_keypoints_tiny.json", root / "images", input_size=(64, 64),
                       train=True, bad_image="skip")
    batch = collate_skip_none([ds[0], ds[1]])
    assert batch["skipped"] == 1 and batch["image"].shape[0] == 1
    assert ds.skipped == 1


def _write(tmp_path, doc):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(doc))
    return f


def test_not_a_keypoints_file(tmp_path):
    with pytest.raises(DataError, match="not a COCO keypoints file"):
        load_coco(_write(tmp_path, {"images": []}))
    with pytest.raises(DataError, match="no category declares 'keypoints'"):
        load_coco(_write(tmp_path, {"images": [], "annotations": [],
                                    "categories": [{"id": 1, "name": "person"}]}))
    f = tmp_path / "x.json"
    f.write_text("{broken")
    with pytest.raises(DataError, match="not valid JSON"):
        load_coco(f)


def test_keypoint_count_and_non_finite(coco_tiny, tmp_path):
    doc = json.loads((coco_tiny / "person_keypoints_tiny.json").read_text())
    doc["annotations"][0]["keypoints"] = doc["annotations"][0]["keypoints"][:-3]
    with pytest.raises(DataError, match=r"annotation id 442619: 16\.0 keypoints"):
        load_coco(_write(tmp_path, doc))
    doc = json.loads((coco_tiny / "person_keypoints_tiny.json").read_text())
    doc["annotations"][1]["keypoints"][0] = float("nan")
    with pytest.raises(DataError, match="non-finite"):
        load_coco(_write(tmp_path, doc))


def test_empty_split_is_refused_not_scored(coco_tiny, tmp_path):
    """A split without persons used to score AP 0.0000 with exit 0: it is a one-line error
    (rc 2), at the evaluation CLI and in the library."""
    import subprocess
    import sys

    from okdhp_edge.evaluation.datasets import build_eval_dataset

    doc = json.loads((coco_tiny / "person_keypoints_tiny.json").read_text())
    doc["annotations"] = []
    ann = _write(tmp_path, doc)
    with pytest.raises(DataError, match="no person to score"):
        build_eval_dataset("coco", str(ann), str(coco_tiny / "images"), {"input_size": (64, 64)})
    proc = subprocess.run([sys.executable, "-m", "okdhp_edge.evaluate", "--oracle",
                           "--dataset", "coco", "--ann", str(ann), "--images",
                           str(coco_tiny / "images"), "--input-size", "64", "64"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "AP" not in proc.stdout, proc.stdout
    assert "no person to score" in proc.stderr and "Traceback" not in proc.stderr
    ds = CocoKeypoints(coco_tiny / "person_keypoints_tiny.json", coco_tiny / "images",
                       input_size=(64, 64))
    none = Predictions(np.zeros(0, int), np.zeros((0, 17, 2)), np.zeros((0, 17)))
    with pytest.raises(DataError, match="no person to score"):
        score(ds, none, subset=True)  # a sample of the split with no prediction in it


def test_oks_nms_and_rescoring():
    from okdhp_edge.data.keypoints import COCO_17
    from okdhp_edge.evaluation.coco_eval import make_results, oks_nms

    sig = np.asarray(COCO_17.sigmas)
    rng = np.random.default_rng(0)
    pose = np.concatenate([rng.uniform(0, 100, (17, 2)), np.ones((17, 1))], 1)
    near = pose.copy()
    near[:, :2] += 0.5
    far = pose.copy()
    far[:, :2] += 80
    poses = np.stack([pose, near, far])
    keep = oks_nms(poses, np.array([0.9, 0.8, 0.7]), np.full(3, 5000.0), 0.9, sig)
    assert keep == [0, 2]
    conf = np.array([[0.9] * 10 + [0.1] * 7])
    res = make_results(np.array([1]), pose[None, :, :2], conf, np.array([0.5]),
                       np.array([5000.0]), sig, rescore_thr=0.2, nms_thr=None)
    assert res[0]["score"] == pytest.approx(0.5 * 0.9)


def test_half_body_augmentation(coco_tiny):
    ds = CocoKeypoints(coco_tiny / "person_keypoints_tiny.json", coco_tiny / "images",
                       input_size=(96, 128), train=True, seed=0)
    ds.augment.half_body_prob = 1.0
    ds.augment.scale_factor = 0.0
    ds.augment.rot_prob = 0.0
    full = CocoKeypoints(coco_tiny / "person_keypoints_tiny.json", coco_tiny / "images",
                         input_size=(96, 128))
    s, f = ds[0], full[0]
    assert s["scale"][1] < f["scale"][1]  # a tighter box around half of the body


def test_a_bad_image_in_a_worker_is_one_line():
    """A DataError raised in a DataLoader worker comes back with the worker's traceback in
    its text; the CLIs print its message alone."""
    from torch.utils.data import DataLoader, Dataset

    from okdhp_edge.utils.cli import one_line

    class Bad(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i):
            raise DataError("img.jpg: unreadable image (record 7)")

    batches = iter(DataLoader(Bad(), num_workers=1))
    try:
        with pytest.raises(DataError) as info:
            next(batches)
    finally:  # its worker ends now: the traceback keeps the iterator, and whoever collected
        batches._shutdown_workers()  # it later (the next test) waited 5 s for the worker
    assert "Original Traceback" in str(info.value)
    assert one_line(info.value) == "img.jpg: unreadable image (record 7)"


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d.update(score="high"), "score 'high' is not a finite number"),
    (lambda d: d.update(bbox=[10.0, 10.0, float("nan"), 40.0]), "is not \\[x, y, w, h\\]"),
    (lambda d: d.update(bbox=[10.0, 10.0, -5.0, 40.0]), "is not \\[x, y, w, h\\]"),
    (lambda d: d.update(bbox=[10.0, 10.0, 1e300, 40.0]), "is not \\[x, y, w, h\\]"),
])
def test_bad_detections_are_refused_by_entry(coco_tiny, tmp_path, edit, needle):
    """A detection file with a non-numeric score, or a NaN, negative or overflowing box, is
    refused naming the entry (it used to score AP 0.03 without a word)."""
    dets = json.loads((coco_tiny / "person_detections_tiny.json").read_text())
    edit(dets[3])
    bad = tmp_path / "dets.json"
    bad.write_text(json.dumps(dets))
    with pytest.raises(DataError, match=f"entry 3: .*{needle}"):
        CocoKeypoints(coco_tiny / "person_keypoints_tiny.json", coco_tiny / "images",
                      input_size=(192, 256), det_file=bad)


@pytest.mark.parametrize("field, value, words", [
    ("bbox", [0, 0, 1e30, 1e30], "cannot lie in its"),
    ("bbox", [5000, 10, 20, 20], "cannot lie in its"),
    ("area", 1e30, "cannot be a person's")])
def test_an_annotation_no_image_can_hold_is_refused_at_read(coco_tiny, tmp_path, field, value,
                                                            words):
    """Boxes and areas are checked against their image where the annotations are read (a
    huge box was clipped to the whole image and its area weighed the OKS, without a word)."""
    import json

    from okdhp_edge.data.errors import DataError

    data = json.loads((coco_tiny / "person_keypoints_tiny.json").read_text())
    data["annotations"][0][field] = value
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match=words):
        CocoKeypoints(ann, coco_tiny / "images", input_size=(64, 64))
