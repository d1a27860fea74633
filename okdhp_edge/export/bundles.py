"""Writing bundles and bundle sets for target devices (reading them, torch-free, is
:mod:`okdhp_edge.runtime.bundle`): one student's model file for one backend, or every
student of a zoo for the requested backends plus the report split (images and
annotations) to measure accuracy there.

``DIR/bundles.yaml`` indexes a set; ``DIR/<student>/<backend>-<precision>/`` are
bundles; ``DIR/report_data/`` holds the report split. Every file carries its sha256; the
bench on the target refuses any mismatch before it runs anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import shutil
from pathlib import Path
from typing import Iterator, Optional

from okdhp_edge import __version__
from okdhp_edge.backends.recipe import QuantRecipe
from okdhp_edge.data.formats import image_files
from okdhp_edge.records import (
    NO_WEIGHTS,
    BundleManifest,
    BundleSet,
    ReportData,
    SetEntry,
    SkippedBundle,
    StudentManifest,
    write_record,
)
from okdhp_edge.targets import (
    BACKEND_INFO,
    FORMATS,
    TARGETS,
    decoder_for,
    get_target,
    targets_for,
)
from okdhp_edge.utils.cli import UsageError
from okdhp_edge.utils.io import atomic_write_set, sha256_file

log = logging.getLogger(__name__)


def _bundle_files(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): sha256_file(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != "bundle.yaml"}


def export_bundle(student_yaml: Path, backend: str, precision: str, out: Path,
                  force: bool = False, recipe: Optional[QuantRecipe] = None,
                  allow_parity_failure: bool = False, decoder: str = "auto") -> Path:
    """Write a deployable bundle for one (student, backend, precision): the target's model
    files (with the layout they have in the export folder), ``bundle.yaml`` with every
    sha256, the preprocessing, the student's manifest, the decoder's form (``decoder``:
    auto, the backend's default, or a form of :data:`~okdhp_edge.targets.DECODER_FORMS`)
    and, for INT8, the recipe. A file whose parity check against PyTorch fp32 failed is
    refused unless ``allow_parity_failure`` (which the bundle then records)."""
    from okdhp_edge.export.exporter import export_dir_of, export_student
    from okdhp_edge.families import family_of
    from okdhp_edge.manifest import load_student_manifest

    t = get_target(backend, precision)
    if t.quantized and recipe is not None:
        recipe.check_honoured({backend})
    if not t.bundle:
        raise UsageError(f"no torch-free bundle of {t.label} (bundles exist for: "
                         + ", ".join(x.label for x in TARGETS.values() if x.bundle) + ")")
    out = Path(out)
    with _out_folder(out):
        if (out / "bundle.yaml").exists() and not force:
            raise UsageError(f"{out}: a bundle is already there (use a new --out)")
        man = load_student_manifest(student_yaml)
        family = family_of(man.architecture.family)
        form = decoder_for(decoder, t, family.decoder_forms,
                           family.decoder_work(man.architecture))
        entry = export_student(student_yaml, formats=(t.export,), recipe=recipe,
                               decoder=form).formats[t.export]
        if not entry.available:
            raise UsageError(f"{t.label} unavailable here: {entry.reason}")
        failed = entry.parity is None or not entry.parity.passed
        if failed and not allow_parity_failure:
            why = entry.parity.summary() if entry.parity else "no parity record"
            raise UsageError(f"{man.name} {t.label}: its parity check against PyTorch fp32 failed "
                             f"({why}); not bundled (pass "
                             "--allow-parity-failure to ship it anyway, recorded in the bundle)")
        src_dir = export_dir_of(student_yaml, form)
        # as a set, through temporaries: a full disk is one line and leaves no torn model file
        atomic_write_set({out / rel: functools.partial(_copy, src_dir / rel)
                          for rel in FORMATS[t.export].files})
        write_record(out / "bundle.yaml", BundleManifest(
            bundle_version=BundleManifest.VERSION, okdhp_edge=__version__, student=man.name,
            backend=backend, precision=precision, model=FORMATS[t.export].model_file,
            files=_bundle_files(out),
            student_manifest=dataclasses.replace(man, weights=NO_WEIGHTS), parity=entry.parity,
            quantization=entry.quantization, input_layout=FORMATS[t.export].layout,
            requires=BACKEND_INFO[backend].runtime_extra or None,
            parity_failure_allowed=True if failed else None, decoder=form))
        return out


def _copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)


@contextlib.contextmanager
def _out_folder(out: Path) -> Iterator[None]:
    """Refuse an ``--out`` that is a file, and one that cannot take files, before any work;
    a folder made for an export that is then refused is removed again (left empty)."""
    from okdhp_edge.utils.io import check_writable

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: a file is there, not a folder")
    existed = out.exists()
    check_writable(out)
    try:
        yield
    except BaseException:
        if not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _copy_report_data(man: StudentManifest, out: Path) -> ReportData:
    """Copy the report split's annotation file, its images and head boxes."""
    acc = man.accuracy
    data = out / "report_data"
    (data / "images").mkdir(parents=True, exist_ok=True)
    if not acc.ann:  # untrained plan students: latency only, no data to score on
        return ReportData(acc.dataset, "", "", "")
    ann = Path(acc.ann)
    shutil.copyfile(ann, data / "annotations.json")
    for name in image_files(acc.dataset, ann):
        shutil.copyfile(Path(acc.images) / name, data / "images" / name)
    headboxes = ""
    if acc.headboxes:
        hb = Path(acc.headboxes)
        headboxes = f"report_data/headboxes{hb.suffix}"
        shutil.copyfile(hb, out / headboxes)
    return ReportData(acc.dataset, "report_data/annotations.json", "report_data/images",
                      headboxes)


def export_all(zoo: Path, out: Path, backends: tuple[str, ...],
               precisions: Optional[tuple[str, ...]] = None,
               recipe: Optional[QuantRecipe] = None, allow_parity_failure: bool = False,
               students: Optional[tuple[str, ...]] = None, decoder: str = "auto") -> Path:
    """Export every student of ``zoo`` (or those named in ``students``) for ``backends``
    into one bundle set at ``out``."""
    from okdhp_edge.manifest import load_zoo_manifest, zoo_students

    out = Path(out)
    with _out_folder(out):
        if (out / "bundles.yaml").exists():
            raise UsageError(f"{out}: a bundle set is already there (use a new --out)")
        zoo_man = load_zoo_manifest(zoo)
        students = zoo_students(zoo, students)
        entries, skipped = [], []
        targets = targets_for(backends, precisions, bundle_only=True)
        if recipe is not None and any(t.quantized for t in targets):
            recipe.check_honoured({t.backend for t in targets if t.quantized})
        for d, man in students:
            for t in targets:
                b, p = t.backend, t.precision
                dest = out / man.name / f"{b}-{p}"
                try:
                    export_bundle(d / "student.yaml", b, p, dest, recipe=recipe,
                                  allow_parity_failure=allow_parity_failure, decoder=decoder)
                except UsageError as exc:
                    skipped.append(SkippedBundle(man.name, b, p, str(exc)))
                    log.warning("skipped %s %s %s: %s", man.name, b, p, exc)
                    continue
                entries.append(SetEntry(man.name, b, p, str(dest.relative_to(out)),
                                        sha256_file(dest / "bundle.yaml")))
        report = _copy_report_data(students[0][1], out)
        files = {str(p.relative_to(out)): sha256_file(p)
                 for p in sorted((out / "report_data").rglob("*")) if p.is_file()}
        write_record(out / "bundles.yaml", BundleSet(
            set_version=BundleSet.VERSION, bundle_version=BundleManifest.VERSION,
            okdhp_edge=__version__, zoo=zoo_man.name, metric=zoo_man.metric, bundles=entries,
            skipped=skipped, report_data=report, report_files=files))
        return out


