"""Student and zoo manifests: schema, validation, atomic writing. No torch.

``student.yaml`` (schema 1)::

    schema: 1
    name: hg4-b1
    architecture: {family, num_stacks, width, depth, stem_width, num_joints, input_size}
    params: int
    macs: int
    compression: {params, macs}          # relative to the largest student of the zoo
    weights: {file, sha256}
    preprocessing: {input_size, mean, std, box_padding, heatmap_stride, sigma, flip_pairs}
    accuracy: {metric, value, dataset, split, ann, images, headboxes, flip_test, stats}
    provenance: {config, run, git_commit, seed, branch, branches, shared_stacks,
                 distillation, epoch, select_metric}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from okdhp_edge.utils.io import atomic_write_text

SCHEMA = 1


class ManifestError(ValueError):
    """A manifest with a missing, extra or mistyped field."""


NUM = (int, float)
OPT_NUM = (int, float, type(None))
STUDENT_FIELDS: dict[str, Any] = {
    "schema": int,
    "name": str,
    "architecture": {"family": str, "num_stacks": int, "width": int, "depth": int,
                     "stem_width": int, "num_joints": int, "input_size": list},
    "params": int,
    "macs": int,
    "compression": {"params": NUM, "macs": NUM},
    "weights": {"file": str, "sha256": str},
    "preprocessing": {"input_size": list, "mean": list, "std": list, "box_padding": NUM,
                      "heatmap_stride": int, "sigma": NUM, "flip_pairs": list},
    "accuracy": {"metric": str, "value": OPT_NUM, "dataset": str, "split": str, "ann": str,
                 "images": str, "headboxes": str, "flip_test": bool, "stats": dict},
    "provenance": {"config": str, "run": str, "git_commit": str, "seed": int, "branch": int,
                   "branches": list, "shared_stacks": int, "distillation": dict, "epoch": int,
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


def read_yaml(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None


def _check_schema(data: Any, path: Path) -> None:
    if isinstance(data, dict) and isinstance(data.get("schema"), int) and data["schema"] > SCHEMA:
        raise ManifestError(
            f"{path}: schema {data['schema']} is newer than this okdhp_edge reads ({SCHEMA}); "
            "upgrade okdhp_edge")


def load_student_manifest(path: str | Path) -> dict[str, Any]:
    """Read and validate a ``student.yaml``."""
    path = Path(path)
    data = read_yaml(path)
    _check_schema(data, path)
    validate_fields(data, STUDENT_FIELDS, str(path))
    return data


def load_zoo_manifest(path: str | Path) -> dict[str, Any]:
    """Read and validate a ``zoo.yaml`` (a zoo directory or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "zoo.yaml"
    data = read_yaml(path)
    _check_schema(data, path)
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
