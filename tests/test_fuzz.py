"""Hostile inputs, generated: the config loader and the manifest, report, bundle, COCO and
MPII readers end every case in the project's own error (one line at the CLI), never another
exception. Bounded example counts keep the default run short."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.conftest import ROOT  # noqa: E402

EXAMPLES = os.environ.get("OKDHP_FUZZ_EXAMPLES")  # more (and random) on demand
FUZZ = settings(max_examples=int(EXAMPLES or 60), deadline=None,
                derandomize=EXAMPLES is None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                   st.dictionaries(st.text(max_size=8), c,
                                                                   max_size=4)),
                      max_leaves=8)


def _mutate(doc, path: list, new):
    """``doc`` with the value at ``path`` replaced by ``new`` (deleted when new is ...)."""
    cur = doc
    for k in path[:-1]:
        cur = cur[k]
    if new is ...:
        del cur[path[-1]]
    else:
        cur[path[-1]] = new
    return doc


def _paths(doc, prefix=()):
    out = []
    if isinstance(doc, dict):
        items = doc.items()
    elif isinstance(doc, list):
        items = enumerate(doc)
    else:
        return out
    for k, v in items:
        out.append([*prefix, k])
        out += _paths(v, (*prefix, k))
    return out


def _read_cut(text: str, cut, name: str, reader, errors) -> None:
    """Write ``text`` (truncated at ``cut`` when given) to a temporary ``name`` and read it
    with ``reader``: it returns, or raises one of ``errors``."""
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / name
        f.write_text(text[:cut] if cut is not None else text)
        try:
            reader(f)
        except errors:
            pass


def _mutations(doc):
    """A strategy of (path, new value or ... for deletion, truncate-at or None)."""
    paths = _paths(doc)
    return st.tuples(st.sampled_from(paths), st.one_of(st.just(...), values),
                     st.one_of(st.none(), st.integers(0, 400)))


# ------------------------------------------------------------------------------ config

SECTIONS = ("data", "model", "loss", "train", "eval", "zoo")


@FUZZ
@given(st.dictionaries(st.sampled_from(SECTIONS + ("bogus",)),
                       st.dictionaries(st.sampled_from(
                           ("lr", "epochs", "input_size", "sigma", "name", "branches",
                            "width", "workers", "decoder_widths", "width_mult", "amp",
                            "heatmap_stride", "select_fraction", "batch_size", "unknown")),
                           values, max_size=4), max_size=3))
def test_config_loader(data):
    from okdhp_edge.config import ConfigError, load_config

    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "c.yaml"
        f.write_text(yaml.safe_dump(data))
        try:
            cfg = load_config(f)
        except ConfigError:
            return
        for v in (cfg.train.lr, cfg.data.sigma, cfg.model.width_mult):
            assert math.isfinite(v)  # what loads is usable


@FUZZ
@given(st.binary(max_size=64))
def test_config_loader_bytes(raw):
    from okdhp_edge.config import ConfigError, load_config

    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "c.yaml"
        f.write_bytes(raw)
        try:
            load_config(f)
        except ConfigError:
            pass


# ---------------------------------------------------------------------------- manifests

STUDENT = ROOT / "student_zoo" / "synthetic_full" / "hg2" / "student.yaml"


@FUZZ
@given(_mutations(yaml.safe_load(STUDENT.read_text())))
def test_student_manifest_reader(mutation):
    from okdhp_edge.manifest import ManifestError, load_student_manifest

    path, new, cut = mutation
    doc = _mutate(yaml.safe_load(STUDENT.read_text()), path, new)
    _read_cut(yaml.safe_dump(doc), cut, "student.yaml", load_student_manifest, ManifestError)


# ------------------------------------------------------------------------------ reports

REPORT = ROOT / "bench" / "reports" / "amd-epyc-2c-avx2" / "synthetic_light.json"


def _small_report() -> dict:
    rep = json.loads(REPORT.read_text())
    rep["rows"] = rep["rows"][:2]
    return rep


@FUZZ
@given(_mutations(_small_report()))
def test_report_reader_and_pick(mutation):
    from okdhp_edge.bench.decide import pick
    from okdhp_edge.bench.report import ReportError, load_report

    path, new, cut = mutation
    doc = _mutate(_small_report(), path, new)
    text = json.dumps(doc)
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "r.json"
        f.write_text(text[:cut] if cut is not None else text)
        try:
            rep = load_report(f)
        except ReportError:
            return
        pick(rep.rows, 5.0)  # what loads can be picked from


# --------------------------------------------------------------------------------- COCO

COCO = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                         "num_keypoints": 2, "bbox": [1, 2, 30, 40], "area": 1200.0,
                         "keypoints": [10, 10, 2] * 2 + [0, 0, 0] * 15}],
        "categories": [{"id": 1, "name": "person", "keypoints": ["k"] * 17,
                        "skeleton": []}]}


@FUZZ
@given(_mutations(COCO))
def test_coco_reader(mutation):
    import copy

    from okdhp_edge.data.coco import load_coco
    from okdhp_edge.data.errors import DataError

    path, new, cut = mutation
    doc = _mutate(copy.deepcopy(COCO), path, new)
    _read_cut(json.dumps(doc), cut, "ann.json", load_coco, DataError)


# --------------------------------------------------------------------------------- MPII

MPII = [{"image": "a.jpg", "center": [30.0, 30.0], "scale": 0.3,
         "joints": [[10.0, 12.0]] * 16, "joints_vis": [1] * 16}]
HEADBOXES = [{"index_in_mpii_tiny_json": 0, "headbox_x1y1x2y2": [1.0, 2.0, 20.0, 30.0]}]


@FUZZ
@given(_mutations(MPII))
def test_mpii_reader(mutation):
    import copy

    from okdhp_edge.data.errors import DataError
    from okdhp_edge.data.mpii import MpiiKeypoints

    path, new, cut = mutation
    doc = _mutate(copy.deepcopy(MPII), path, new)
    _read_cut(json.dumps(doc), cut, "mpii.json",
              lambda f: MpiiKeypoints(f, f.parent, input_size=(64, 64)), DataError)


@FUZZ
@given(_mutations(HEADBOXES))
def test_mpii_headbox_reader(mutation):
    import copy

    from okdhp_edge.data.errors import DataError
    from okdhp_edge.data.mpii import load_headboxes

    path, new, cut = mutation
    doc = _mutate(copy.deepcopy(HEADBOXES), path, new)
    _read_cut(json.dumps(doc), cut, "headboxes.json", lambda f: load_headboxes(f, 1),
              DataError)


# ------------------------------------------------------------------------------ bundles


@pytest.fixture(scope="module")
def bundle(tiny_zoo, tmp_path_factory):
    from okdhp_edge.export.bundles import export_bundle
    from okdhp_edge.manifest import zoo_students

    d, _ = zoo_students(tiny_zoo)[0]
    return export_bundle(d / "student.yaml", "onnxruntime", "fp32",
                         tmp_path_factory.mktemp("fuzzb") / "b")


@FUZZ
@given(data=st.data())
def test_bundle_reader(bundle, data):
    import shutil

    import numpy as np

    from okdhp_edge.manifest import ManifestError
    from okdhp_edge.runtime.bundle import load_bundle
    from okdhp_edge.utils.io import IntegrityError

    original = yaml.safe_load((bundle / "bundle.yaml").read_text())
    path, new, cut = data.draw(_mutations(original))
    text = yaml.safe_dump(_mutate(original, path, new))
    with tempfile.TemporaryDirectory() as tmp:
        b = Path(tmp) / "b"
        shutil.copytree(bundle, b)
        (b / "bundle.yaml").write_text(text[:cut] if cut is not None else text)
        try:
            pipe = load_bundle(b)
        except (ManifestError, IntegrityError):
            return
        img = np.zeros((48, 48, 3), np.uint8)
        assert pipe(img, (4, 4, 30, 40)).shape[1] == 3  # what loads runs


# --------------------------------------------------------------------------- detections

DETECTIONS = [{"image_id": 1, "category_id": 1, "bbox": [1.0, 2.0, 30.0, 40.0], "score": 0.9},
              {"image_id": 1, "category_id": 1, "bbox": [5.0, 5.0, 10.0, 20.0], "score": 0.4}]


@FUZZ
@given(_mutations(DETECTIONS))
def test_detection_reader(mutation):
    """A person-detection file read for the report split: one DataError, or records whose
    boxes are finite and of positive size."""
    import copy

    import numpy as np

    from okdhp_edge.data.coco import CocoKeypoints
    from okdhp_edge.data.errors import DataError

    path, new, cut = mutation
    doc = _mutate(copy.deepcopy(DETECTIONS), path, new)

    def read(f: Path) -> None:
        ann = f.parent / "ann.json"
        ann.write_text(json.dumps(COCO))
        ds = CocoKeypoints(ann, f.parent, det_file=f, input_size=(64, 64))
        for r in ds.records:
            assert np.isfinite(r.center).all() and np.isfinite(r.scale).all()
            assert (r.scale > 0).all()

    _read_cut(json.dumps(doc), cut, "dets.json", read, DataError)


# ----------------------------------------------------------------------- command lines

def _requests():
    """Every command's request class, from the door's tables."""
    from tests.test_cli import all_requests

    return all_requests()


hostile = st.one_of(st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e400", "9" * 30,
                                     "-0.0", "", "x", "1,2", "../..", "2"]),
                    st.text(max_size=6))


@FUZZ
@given(data=st.data())
def test_command_arguments(data):
    """Every command's options given hostile values, as --flag or key=value: refused with
    one line (UsageError) or read into values within each key's declared range and
    choices, never another exception."""
    from okdhp_edge.errors import UsageError
    from okdhp_edge.grammar import check_value

    requests = _requests()
    name = data.draw(st.sampled_from(sorted(requests)))
    cls = requests[name]
    argv = []
    for _ in range(data.draw(st.integers(1, 4))):
        key, value = data.draw(st.sampled_from(cls.keys())), data.draw(hostile)
        spelt = data.draw(st.booleans()) and not key.meta.get("positional")
        argv += [key.flag, value] if spelt else [f"{key.name}={value}"]
    try:
        req = cls.parse(argv)
    except UsageError as exc:
        assert "\n" not in str(exc), (name, argv)
        return
    for key, value in zip(cls.keys(), req.values().values()):
        assert check_value(value, key) == value, (name, key.name, value)
