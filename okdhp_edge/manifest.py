"""Student and zoo manifests: schema, validation, migration, atomic writing. No torch.

``student.yaml`` (schema 2)::

    schema: 2
    name: hg4-b1
    architecture:
      family: stacked_hourglass            # a model registry name (or encoder_decoder)
      args: {num_stacks, width, ...}       # the family's own constructor arguments
                                           # ({encoder, width_mult, decoder_width, ...})
      num_joints: int
      input_size: [w, h]
    params: int
    macs: int
    compression: {params, macs}          # relative to the largest student of the zoo
    weights: {file, sha256}
    preprocessing: {input_size, mean, std, box_padding, heatmap_stride, sigma, flip_pairs}
    accuracy: {metric, value, dataset, split, ann, images, headboxes, flip_test, stats}
    provenance: {config, run, git_commit, seed, branch, multi_branch, splits, distillation,
                 epoch, select_metric}

``multi_branch`` holds the training network's branch layout ({} for a plain run; hourglass
{shared_stacks, branches}, light {encoder, width_mult, decoder_widths});
``splits`` where its training data is and how the selection split was held out
(calibration and accuracy-controlled quantization rebuild them from it). Schema 1
manifests (hourglass only, written before the stem became a switch) are read and migrated
in memory: their architecture fields move under ``args`` with ``stem: lua``, the only stem
there was then, and their ``splits`` are unknown ({}).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from okdhp_edge.data.errors import DataError
from okdhp_edge.utils.io import atomic_write_text
from okdhp_edge.utils.values import is_finite_number

log = logging.getLogger(__name__)

STUDENT_SCHEMA = 2
ZOO_SCHEMA = 1
# accuracy.split of a student built by `bench --plan`: random weights, no accuracy
UNTRAINED_SPLIT = "untrained"


def is_untrained(manifest: dict[str, Any]) -> bool:
    """Whether a student manifest describes an untrained (planning) student."""
    return manifest.get("accuracy", {}).get("split") == UNTRAINED_SPLIT


class ManifestError(DataError):
    """A manifest that is missing or has a missing, extra or mistyped field (bad input:
    the CLIs report it in one line)."""


NUM = (int, float)
OPT_NUM = (int, float, type(None))
STUDENT_FIELDS: dict[str, Any] = {
    "schema": int,
    "name": str,
    "architecture": {"family": str, "args": dict, "num_joints": int, "input_size": list},
    "params": int,
    "macs": int,
    "compression": {"params": NUM, "macs": NUM},
    "weights": {"file": str, "sha256": str},
    "preprocessing": {"input_size": list, "mean": list, "std": list, "box_padding": NUM,
                      "heatmap_stride": int, "sigma": NUM, "flip_pairs": list},
    "accuracy": {"metric": str, "value": OPT_NUM, "dataset": str, "split": str, "ann": str,
                 "images": str, "headboxes": str, "flip_test": bool, "stats": dict},
    "provenance": {"config": str, "run": str, "git_commit": str, "seed": int, "branch": int,
                   "multi_branch": dict, "splits": dict, "distillation": dict, "epoch": int,
                   "select_metric": OPT_NUM},
}

ZOO_FIELDS: dict[str, Any] = {
    "schema": int,
    "name": str,
    "students": list,
    "run": str,
    "dataset": str,
    "metric": str,
}


def _type_label(tp: Any) -> str:
    if isinstance(tp, tuple):
        return " or ".join("null" if t is type(None) else t.__name__ for t in tp)
    return tp.__name__


def validate_fields(data: Any, fields: dict[str, Any], where: str, prefix: str = "") -> None:
    """Raise :class:`ManifestError` naming the first missing, extra or mistyped field."""
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: {prefix or 'manifest'} must be a mapping")
    for key, tp in fields.items():
        name = f"{prefix}{key}"
        if key not in data:
            raise ManifestError(f"{where}: missing field '{name}'")
        value = data[key]
        if isinstance(tp, dict):
            validate_fields(value, tp, where, f"{name}.")
            continue
        ok = isinstance(value, tp) and not (isinstance(value, bool) and tp in (int, NUM))
        if tp is bool:
            ok = isinstance(value, bool)
        if not ok:
            raise ManifestError(
                f"{where}: field '{name}' should be {_type_label(tp)}, got {value!r}")
    extra = sorted(set(data) - set(fields))
    if extra:
        raise ManifestError(f"{where}: unknown field '{prefix}{extra[0]}'")


def model_file_metadata(manifest: dict[str, Any]) -> dict[str, str]:
    """What a model file carries of its student (ONNX metadata; OpenVINO keeps it in the
    IR's ``framework`` rt_info): what a runtime needs to pre- and post-process, so that a
    bundle's manifest can be checked against the file it ships."""
    pre = manifest["preprocessing"]
    weights = {"okdhp_weights_sha256": manifest["weights"]["sha256"]} \
        if "weights" in manifest else {}  # a bundle ships the model file, not the weights
    return {
        "okdhp_student": manifest["name"],
        "okdhp_num_joints": str(manifest["architecture"]["num_joints"]),
        "okdhp_input_size": json.dumps(pre["input_size"]),
        "okdhp_mean": json.dumps(pre["mean"]),
        "okdhp_std": json.dumps(pre["std"]),
        "okdhp_heatmap_stride": str(pre["heatmap_stride"]),
        "okdhp_flip_pairs": json.dumps(pre["flip_pairs"]),
        **weights,
    }


def check_model_metadata(manifest: dict[str, Any], found: dict[str, str], where: Any) -> None:
    """ManifestError naming the first field where ``manifest`` (a student manifest with the
    bundle's preprocessing) disagrees with the metadata its model file carries; fields the
    file does not carry (a TensorRT engine carries none) are not compared."""
    for key, expected in model_file_metadata(manifest).items():
        if key in found and _decoded(found[key]) != _decoded(expected):
            raise ManifestError(f"{where}: {key[len('okdhp_'):]} {expected} differs from the "
                                f"model file's {found[key]}: the manifest was edited, or names "
                                "another student's file")


def _decoded(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def path_inside(directory: Path, rel: Any, where: Any) -> Path:
    """``directory / rel`` for a relative path a manifest names, refused (ManifestError
    naming ``where``) when it is not a string or leads outside ``directory``."""
    if not isinstance(rel, str) or not rel:
        raise ManifestError(f"{where}: file name {rel!r} is not a relative path")
    path = (Path(directory) / rel).resolve()
    if not path.is_relative_to(Path(directory).resolve()):
        raise ManifestError(f"{where}: '{rel}' lies outside {directory}")
    return path


def check_preprocessing(pre: Any, where: str) -> None:
    """The values of a ``preprocessing`` block (student manifests, bundles) that a pipeline
    computes with: sizes, normalisation, stride, sigma and flip pairs, each checked."""
    validate_fields(pre, STUDENT_FIELDS["preprocessing"], where, "preprocessing.")
    size = pre["input_size"]
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                 and 16 <= v <= 4096 for v in size):
        raise ManifestError(f"{where}: preprocessing.input_size must be [w, h], ints in "
                            "16..4096")
    if pre["heatmap_stride"] < 1 or any(v % pre["heatmap_stride"] for v in size):
        raise ManifestError(f"{where}: preprocessing.heatmap_stride must divide the input size")
    for key in ("mean", "std"):
        positive = key == "std"
        if len(pre[key]) != 3 or not all(is_finite_number(v, positive=positive)
                                         for v in pre[key]):
            raise ManifestError(f"{where}: preprocessing.{key} must be 3 finite numbers"
                                + (" > 0" if key == "std" else ""))
    if not (is_finite_number(pre["sigma"], positive=True)
            and is_finite_number(pre["box_padding"], positive=True)):
        raise ManifestError(f"{where}: preprocessing.sigma and box_padding must be > 0")
    if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(i, int) for i in p)
               for p in pre["flip_pairs"]):
        raise ManifestError(f"{where}: preprocessing.flip_pairs must be [i, j] int pairs")


