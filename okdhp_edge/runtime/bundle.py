"""Deployable bundles: one student's model file for one backend, with everything needed to
turn an image and a person box into keypoints. Loading verifies every sha256 and the
bundle version before anything runs. No torch.

``bundle.yaml``::

    bundle_version: 1
    okdhp_edge: 0.1.0
    student: hg4
    backend: onnxruntime
    precision: fp32
    model: model.onnx                 # the target's model file (okdhp_edge.targets)
    files: {relative path: sha256}    # every file of the bundle but bundle.yaml
    preprocessing: {...}              # as in student.yaml
    student_manifest: {...}           # params, macs, accuracy, provenance
    parity: {...}
    quantization: {...}               # INT8 only: recipe, calibration, float layers
    input_layout: NCHW                # the model file's input layout (checked at load)
    requires: executorch              # the pip extra its runner needs (absent: plain install)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from okdhp_edge.backends import make_runner
from okdhp_edge.backends.base import BackendUnavailable
from okdhp_edge.manifest import (
    ManifestError,
    check_model_metadata,
    check_preprocessing,
    path_inside,
    read_yaml,
    validate_fields,
)
from okdhp_edge.runtime.pipeline import KeypointPipeline
from okdhp_edge.targets import LAYOUTS, UnknownTarget, get_target
from okdhp_edge.utils.io import verify_sha256

BUNDLE_VERSION = 1
BUNDLE_FIELDS = ("bundle_version", "okdhp_edge", "student", "backend", "precision", "model",
                 "files", "preprocessing", "student_manifest", "parity")


BUNDLE_SCHEMA: dict[str, Any] = {
    "bundle_version": int, "okdhp_edge": str, "student": str, "backend": str,
    "precision": str, "model": str, "files": dict, "preprocessing": dict,
    "student_manifest": dict, "parity": dict}
BUNDLE_OPTIONAL = ("quantization", "input_layout", "requires")


def read_bundle_manifest(directory: str | Path) -> dict[str, Any]:
    """Read ``bundle.yaml``; refuse a newer bundle version and missing fields."""
    directory = Path(directory)
    man = read_yaml(directory / "bundle.yaml")
    if not isinstance(man, dict):
        raise ManifestError(f"{directory / 'bundle.yaml'}: not a mapping")
    version = man.get("bundle_version")
    if not isinstance(version, int):
        raise ManifestError(f"{directory / 'bundle.yaml'}: missing field 'bundle_version'")
    if version > BUNDLE_VERSION:
        raise ManifestError(
            f"{directory}: bundle version {version} (written by okdhp_edge "
            f"{man.get('okdhp_edge', '?')}) is newer than this okdhp_edge reads "
            f"({BUNDLE_VERSION}); upgrade okdhp_edge")
    where = str(directory / "bundle.yaml")
    validate_fields({k: man[k] for k in BUNDLE_FIELDS if k in man}, BUNDLE_SCHEMA, where)
    extra = sorted(set(man) - set(BUNDLE_FIELDS) - set(BUNDLE_OPTIONAL))
    if extra:
        raise ManifestError(f"{where}: unknown field '{extra[0]}'")
    check_preprocessing(man["preprocessing"], where)
    if man.get("input_layout", "NCHW") not in LAYOUTS:
        raise ManifestError(f"{where}: input_layout must be one of {', '.join(LAYOUTS)}")
    if not isinstance(man.get("requires", ""), str):
        raise ManifestError(f"{where}: requires must name a pip extra")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in man["files"].items()):
        raise ManifestError(f"{where}: 'files' must map file names to sha256 digests")
    return man


def verify_bundle(directory: str | Path) -> dict[str, Any]:
    """Check every file's sha256 (IntegrityError on a corrupted, truncated or tampered
    file); return the manifest. The model must be one of the verified files, every file
    inside the bundle, and the file list not empty."""
    directory = Path(directory)
    man = read_bundle_manifest(directory)
    files = man["files"]
    if not isinstance(files, dict) or not files:
        raise ManifestError(f"{directory / 'bundle.yaml'}: 'files' lists nothing to verify")
    if man["model"] not in files:
        raise ManifestError(f"{directory / 'bundle.yaml'}: model '{man['model']}' is not one "
                            "of the verified files")
    for rel, digest in files.items():
        verify_sha256(path_inside(directory, rel, directory / "bundle.yaml"), digest)
    return man


def load_bundle(directory: str | Path, threads: int = 1, device: str = "cpu"
                ) -> KeypointPipeline:
    """A ready :class:`KeypointPipeline` for a verified bundle."""
    directory = Path(directory)
    man = verify_bundle(directory)
    try:
        target = get_target(man["backend"], man["precision"])
    except UnknownTarget as exc:
        raise ManifestError(f"{directory / 'bundle.yaml'}: {exc}") from None
    runner = make_runner(man["backend"], man["precision"], threads,
                         device if target.device in ("cpu", "host") else target.device)
    try:
        runner.load(str(directory / man["model"]))
    except BackendUnavailable as exc:
        extra = man.get("requires")
        need = f" (this bundle needs pip install 'okdhp_edge[{extra}]')" if extra else ""
        raise BackendUnavailable(f"{directory}: {exc}{need}") from None
    check_model_metadata({**man["student_manifest"], "preprocessing": man["preprocessing"]},
                         runner.model_metadata(), directory / "bundle.yaml")
    w, h = man["preprocessing"]["input_size"]
    if runner.input_hw() not in (None, (h, w)):
        raise ManifestError(f"{directory / 'bundle.yaml'}: preprocessing.input_size {[w, h]} "
                            f"does not match the model file's input (h, w) {runner.input_hw()}")
    layout = man.get("input_layout", "NCHW")
    if runner.input_layout() not in (None, layout):
        raise ManifestError(f"{directory / 'bundle.yaml'}: input_layout {layout} does not match "
                            f"the model file's {runner.input_layout()}")
    return KeypointPipeline(runner, man["preprocessing"], manifest=man, layout=layout)
