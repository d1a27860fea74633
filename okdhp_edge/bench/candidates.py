"""What the bench measures: each student of a zoo (exported on the way) or of a verified
bundle set, as a :class:`Candidate`: its manifest and its model files by format."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from okdhp_edge.errors import ManifestError, UsageError
from okdhp_edge.families import family_of
from okdhp_edge.records import (
    Accuracy,
    BundleManifest,
    FormatRecord,
    ReportData,
    RowFailure,
    SetEntry,
    StudentManifest,
    format_record,
)
from okdhp_edge.runtime.bundle import read_bundle_manifest, read_set
from okdhp_edge.schema import to_dict
from okdhp_edge.targets import (
    FORMATS,
    Target,
    UnknownTarget,
    decoder_for,
    format_chain,
    formats_for,
    get_target,
)

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One student in one decoder form as the bench sees it: its manifest and where its
    model files are."""

    name: str
    manifest: StudentManifest  # student.yaml (zoo) or the one its bundles carry
    student_yaml: Optional[Path]  # None in torch-free (bundle) mode
    export_dir: Path
    formats: dict[str, FormatRecord]  # export.yaml's formats (or the bundles')
    failed: dict[str, RowFailure] = field(default_factory=dict)  # format -> its worker's end
    decoder: str = "transposed"  # the form of the decoder in its files (DECODER_FORMS)

    @property
    def forms(self) -> tuple[str, ...]:
        """The decoder forms its family has (one: no choice to record)."""
        return family_of(self.manifest.architecture.family).decoder_forms

    @property
    def work(self) -> Optional[int]:
        """Its decoder's work, what a target's size rule reads (None: no decoder forms)."""
        return decoder_work(self.manifest)


def decoder_work(man: StudentManifest) -> Optional[int]:
    """The family's ``decoder_work`` of a student (None: its family has no decoder forms)."""
    return family_of(man.architecture.family).decoder_work(man.architecture)


def forms_wanted(choice: str, target: Target, forms: tuple[str, ...],
                 work: Optional[int] = None) -> tuple[str, ...]:
    """The decoder forms a student with ``forms`` (and decoder ``work``) is measured in on
    ``target``: both of them with ``both`` (where the target runs a file), else the one
    :func:`decoder_for` names."""
    if choice == "both" and target.export is not None:
        return forms
    return (decoder_for("auto" if choice == "both" else choice, target, forms, work),)


def zoo_candidates(zoo: Path, students: Optional[tuple[str, ...]], targets: list[Target],
                   recipe: object, timeout_s: Optional[float] = None, decoder: str = "auto",
                   throughput: bool = False) -> list[Candidate]:
    """Every (selected) student of ``zoo`` in each decoder form ``decoder`` asks of the
    targets, exported to the targets' formats with ``recipe`` (a :class:`okdhp_edge.backends.
    recipe.QuantRecipe`), each backend's files built in worker processes of their own
    (:func:`okdhp_edge.bench.worker.export_in_workers`)."""
    from okdhp_edge.bench.worker import ExportUnit, export_in_workers
    from okdhp_edge.export.exporter import export_dir_of
    from okdhp_edge.manifest import zoo_students

    chosen = list(zoo_students(zoo, students))  # an unknown name: one line naming the closest
    if not chosen:
        raise UsageError(f"{zoo}: no students selected")
    units: list[tuple[StudentManifest, ExportUnit]] = []
    for d, man in chosen:
        forms = family_of(man.architecture.family).decoder_forms
        for form in forms:
            mine = [t for t in targets
                    if form in forms_wanted(decoder, t, forms, decoder_work(man))]
            if mine or form == forms[0]:  # every student is a candidate, its rows or not
                fmts = _formats(mine, throughput)
                units.append((man, ExportUnit(d / "student.yaml", fmts, form)))
    built, failed = export_in_workers([u for _, u in units], recipe, timeout_s)
    return [Candidate(man.name, man, u.student_yaml, export_dir_of(u.student_yaml, u.decoder),
                      built[u.key], failed[u.key], u.decoder) for man, u in units]


def _formats(targets: list[Target], throughput: bool) -> tuple[str, ...]:
    """The formats to build for ``targets``, sources first; the sources only a target whose
    runtime is missing here would use (TensorRT's fp16 ONNX and QDQ INT8 ONNX, a second
    calibration, on a CPU box) are left out, its own format kept to be recorded
    unavailable. A runtime is probed only where that saves a build (the bench's own process
    imports no runtime it can do without)."""
    from okdhp_edge.backends import unavailable_reason

    out = formats_for(targets, throughput=throughput)
    for t in targets:
        if t.export is None:
            continue
        others = formats_for([o for o in targets if o is not t], throughput=throughput)
        alone = [f for f in format_chain(t.export)[:-1] if f not in others]
        if alone and unavailable_reason(FORMATS[t.export].runs_on) is not None:
            out = [f for f in out if f not in alone]
    return tuple(out)


def bundle_candidates(directory: Path, students: Optional[tuple[str, ...]] = None
                      ) -> tuple[list[Candidate], str]:
    """Bench candidates from a verified bundle set (torch-free): (candidates, zoo name)."""
    directory = Path(directory)
    idx = read_set(directory)
    by_student: dict[tuple[str, str], Candidate] = {}  # (student, decoder form)
    for e in idx.bundles:
        if students and e.student not in students:
            continue
        bdir = directory / e.path
        man = read_bundle_manifest(bdir)
        c = by_student.get((e.student, man.decoder))
        if c is None:
            sm = man.student_record()
            sm = sm.replace(accuracy=_set_report_data(sm.accuracy, idx.report_data, directory))
            c = by_student[(e.student, man.decoder)] = Candidate(
                e.student, sm, None, directory, {}, decoder=man.decoder)
        c.formats[_format_of(e.backend, e.precision)] = _bundle_format(e, man, bdir)
    if not by_student:
        raise ManifestError(f"{directory}: no bundles selected")
    return list(by_student.values()), idx.zoo


def _set_report_data(acc: Accuracy, rd: ReportData, directory: Path) -> Accuracy:
    """The student's accuracy record pointing at the report split the set carries."""
    if not rd.ann:
        return acc
    return dataclasses.replace(
        acc, ann=str(directory / rd.ann), images=str(directory / rd.images),
        headboxes=str(directory / rd.headboxes) if rd.headboxes else "")


def _bundle_format(e: SetEntry, man: BundleManifest, bdir: Path) -> FormatRecord:
    """A bundle's model file as the bench reads a format of an export."""
    return format_record({"available": True, "backend": e.backend, "precision": e.precision,
                          "file": str(Path(e.path) / man.model), "parity": to_dict(man.parity),
                          "file_bytes": sum((bdir / rel).stat().st_size for rel in man.files),
                          "quantization": to_dict(man.quantization) if man.quantization
                          else None}, str(bdir / "bundle.yaml"))


def _format_of(backend: str, precision: str) -> str:
    try:
        fmt = get_target(backend, precision).export
    except UnknownTarget:
        fmt = None
    if fmt is None:
        raise ManifestError(f"bundle backend/precision {backend}/{precision} is not known")
    return fmt
