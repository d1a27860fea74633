"""Bootstrap intervals of AP and PCKh: recomputed exactly as pycocotools computes them,
paired where the units are shared, reproducible from their seed."""

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from okdhp_edge.evaluation.coco_eval import coco_keypoint_eval_units
from okdhp_edge.evaluation.uncertainty import UnitResults, interval, paired_interval, pckh_units

SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87,
                   .87, .89, .89]) / 10.0


def _gt(ann_file, keep=None, repeat=None) -> COCO:
    """The synthetic ground truth, with images left out (``keep``) or drawn twice
    (``repeat``: image id -> copies, each copy a new image with the same persons)."""
    doc = json.loads(ann_file.read_text())
    images, anns = [], []
    for img in doc["images"]:
        copies = (repeat or {}).get(img["id"], 1) if keep is None or img["id"] in keep else 0
        for c in range(copies):
            new = dict(img, id=img["id"] + 100000 * c)
            images.append(new)
            anns += [dict(a, id=a["id"] + 100000 * c, image_id=new["id"])
                     for a in doc["annotations"] if a["image_id"] == img["id"]]
    coco = COCO()
    coco.dataset = dict(doc, images=images, annotations=anns)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _predictions(coco: COCO, noise: float, seed: int = 0) -> list[dict]:
    """Every person predicted with Gaussian noise (px) on its joints, and a random score."""
    rng = np.random.default_rng(seed)
    out = []
    for a in sorted(coco.dataset["annotations"], key=lambda a: a["id"]):
        k = np.array(a["keypoints"], float).reshape(-1, 3)
        k[:, :2] += rng.normal(0, noise * rng.uniform(0.2, 2.0), (len(k), 2))
        k[:, 2] = 1
        out.append({"image_id": a["image_id"], "category_id": 1,
                    "keypoints": k.reshape(-1).tolist(), "score": float(rng.uniform(.3, 1))})
    return out


@pytest.fixture(scope="module")
def ann(synthetic_root):
    return synthetic_root / "annotations" / "person_keypoints_train.json"


def test_units_reproduce_pycocotools_ap(ann):
    coco = _gt(ann)
    stats, units = coco_keypoint_eval_units(coco, _predictions(coco, 1.5), sigmas=SIGMAS)
    assert 0.2 < stats["AP"] < 0.95  # a figure with something to resample
    assert units.metric() == pytest.approx(stats["AP"], abs=1e-12)
    assert len(units) == len(coco.getImgIds()) == 48 and units.unit == "image"


def test_a_resample_is_the_ap_of_the_resampled_images(ann):
    """Counting an image twice (or not at all) gives what pycocotools gives on a split
    where that image is there twice (or absent)."""
    full = _gt(ann)
    ids = sorted(full.getImgIds())
    _, units = coco_keypoint_eval_units(full, _predictions(full, 1.5), sigmas=SIGMAS)
    counts = np.ones(len(ids), np.int64)
    counts[[0, 5, 9]] = 0
    counts[[1, 2, 30]] = [2, 3, 2]
    keep = {i for i, c in zip(ids, counts) if c}
    repeat = {i: int(c) for i, c in zip(ids, counts) if c > 1}
    resampled = _gt(ann, keep, repeat)
    preds = [dict(p, image_id=p["image_id"] + 100000 * c)
             for p in _predictions(full, 1.5) if p["image_id"] in keep
             for c in range(repeat.get(p["image_id"], 1))]
    stats, _ = coco_keypoint_eval_units(resampled, preds, sigmas=SIGMAS)
    assert units.metric(counts) == pytest.approx(stats["AP"], abs=1e-12)


def test_identical_predictions_pair_to_exactly_zero(ann):
    coco = _gt(ann)
    _, a = coco_keypoint_eval_units(coco, _predictions(coco, 1.5), sigmas=SIGMAS)
    _, b = coco_keypoint_eval_units(coco, _predictions(coco, 1.5), sigmas=SIGMAS)
    d = paired_interval(a, b, n_resamples=200)
    assert (d.low, d.high) == (0.0, 0.0)


def test_worse_predictions_pair_to_an_interval_excluding_zero(ann):
    """A shifted prediction loses AP; its paired interval excludes 0 and is far narrower
    than the two single intervals side by side (which overlap)."""
    coco = _gt(ann)
    _, good = coco_keypoint_eval_units(coco, _predictions(coco, 1.5), sigmas=SIGMAS)
    _, bad = coco_keypoint_eval_units(coco, _predictions(coco, 1.6), sigmas=SIGMAS)
    d = paired_interval(bad, good)
    assert d.high < 0 and d.contains(bad.metric() - good.metric())
    ia, ib = interval(good), interval(bad)
    assert ia.low <= ia.high and ib.high > ia.low  # side by side they overlap ...
    assert d.high - d.low < 0.6 * ((ia.high - ia.low) + (ib.high - ib.low))  # ... paired not


