"""Students as files: safetensors weights + ``student.yaml``; load with sha256 checks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from okdhp_edge.errors import WriteError
from okdhp_edge.manifest import (
    RESERVATION,
    bound_fields,
    reserved_for,
    unique_dir,
    verified_student_manifest,
)
from okdhp_edge.models.student import Student
from okdhp_edge.records import (
    Accuracy,
    Architecture,
    Compression,
    ManifestError,
    Preprocessing,
    Provenance,
    StudentManifest,
    WeightsRef,
    ZooManifest,
    write_record,
)
from okdhp_edge.utils.io import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    sha256_file,
)

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.safetensors"


def save_student(directory: Path, model: torch.nn.Module, manifest: StudentManifest
                 ) -> StudentManifest:
    """Write weights (safetensors, atomically) and ``student.yaml``; returns the manifest
    with its weights fields filled. Refuses an existing student directory."""
    from safetensors.torch import save_file

    directory = Path(directory)
    if (directory / "student.yaml").exists():
        raise FileExistsError(f"{directory}: a student is already there; not overwriting")
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = bound_fields(manifest)  # in the weights' header, so under their sha256
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata=meta))
    manifest = manifest.replace(weights=WeightsRef(WEIGHTS_FILE,
                                                   sha256_file(directory / WEIGHTS_FILE)))
    write_record(directory / "student.yaml", manifest)
    return manifest


def with_compression(manifests: dict[str, StudentManifest]) -> dict[str, StudentManifest]:
    """Each manifest with its ``compression``: the largest student's params and MACs over
    its own."""
    max_p = max(v.params for v in manifests.values())
    max_m = max(v.macs for v in manifests.values())
    return {k: man.replace(compression=Compression(round(max_p / man.params, 4),
                                                   round(max_m / man.macs, 4)))
            for k, man in manifests.items()}


def write_zoo_of(root: Path, name: str, manifests: dict[str, StudentManifest],
                 models: dict[str, torch.nn.Module], run: str, dataset: str,
                 files: Optional[dict[str, str]] = None,
                 student_files: Optional[dict[str, dict[str, bytes]]] = None) -> Path:
    """Write a zoo of ``models`` (their manifests completed with ``compression``) as
    ``root/name``, or ``name-2``... when taken; returns its folder. The one zoo writer of
    training and planning. ``files``: more text files to put beside the students;
    ``student_files``: student -> {file: content} to write in its folder (a
    quantization-aware student's int8 program, which its manifest names with its sha256).

    The zoo is built in a hidden folder and renamed into place: a kill while writing leaves
    no half zoo under the zoo's name, and a zoo of the same name that another run renamed
    into place meanwhile is kept (this one takes the next free name)."""
    manifests = with_compression(manifests)
    zoo = ZooManifest(schema=ZooManifest.VERSION, name=name,
                      students=sorted(manifests, key=lambda n: manifests[n].params), run=run,
                      dataset=dataset, metric=next(iter(manifests.values())).accuracy.metric)
    build = _zoo_build_dir(Path(root), name)
    try:
        for student, man in manifests.items():
            for rel, data in (student_files or {}).get(student, {}).items():
                (build / student).mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(build / student / rel, data)
            save_student(build / student, models[student].to(
                memory_format=torch.contiguous_format), man)
        for rel, text in (files or {}).items():
            atomic_write_text(build / rel, text)
        return _rename_into_place(build, Path(root), zoo)
    except BaseException:
        import shutil

        shutil.rmtree(build, ignore_errors=True)
        raise


def _zoo_build_dir(root: Path, name: str) -> Path:
    import os
    import tempfile

    from okdhp_edge.utils.io import UMASK, remove_stale_temporaries, temp_prefix

    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(root)  # a killed zoo write's half folder
    build = Path(tempfile.mkdtemp(prefix=temp_prefix(name, partial=True), dir=root))
    os.chmod(build, 0o777 & ~UMASK)
    return build


def _rename_into_place(build: Path, root: Path, zoo: ZooManifest, tries: int = 100) -> Path:
    """Rename ``build`` to ``root/<zoo.name>`` if its run held that name
    (:func:`~okdhp_edge.manifest.reserve_name`), else to the first free
    ``root/<zoo.name>[-i]`` (its ``zoo.yaml`` naming it); a name another writer takes
    between the check and the rename is skipped."""
    import os

    held = root / zoo.name
    if zoo.run and reserved_for(held) == zoo.run:  # the name this run held since its start
        (held / RESERVATION).unlink()
        write_record(build / "zoo.yaml", zoo)
        os.rename(build, held)  # onto the empty folder it held
        return held
    for _ in range(tries):
        zoo_dir = unique_dir(root, zoo.name)
        write_record(build / "zoo.yaml", zoo.replace(name=zoo_dir.name))
        try:
            os.rename(build, zoo_dir)
            return zoo_dir
        except OSError:
            if not zoo_dir.exists():
                raise
            log.info("%s was written by another run meanwhile; taking the next name", zoo_dir)
    raise WriteError(f"{root}: no free name for zoo '{zoo.name}' after {tries} tries")


def build_student(manifest: StudentManifest) -> torch.nn.Module:
    """The (untrained) model a manifest's ``architecture`` describes, from the registry."""
    from okdhp_edge.models.registry import create_model

    arch = manifest.architecture
    try:
        return create_model(arch.family, num_joints=arch.num_joints, **arch.args)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"student '{manifest.name}': architecture {arch.family} "
                            f"{arch.args} cannot be built: {exc}") from None


