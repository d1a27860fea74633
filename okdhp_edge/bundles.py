"""Bundle sets for target devices: every student of a zoo exported for the requested
backends, plus the report split (images and annotations) to measure accuracy there.

``DIR/bundles.yaml`` indexes the set; ``DIR/<student>/<backend>-<precision>/`` are
bundles (see :mod:`okdhp_edge.runtime.bundle`); ``DIR/report_data/`` holds the report
split. Every file carries its sha256; the bench on the target refuses any mismatch
before it runs anything. Reading a set needs no torch.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Optional

from okdhp_edge import __version__
from okdhp_edge.export.quantize import RECORD_FIELDS, QuantRecipe
from okdhp_edge.manifest import (
    ManifestError,
    path_inside,
    read_yaml,
    validate_fields,
    write_yaml,
)
from okdhp_edge.runtime.bundle import BUNDLE_VERSION, read_bundle_manifest, verify_bundle
from okdhp_edge.targets import (
    BACKEND_INFO,
    FORMATS,
    TARGETS,
    UnknownTarget,
    get_target,
    targets_for,
)
from okdhp_edge.utils.cli import UsageError
from okdhp_edge.utils.io import sha256_file, verify_sha256

log = logging.getLogger(__name__)

SET_VERSION = 1
# bundles.yaml, the index of a set: what read_set accepts, field by field
SET_SCHEMA: dict[str, Any] = {
    "set_version": int, "bundle_version": int, "okdhp_edge": str, "zoo": str, "metric": str,
    "bundles": list, "skipped": list, "report_files": dict,
    "report_data": {"dataset": str, "ann": str, "images": str, "headboxes": str}}
SET_ENTRY_SCHEMA: dict[str, Any] = {"student": str, "backend": str, "precision": str,
                                    "path": str, "bundle_sha256": str}


def _bundle_files(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): sha256_file(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != "bundle.yaml"}


def export_bundle(student_yaml: Path, backend: str, precision: str, out: Path,
                  force: bool = False, recipe: Optional[QuantRecipe] = None) -> Path:
    """Write a deployable bundle for one (student, backend, precision): the target's model
    files (with the layout they have in the export folder), ``bundle.yaml`` with every
    sha256, the preprocessing, the student's manifest and, for INT8, the recipe."""
    from okdhp_edge.export.exporter import export_student
    from okdhp_edge.manifest import load_student_manifest

    try:
        t = get_target(backend, precision)
    except UnknownTarget as exc:
        raise UsageError(str(exc)) from None
    if not t.bundle:
        raise UsageError(f"no torch-free bundle of {t.label} (bundles exist for: "
                         + ", ".join(x.label for x in TARGETS.values() if x.bundle) + ")")
    out = Path(out)
    if (out / "bundle.yaml").exists() and not force:
        raise UsageError(f"{out}: a bundle is already there (use a new --out)")
    man = load_student_manifest(student_yaml)
    entry = export_student(student_yaml, formats=(t.export,), recipe=recipe)["formats"][t.export]
    if not entry.get("available"):
        raise UsageError(f"{t.label} unavailable here: {entry.get('reason')}")
    src_dir = Path(student_yaml).parent / "export"
    for rel in FORMATS[t.export].files:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_dir / rel, out / rel)
    bundle = {
        "bundle_version": BUNDLE_VERSION, "okdhp_edge": __version__, "student": man["name"],
        "backend": backend, "precision": precision,
        "model": FORMATS[t.export].model_file, "files": _bundle_files(out),
        "preprocessing": man["preprocessing"],
        "student_manifest": {k: man[k] for k in ("name", "architecture", "params", "macs",
                                                   "compression", "accuracy", "provenance")},
        "parity": entry.get("parity", {}),
    }
    if "recipe" in entry:
        bundle["quantization"] = {k: entry[k] for k in RECORD_FIELDS if k in entry}
    bundle["input_layout"] = FORMATS[t.export].layout
    if BACKEND_INFO[backend].runtime_extra:
        bundle["requires"] = BACKEND_INFO[backend].runtime_extra
    write_yaml(out / "bundle.yaml", bundle)
    return out


def _copy_report_data(man: dict[str, Any], out: Path) -> dict[str, Any]:
    """Copy the report split's annotation file, its images and head boxes."""
    acc = man["accuracy"]
    data = out / "report_data"
    (data / "images").mkdir(parents=True, exist_ok=True)
    if not acc["ann"]:  # untrained plan students: latency only, no data to score on
        return {"dataset": acc["dataset"], "ann": "", "images": "", "headboxes": ""}
    ann = Path(acc["ann"])
    shutil.copyfile(ann, data / "annotations.json")
    if acc["dataset"] == "mpii":
        from okdhp_edge.data.mpii import image_files
    else:
        from okdhp_edge.data.coco import image_files
    for name in image_files(ann):
        shutil.copyfile(Path(acc["images"]) / name, data / "images" / name)
    if acc.get("headboxes"):
        hb = Path(acc["headboxes"])
        shutil.copyfile(hb, data / f"headboxes{hb.suffix}")
    return {"dataset": acc["dataset"], "ann": "report_data/annotations.json",
            "images": "report_data/images",
            "headboxes": f"report_data/headboxes{Path(acc['headboxes']).suffix}"
            if acc.get("headboxes") else ""}


