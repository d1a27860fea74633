"""Reading deployable bundles and bundle sets (:mod:`okdhp_edge.export.bundles` writes
them): one student's model file for one backend, with everything needed to turn an image
and a person box into keypoints. Loading verifies every sha256 and the version before
anything runs. No torch.

``bundle.yaml`` (:class:`okdhp_edge.records.BundleManifest`)::

    bundle_version: 2
    okdhp_edge: 0.1.0
    student: hg4
    backend: onnxruntime
    precision: fp32
    model: model.onnx                 # the target's model file (okdhp_edge.targets)
    files: {relative path: sha256}    # every file of the bundle but bundle.yaml
    student_manifest: {...}           # the student.yaml itself (weights: not shipped)
    parity: {...}
    quantization: {...}               # INT8 only: recipe, calibration, float layers
    input_layout: NCHW                # the model file's input layout (checked at load)
    requires: executorch              # the pip extra its runner needs (absent: plain install)

A version-1 bundle (a copy of some manifest fields, the preprocessing beside them) is
migrated on read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from okdhp_edge.backends import make_runner
from okdhp_edge.backends.base import BackendUnavailable
from okdhp_edge.manifest import (
    check_file_decoder,
    check_file_recipe,
    check_model_metadata,
    path_inside,
)
from okdhp_edge.records import BundleManifest, BundleSet, ManifestError, read_record
from okdhp_edge.runtime.pipeline import KeypointPipeline
from okdhp_edge.targets import FORMATS, UnknownTarget, get_target
from okdhp_edge.utils.io import verify_sha256


def read_bundle_manifest(directory: str | Path) -> BundleManifest:
    """Read ``bundle.yaml`` strictly; refuse a newer bundle version and any bad field."""
    return read_record(BundleManifest, Path(directory) / "bundle.yaml")


def verify_bundle(directory: str | Path) -> BundleManifest:
    """Check every file's sha256 (IntegrityError on a corrupted, truncated or tampered
    file); return the manifest. The model must be one of the verified files, every file
    inside the bundle, and the file list not empty."""
    directory = Path(directory)
    man = read_bundle_manifest(directory)
    for rel, digest in man.files.items():
        verify_sha256(path_inside(directory, rel, directory / "bundle.yaml"), digest)
    return man


def unavailable_text(directory: Path, exc: Exception, requires: Optional[str]) -> str:
    """Why a bundle cannot run here: its runner's reason, and the extra the bundle needs
    where that reason does not already name it."""
    install = f"pip install 'okdhp_edge[{requires}]'" if requires else ""
    need = f" (this bundle needs {install})" if install and install not in str(exc) else ""
    return f"{directory}: {exc}{need}"


def load_bundle(directory: str | Path, threads: int = 1, device: str = "cpu"
                ) -> KeypointPipeline:
    """A ready :class:`KeypointPipeline` for a verified bundle."""
    directory = Path(directory)
    man = verify_bundle(directory)
    try:
        target = get_target(man.backend, man.precision)
    except UnknownTarget as exc:
        raise ManifestError(f"{directory / 'bundle.yaml'}: {exc}") from None
    expected = FORMATS[target.export].model_file if target.export else None
    if man.model != expected:
        raise ManifestError(f"{directory / 'bundle.yaml'}: {target.label} runs "
                            f"'{expected}', but the bundle's model is '{man.model}' (an edited "
                            "backend or precision?)")
    runner = make_runner(man.backend, man.precision, threads,
                         device if target.device in ("cpu", "host") else target.device)
    try:
        runner.load(str(directory / man.model))
    except BackendUnavailable as exc:
        raise BackendUnavailable(unavailable_text(directory, exc, man.requires)) from None
    found = runner.model_metadata()
    check_model_metadata(man.student_record(), found, directory / "bundle.yaml")
    check_file_recipe(man.quantization.recipe if man.quantization else None, found,
                      directory / "bundle.yaml")
    check_file_decoder(man.decoder, found, directory / "bundle.yaml")
    w, h = man.preprocessing.input_size
    if runner.input_hw() not in (None, (h, w)):
        raise ManifestError(f"{directory / 'bundle.yaml'}: preprocessing.input_size {[w, h]} "
                            f"does not match the model file's input (h, w) {runner.input_hw()}")
    layout = man.input_layout
    if runner.input_layout() not in (None, layout):
        raise ManifestError(f"{directory / 'bundle.yaml'}: input_layout {layout} does not match "
                            f"the model file's {runner.input_layout()}")
    return KeypointPipeline(runner, man.preprocessing, manifest=man, layout=layout)


def read_set(directory: Path) -> BundleSet:
    """Read and fully verify a bundle set: its schema and versions, every file inside the
    set, every sha256 (ManifestError / IntegrityError in one line otherwise)."""
    directory = Path(directory)
    idx = read_record(BundleSet, directory / "bundles.yaml")
    where = directory / "bundles.yaml"
    for rel, digest in idx.report_files.items():
        verify_sha256(path_inside(directory, rel, where), digest)
    for e in idx.bundles:
        bdir = path_inside(directory, e.path, where)
        verify_sha256(bdir / "bundle.yaml", e.bundle_sha256)
        verify_bundle(bdir)
    return idx