def read_yaml(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid UTF-8 YAML: {exc}") from None


def _check_schema(data: Any, path: Path, current: int) -> None:
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: manifest must be a mapping")
    schema = data.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise ManifestError(f"{path}: missing or invalid field 'schema'")
    if schema > current:
        raise ManifestError(
            f"{path}: schema {schema} is newer than this okdhp_edge reads ({current}); "
            "upgrade okdhp_edge")


_V1_ARCH = ("num_stacks", "width", "depth", "stem_width")


def _student_v1_to_v2(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Schema 1 (hourglass fields inline, Lua stem) -> schema 2, in memory."""
    try:
        arch, prov = dict(data["architecture"]), dict(data["provenance"])
        args = {k: arch.pop(k) for k in _V1_ARCH}
        branches, shared = prov.pop("branches"), prov.pop("shared_stacks")
    except (KeyError, TypeError) as exc:
        raise ManifestError(f"{path}: schema 1 manifest without field {exc}") from None
    arch = {"family": arch.get("family"), "args": {**args, "stem": "lua"},
            "num_joints": arch.get("num_joints"), "input_size": arch.get("input_size")}
    prov["multi_branch"] = ({"shared_stacks": shared, "branches": branches} if branches
                            else {})
    prov["splits"] = {}
    log.debug("%s: schema 1 manifest read as schema 2 (Lua stem)", path)
    return {**data, "schema": STUDENT_SCHEMA, "architecture": arch, "provenance": prov}


def load_student_manifest(path: str | Path) -> dict[str, Any]:
    """Read and validate a ``student.yaml`` (schema 1 is migrated to the current one)."""
    path = Path(path)
    data = read_yaml(path)
    _check_schema(data, path, STUDENT_SCHEMA)
    if data["schema"] == 1:
        data = _student_v1_to_v2(data, path)
    validate_fields(data, STUDENT_FIELDS, str(path))
    check_preprocessing(data["preprocessing"], str(path))
    return data


def load_zoo_manifest(path: str | Path) -> dict[str, Any]:
    """Read and validate a ``zoo.yaml`` (a zoo directory or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "zoo.yaml"
    data = read_yaml(path)
    _check_schema(data, path, ZOO_SCHEMA)
    validate_fields(data, ZOO_FIELDS, str(path))
    return data


def zoo_students(zoo_dir: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """(student directory, validated manifest) of each student of a zoo, in index order."""
    zoo_dir = Path(zoo_dir)
    zoo = load_zoo_manifest(zoo_dir)
    out = []
    for name in zoo["students"]:
        d = zoo_dir / name
        out.append((d, load_student_manifest(d / "student.yaml")))
    return out


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(Path(path), yaml.safe_dump(data, sort_keys=False))


def unique_dir(root: Path, name: str) -> Path:
    """``root/name``, or ``root/name-2``, ``-3``... : never an existing directory."""
    root = Path(root)
    cand = root / name
    i = 2
    while cand.exists():
        cand = root / f"{name}-{i}"
        i += 1
    return cand