def load_student(path: str | Path, device: str | torch.device = "cpu"
                 ) -> tuple[torch.nn.Module, StudentManifest]:
    """Model (eval mode) and manifest of a ``student.yaml``; verifies the weights' sha256
    and that the manifest's architecture and preprocessing are the ones saved with them."""
    from safetensors.torch import load_file

    path = Path(path)
    manifest = verified_student_manifest(path)
    weights = path.parent / manifest.weights.file
    model = build_student(manifest)
    model.load_state_dict(load_file(str(weights), device=str(device)))
    return model.to(device).eval(), manifest


def student_manifest(name: str, model: Student, input_size: list[int], params: int,
                     macs: int, preprocessing: Preprocessing, accuracy: Accuracy,
                     provenance: Provenance) -> StudentManifest:
    """A student manifest of the current schema (weights and compression filled in later).
    ``model`` keeps the :class:`~okdhp_edge.models.student.Student` contract."""
    arch = Architecture(model.family, model.arch(), int(model.num_joints), list(input_size))
    return StudentManifest(
        schema=StudentManifest.VERSION, name=name, architecture=arch, params=int(params),
        macs=int(macs), compression=Compression(1.0, 1.0), weights=WeightsRef(WEIGHTS_FILE, ""),
        preprocessing=preprocessing, accuracy=accuracy, provenance=provenance)


def preprocessing_of(dcfg: Any, flip_pairs: list) -> Preprocessing:
    """Preprocessing and decoding parameters a deployment needs."""
    return Preprocessing(
        input_size=list(dcfg.input_size), mean=list(dcfg.mean), std=list(dcfg.std),
        box_padding=float(dcfg.box_padding), heatmap_stride=int(dcfg.heatmap_stride),
        sigma=float(dcfg.sigma), flip_pairs=[list(p) for p in flip_pairs])


def torch_engine(model: torch.nn.Module, device: str | torch.device = "cpu"):
    """Engine ``images [N,3,H,W] -> heatmaps [N,K,h,w]`` (numpy) from a stacked hourglass."""

    @torch.no_grad()
    def run(images: np.ndarray) -> np.ndarray:
        out = model(torch.from_numpy(np.ascontiguousarray(images)).to(device))
        return out.heatmap.float().cpu().numpy()

    return run


def evaluate_student(path: str | Path, dataset: Optional[str] = None, ann: str = "",
                     images: str = "", headboxes: str = "", flip: Optional[bool] = None,
                     batch_size: int = 32) -> dict[str, Any]:
    """Re-evaluate a student from its manifest (its own report split unless overridden),
    with the headline metric's bootstrap interval (``ci95``, ``bootstrap``)."""
    from okdhp_edge.evaluation.datasets import report_dataset
    from okdhp_edge.evaluation.inference import engine_heatmap_fn, predict, score_units
    from okdhp_edge.evaluation.uncertainty import accuracy_fields
    from okdhp_edge.schema import to_dict

    model, man = load_student(path)
    ds = report_dataset(man, dataset, ann, images, headboxes)
    flip = man.accuracy.flip_test if flip is None else flip
    fn = engine_heatmap_fn(torch_engine(model), ds.flip_index if flip else None)
    res, units = score_units(ds, predict(ds, fn, batch_size=batch_size),
                             headboxes=ds.headboxes)
    ci = accuracy_fields(units)
    if ci:
        res.update(ci95=ci["ci95"], bootstrap=to_dict(ci["bootstrap"]))
    res.update(student=man.name, flip_test=flip)
    return res
