"""``okdhp bench parity``: a bundle set's heatmaps here against another device's (what
``make arm-check`` runs under QEMU), and that a bundle that computes something else fails."""

import numpy as np
import pytest

from okdhp_edge.bench.parity import load, save
from tests.conftest import okdhp


@pytest.fixture(scope="module")
def bundle_set(tiny_zoo, tmp_path_factory):
    from okdhp_edge.export.bundles import export_all

    return export_all(tiny_zoo, tmp_path_factory.mktemp("parity") / "set",
                      ("onnxruntime", "openvino"), ("fp32",))


def test_the_same_set_agrees_with_itself_and_a_perturbed_reference_does_not(
        bundle_set, coco_tiny, tmp_path):
    ref = tmp_path / "ref.npz"
    made = okdhp("bench", "parity", "--bundles", bundle_set, "--out", ref, "--images",
                 coco_tiny / "images", "--ann", coco_tiny / "person_keypoints_tiny.json",
                 "--max-images", "2")
    assert made.returncode == 0, made.stderr
    arrays, meta = load(ref)
    assert set(meta["bundles"]) == {f"{s}/{b}-fp32" for s in ("hg2", "hg3")
                                    for b in ("onnxruntime", "openvino")}
    (x,) = [v for k, v in arrays.items() if k.startswith("input/")]
    assert len(x) == 2 + 2  # two seeded noise inputs, two person crops

    same = okdhp("bench", "parity", "--bundles", bundle_set, "--against", ref)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "4 of 4 bundles agree" in same.stdout

    # one bundle's reference heatmaps moved past the fp32 bound: that bundle, and only it
    bad = "hg3/openvino-fp32"
    arrays[f"heatmaps/{bad}"] = arrays[f"heatmaps/{bad}"] + 0.01
    save(tmp_path / "perturbed.npz", arrays, meta)
    differs = okdhp("bench", "parity", "--bundles", bundle_set, "--against",
                    tmp_path / "perturbed.npz")
    assert differs.returncode == 1
    assert f"differ: {bad}" in differs.stdout and "3 of 4 bundles agree" in differs.stdout


def test_a_bundle_the_reference_has_and_this_set_lacks_fails(bundle_set, tmp_path):
    ref = tmp_path / "ref.npz"
    assert okdhp("bench", "parity", "--bundles", bundle_set, "--out", ref).returncode == 0
    arrays, meta = load(ref)
    meta["bundles"]["hg9/onnxruntime-fp32"] = dict(meta["bundles"]["hg2/onnxruntime-fp32"])
    arrays["heatmaps/hg9/onnxruntime-fp32"] = arrays["heatmaps/hg2/onnxruntime-fp32"]
    save(ref, arrays, meta)
    res = okdhp("bench", "parity", "--bundles", bundle_set, "--against", ref)
    assert res.returncode == 1 and "hg9/onnxruntime-fp32: FAILED: not in this run's" \
        in res.stdout


def test_bad_requests_are_one_line(bundle_set, tmp_path):
    res = okdhp("bench", "parity", "--bundles", bundle_set)
    assert res.returncode == 2 and "needs --out" in res.stderr
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    res = okdhp("bench", "parity", "--bundles", bundle_set, "--against", junk)
    assert res.returncode == 2 and "not a file written by okdhp bench parity" in res.stderr
    # an object array (a pickle) in the file is refused, not unpickled
    np.savez(tmp_path / "pickled.npz", meta=np.array([object()], dtype=object))
    res = okdhp("bench", "parity", "--bundles", bundle_set, "--against",
                tmp_path / "pickled.npz")
    assert res.returncode == 2 and "not a file written by" in res.stderr