def export_all(zoo: Path, out: Path, backends: tuple[str, ...],
               precisions: Optional[tuple[str, ...]] = None,
               recipe: Optional[QuantRecipe] = None) -> Path:
    """Export every student of ``zoo`` for ``backends`` into one bundle set at ``out``."""
    from okdhp_edge.manifest import load_zoo_manifest, zoo_students

    out = Path(out)
    if (out / "bundles.yaml").exists():
        raise UsageError(f"{out}: a bundle set is already there (use a new --out)")
    zoo_man = load_zoo_manifest(zoo)
    students = zoo_students(zoo)
    entries, skipped = [], []
    try:
        targets = targets_for(backends, precisions, bundle_only=True)
    except UnknownTarget as exc:
        raise UsageError(str(exc)) from None
    for d, man in students:
        for t in targets:
            b, p = t.backend, t.precision
            dest = out / man["name"] / f"{b}-{p}"
            try:
                export_bundle(d / "student.yaml", b, p, dest, recipe=recipe)
            except UsageError as exc:
                skipped.append({"student": man["name"], "backend": b, "precision": p,
                                "reason": str(exc)})
                log.warning("skipped %s %s %s: %s", man["name"], b, p, exc)
                continue
            entries.append({"student": man["name"], "backend": b, "precision": p,
                            "path": str(dest.relative_to(out)),
                            "bundle_sha256": sha256_file(dest / "bundle.yaml")})
    report = _copy_report_data(students[0][1], out)
    files = {str(p.relative_to(out)): sha256_file(p)
             for p in sorted((out / "report_data").rglob("*")) if p.is_file()}
    write_yaml(out / "bundles.yaml", {
        "set_version": SET_VERSION, "bundle_version": BUNDLE_VERSION, "okdhp_edge": __version__,
        "zoo": zoo_man["name"], "metric": zoo_man["metric"], "bundles": entries,
        "skipped": skipped, "report_data": report, "report_files": files})
    return out


def read_set(directory: Path) -> dict[str, Any]:
    """Read and fully verify a bundle set: its schema and versions, every file inside the
    set, every sha256 (ManifestError / IntegrityError in one line otherwise)."""
    directory = Path(directory)
    idx = _read_set_index(directory)
    where = directory / "bundles.yaml"
    for rel, digest in idx["report_files"].items():
        verify_sha256(path_inside(directory, rel, where), str(digest))
    for e in idx["bundles"]:
        bdir = path_inside(directory, e["path"], where)
        verify_sha256(bdir / "bundle.yaml", e["bundle_sha256"])
        verify_bundle(bdir)
    return idx


def _read_set_index(directory: Path) -> dict[str, Any]:
    """``bundles.yaml`` checked against :data:`SET_SCHEMA`; a newer version is refused."""
    where = str(directory / "bundles.yaml")
    idx = read_yaml(directory / "bundles.yaml")
    if not isinstance(idx, dict) or not isinstance(idx.get("set_version"), int):
        raise ManifestError(f"{where}: not an okdhp_edge bundle set (no set_version)")
    if idx["set_version"] > SET_VERSION or idx.get("bundle_version", 0) > BUNDLE_VERSION:
        raise ManifestError(
            f"{directory}: written by okdhp_edge {idx.get('okdhp_edge', '?')} (set version "
            f"{idx['set_version']}, bundle version {idx.get('bundle_version')}), newer than this "
            f"okdhp_edge {__version__} reads; upgrade okdhp_edge on this device")
    validate_fields(idx, SET_SCHEMA, where)
    for i, e in enumerate(idx["bundles"]):
        validate_fields(e, SET_ENTRY_SCHEMA, where, f"bundles[{i}].")
    return idx


def bundle_candidates(directory: Path, students: Optional[tuple[str, ...]] = None):
    """Bench candidates from a verified bundle set: (candidates, zoo name)."""
    from okdhp_edge.bench.run import Candidate

    directory = Path(directory)
    idx = read_set(directory)
    rd = idx["report_data"]
    by_student: dict[str, Candidate] = {}
    for e in idx["bundles"]:
        if students and e["student"] not in students:
            continue
        bdir = directory / e["path"]
        man = read_bundle_manifest(bdir)
        fmt = _format_of(e["backend"], e["precision"])
        c = by_student.get(e["student"])
        if c is None:
            sm = dict(man["student_manifest"])
            sm["preprocessing"] = man["preprocessing"]
            if rd["ann"]:
                sm["accuracy"] = dict(sm["accuracy"], ann=str(directory / rd["ann"]),
                                      images=str(directory / rd["images"]),
                                      headboxes=str(directory / rd["headboxes"])
                                      if rd["headboxes"] else "")
            c = Candidate(e["student"], sm, None, directory, {"formats": {}})
            by_student[e["student"]] = c
        c.export["formats"][fmt] = {"available": True, "backend": e["backend"],
                                    "file": str(Path(e["path"]) / man["model"]),
                                    "parity": man.get("parity", {}),
                                    "file_bytes": _model_bytes(bdir, man),
                                    **(man.get("quantization") or {})}
    if not by_student:
        raise ManifestError(f"{directory}: no bundles selected")
    return list(by_student.values()), idx["zoo"]


def _format_of(backend: str, precision: str) -> str:
    try:
        fmt = get_target(backend, precision).export
    except UnknownTarget:
        fmt = None
    if fmt is None:
        raise ManifestError(f"bundle backend/precision {backend}/{precision} is not known")
    return fmt


def _model_bytes(bdir: Path, man: dict[str, Any]) -> int:
    """Size of a bundle's model files (all but bundle.yaml)."""
    return sum((bdir / rel).stat().st_size for rel in man["files"])