def test_interval_is_reproducible_from_its_seed(ann):
    coco = _gt(ann)
    _, units = coco_keypoint_eval_units(coco, _predictions(coco, 1.5), sigmas=SIGMAS)
    a, b, c = interval(units, 300, seed=7), interval(units, 300, seed=7), interval(units, 300, 8)
    assert a == b and (a.low, a.high) != (c.low, c.high)
    assert a.low < units.metric() < a.high
    assert a.bootstrap_record() == {"unit": "image", "units": 48, "n_resamples": 300,
                                    "seed": 7, "confidence": 0.95, "method": "percentile"}


def test_resamples_are_scipys_bootstrap_draws():
    """The distribution is scipy.stats.bootstrap's (percentile, one batch) from the same
    seed, value for value, and computing it imports no scipy.stats (a second per worker)."""
    import subprocess
    import sys

    from scipy.stats import bootstrap

    from okdhp_edge.evaluation.uncertainty import distribution

    rng = np.random.default_rng(0)
    hits, vis = rng.uniform(size=(30, 16)) < 0.7, np.ones((30, 16), bool)
    units = pckh_units(hits, vis, np.ones(16, bool), np.arange(30))

    def batch(idx, axis=-1):
        idx = np.atleast_2d(np.moveaxis(idx, axis, -1))
        return np.array([units.metric(np.bincount(r, minlength=30)) for r in idx])

    ref = bootstrap((np.arange(30),), batch, n_resamples=200, vectorized=True,
                    method="percentile", rng=np.random.default_rng(5)).bootstrap_distribution
    assert np.array_equal(distribution(units, 200, 5), ref)
    code = ("import sys, numpy as np; from okdhp_edge.evaluation.uncertainty import interval, "
            "pckh_units; u = pckh_units(np.ones((4, 2), bool), np.ones((4, 2), bool), "
            "np.ones(2, bool), np.arange(4)); interval(u, 100); "
            "assert 'scipy.stats' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_encoded_units_round_trip(ann):
    coco = _gt(ann)
    _, units = coco_keypoint_eval_units(coco, _predictions(coco, 1.5), sigmas=SIGMAS)
    text = units.encode()
    assert len(text) < 8000  # a few KB for 48 images, stored beside the figure
    back = UnitResults.decode(text)
    assert back.metric() == units.metric() and np.array_equal(back.ids, units.ids)
    assert interval(back, 100) == interval(units, 100)
    with pytest.raises(ValueError, match="per-unit results unreadable"):
        UnitResults.decode("not base64 at all!")


def test_pckh_units_and_pairing_rules():
    rng = np.random.default_rng(0)
    hits = rng.uniform(size=(40, 16)) < 0.7
    vis = rng.uniform(size=(40, 16)) < 0.9
    include = np.ones(16, bool)
    include[[6, 7]] = False
    u = pckh_units(hits & vis, vis, include, np.arange(40))
    expect = 100 * (hits & vis)[:, include].sum() / vis[:, include].sum()
    assert u.metric() == pytest.approx(expect) and u.unit == "person"
    assert UnitResults.decode(u.encode()).metric() == pytest.approx(expect)
    other = pckh_units(hits & vis, vis, include, np.arange(1, 41))
    with pytest.raises(ValueError, match="not paired"):
        paired_interval(u, other)
    with pytest.raises(ValueError, match="at least 2"):
        interval(pckh_units(hits[:1], vis[:1], include, [0]))


def test_score_units_on_real_mpii(mpii_tiny):
    from okdhp_edge.data.mpii import MpiiKeypoints, load_headboxes
    from okdhp_edge.evaluation.inference import oracle_heatmap_fn, predict, score_units

    ds = MpiiKeypoints(mpii_tiny / "mpii_tiny.json", mpii_tiny / "images", input_size=(256, 256))
    hb = load_headboxes(mpii_tiny / "mpii_tiny_headboxes.json", len(ds))
    res, units = score_units(ds, predict(ds, oracle_heatmap_fn(ds)), headboxes=hb)
    assert units.metric() == pytest.approx(res["PCKh@0.5"]) and len(units) == len(ds)
