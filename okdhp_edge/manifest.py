"""A zoo on disk: its students' manifests (the records are :mod:`okdhp_edge.records`), the
paths they name, and the metadata a model file carries of its student. No torch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

from okdhp_edge.records import (
    ManifestError,
    StudentManifest,
    ZooManifest,
    read_record,
)
from okdhp_edge.utils.io import numbered_names
from okdhp_edge.utils.values import is_plain_name

log = logging.getLogger(__name__)



# the metadata key of the recipe a quantized file was made with (its JSON)
RECIPE_KEY = "okdhp_quant_recipe"
# the metadata key of the form of the decoder in a file (absent: transposed)
DECODER_KEY = "okdhp_decoder"


def check_file_decoder(recorded: str, found: dict[str, str], where: Any) -> None:
    """ManifestError when a file that carries metadata says another decoder form than its
    record (a bundle's ``decoder``)."""
    if found and found.get(DECODER_KEY, "transposed") != recorded:
        raise ManifestError(f"{where}: decoder {recorded} differs from the model file's "
                            f"{found.get(DECODER_KEY, 'transposed')}: the record was edited")


def check_file_recipe(recorded: Optional[dict], found: dict[str, str], where: Any) -> None:
    """ManifestError when a quantized file carries the recipe it was made with and the
    record beside it (a bundle's ``quantization.recipe``) says another."""
    text = found.get(RECIPE_KEY)
    if text and recorded is not None and _decoded(text) != recorded:
        raise ManifestError(f"{where}: quantization recipe {json.dumps(recorded, sort_keys=True)}"
                            f" differs from the model file's {text}: the record was edited")


def model_file_metadata(manifest: StudentManifest) -> dict[str, str]:
    """What a model file carries of its student (ONNX metadata; OpenVINO keeps it in the
    IR's ``framework`` rt_info): what a runtime needs to pre- and post-process, so that a
    bundle's manifest can be checked against the file it ships."""
    pre = manifest.preprocessing
    sha = manifest.weights.sha256  # a bundle ships the model file, not the weights
    weights = {"okdhp_weights_sha256": sha} if sha else {}
    return {
        "okdhp_student": manifest.name,
        "okdhp_num_joints": str(manifest.architecture.num_joints),
        "okdhp_input_size": json.dumps(pre.input_size),
        "okdhp_mean": json.dumps(pre.mean),
        "okdhp_std": json.dumps(pre.std),
        "okdhp_heatmap_stride": str(pre.heatmap_stride),
        "okdhp_flip_pairs": json.dumps(pre.flip_pairs),
        "okdhp_box_padding": json.dumps(pre.box_padding),
        "okdhp_sigma": json.dumps(pre.sigma),
        "okdhp_student_sha256": student_digest(manifest),
        **weights,
    }


# what a bundle carries of its student besides the preprocessing: every figure a decision
# reads (accuracy, size, compression) and where it came from
STUDENT_DIGEST_FIELDS = ("name", "architecture", "params", "macs", "compression", "accuracy",
                         "provenance")


def student_digest(manifest: StudentManifest) -> str:
    """sha256 of the student's :data:`STUDENT_DIGEST_FIELDS`: written into each model file
    made from it, so that an edit of them in a bundle's manifest is refused at load."""
    import hashlib

    data = manifest.to_dict()
    text = json.dumps({k: data[k] for k in STUDENT_DIGEST_FIELDS}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def check_model_metadata(manifest: StudentManifest, found: dict[str, str], where: Any) -> None:
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


def load_student_manifest(path: str | Path) -> StudentManifest:
    """Read and validate a ``student.yaml`` (schema 1 is migrated to the current one)."""
    return read_record(StudentManifest, path)


def load_zoo_manifest(path: str | Path) -> ZooManifest:
    """Read and validate a ``zoo.yaml`` (a zoo directory or the file itself)."""
    path = Path(path)
    return read_record(ZooManifest, path / "zoo.yaml" if path.is_dir() else path)


def zoo_students(zoo_dir: str | Path, names: Any = None) -> list[tuple[Path, StudentManifest]]:
    """(student directory, validated manifest) of each student of a zoo, in index order, or
    of those in ``names`` (an unknown name is a UsageError naming the closest); a student
    named outside the zoo's folder (``../other_zoo/hg3``) is refused before anything of it
    is read."""
    zoo_dir = Path(zoo_dir)
    zoo = load_zoo_manifest(zoo_dir)
    for n in names or ():
        if n not in zoo.students:
            from okdhp_edge.errors import UsageError
            from okdhp_edge.schema import closest

            raise UsageError(f"no student '{n}' in {zoo_dir}; did you mean "
                             f"'{closest(n, zoo.students)}'?")
    out = []
    for name in zoo.students:
        if names and name not in names:
            continue
        if not is_plain_name(name):
            raise ManifestError(f"{zoo_dir / 'zoo.yaml'}: student '{name}' is not a folder "
                                "of this zoo")
        path_inside(zoo_dir, name, zoo_dir / "zoo.yaml")
        out.append((zoo_dir / name, load_student_manifest(zoo_dir / name / "student.yaml")))
    return out


def unique_dir(root: Path, name: str) -> Path:
    """``root/name``, or ``root/name-2``, ``-3``... : never an existing directory."""
    root = Path(root)
    return next(root / n for n in numbered_names(name, 10**9) if not (root / n).exists())


def reserve_dir(root: Path, name: str) -> Path:
    """Make and return ``root/name`` (or ``name-2``, ``-3``...), atomically: two processes
    starting at once under one name get two folders (a check then a later ``mkdir`` gave
    both the same one, and their runs finished crossed)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for n in numbered_names(name):
        cand = root / n
        try:
            cand.mkdir()
            return cand
        except FileExistsError:
            continue
    raise FileExistsError(f"{root}: no free folder name like '{name}'")


RESERVATION = ".reserved-by"  # in an empty folder held for a run's zoo: the run's folder


def reserve_name(root: Path, name: str, owner: str) -> str:
    """Hold ``root/name`` (or ``name-2``...) for ``owner``'s later write: an empty folder
    with a marker naming the owner, made atomically (two runs started at once under one
    ``zoo.name`` hold two names, each its own, whichever finishes first). A folder an
    owner already holds is its own again (a resumed run); one whose owner folder is gone
    is taken over. Returns the name held."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for n in numbered_names(name):
        cand = root / n
        holder = reserved_for(cand)
        if holder is not None and (holder == owner or not Path(holder).exists()):
            (cand / RESERVATION).write_text(owner)
            return cand.name
        try:
            cand.mkdir()
        except FileExistsError:
            continue
        (cand / RESERVATION).write_text(owner)
        return cand.name
    raise FileExistsError(f"{root}: no free folder name like '{name}'")


def reserved_for(folder: Path) -> Optional[str]:
    """The owner holding ``folder`` (:func:`reserve_name`), or None: not a held folder."""
    marker = Path(folder) / RESERVATION
    try:
        if [p.name for p in Path(folder).iterdir()] == [RESERVATION]:
            return marker.read_text()
    except (FileNotFoundError, NotADirectoryError):
        pass
    return None


# the manifest fields a student computes with, and its accuracy (the pick decides on it):
# written into its weights file's header too, so that an edit of student.yaml is caught
# (and a quantization-aware student's int8 program, by its sha256)
BOUND_FIELDS = ("architecture", "preprocessing", "accuracy", "qat")


def bound_fields(manifest: StudentManifest) -> dict[str, str]:
    """The bound fields as the weights' header stores them (JSON texts)."""
    from okdhp_edge.schema import to_dict

    return {k: json.dumps(to_dict(getattr(manifest, k)), sort_keys=True) for k in BOUND_FIELDS
            if getattr(manifest, k) is not None}


def check_bound_fields(weights: Path, manifest: StudentManifest, where: Path) -> None:
    """Refuse a manifest whose architecture or preprocessing differs from the one its
    (sha256-verified) weights were saved with. Weights saved before this check carry none.
    Reads the safetensors header only (no torch)."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="numpy") as f:
        saved = f.metadata() or {}
    now = bound_fields(manifest)
    for key in BOUND_FIELDS:
        # a field the weights were saved without, which the manifest now has, is an edit too
        # (weights saved before these checks carry no field at all)
        if (key in saved and saved[key] != now.get(key)) or (saved and key in now
                                                              and key not in saved):
            raise ManifestError(f"{where}: '{key}' differs from the one its weights were saved "
                                "with (an edited manifest); restore it or retrain")


def verified_student_manifest(path: Path) -> StudentManifest:
    """A ``student.yaml`` whose weights file hashes as it records and carries the same bound
    fields (what loading the student checks, without torch or the weights' tensors)."""
    from okdhp_edge.utils.io import verify_sha256

    path = Path(path)
    manifest = load_student_manifest(path)
    weights = path_inside(path.parent, manifest.weights.file, path)  # before it is opened
    verify_sha256(weights, manifest.weights.sha256)
    check_bound_fields(weights, manifest, path)
    return manifest
