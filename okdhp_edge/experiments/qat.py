"""The ``qat`` ablation: post-training quantization against quantization-aware fine-tuning
on the labels alone and with online distillation, from one trained OKDHP run.

Arms (every one an INT8 file per student and backend, scored against the float student's
own fp32 file on the same backend, per image, so every difference has a paired interval):

- ``ptq``: the float zoo's students quantized by the bench's default recipe;
- ``qat_labels``: ``train --qat-from RUN qat.kd=false``: fine-tuned fake-quantized on the
  labels (the OKDHP loss without its KL terms);
- ``qat_kd``: the same fine-tuning, the same iterations, with the KL terms towards the FAU
  ensemble (float) as in training.

Verdicts are read on the selection split (the split a choice may be made on); the report
split is scored too. Resumable: each QAT run is its own folder (``--resume``d after a kill),
each score is kept in ``scores.json`` as it is made.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from okdhp_edge.experiments.executors import Scheduler
from okdhp_edge.grammar import Request, option
from okdhp_edge.targets import BACKEND_INFO, backends_with, default_backends
from okdhp_edge.utils.cli import UsageError, request_main
from okdhp_edge.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger("okdhp_edge.experiments")

QAT_ARMS = {"qat_labels": "qat.kd=false", "qat_kd": "qat.kd=true"}
SPLITS = ("select", "report")


@dataclass(frozen=True)
class QatAblationRequest(Request):
    """PTQ vs QAT on labels vs QAT with online distillation: fine-tunes the trained run
    quantization-aware per arm and seed, scores every arm's INT8 file per backend, and
    writes the report (JSON beside it)."""

    COMMAND: ClassVar[str] = "okdhp experiments qat"

    qat_from: Path = option(help="the trained OKDHP run (its last checkpoint is fine-tuned)",
                            metavar="RUN_DIR")
    zoo: Path = option(help="that run's zoo (the PTQ arm and the float baselines)")
    seeds: tuple[int, ...] = option((0, 1), "the seeds", minimum=0, spaced=True)
    backends: tuple[str, ...] = option(
        tuple(b for b in backends_with("int8") if b in default_backends()),
        "backends with an int8 target (default: the bench's that have one)",
        choices=tuple(BACKEND_INFO))
    calib_images: int = option(300, "calibration crops of the PTQ arm (the bench's default "
                               "recipe)", minimum=1)
    work_dir: Path = option(Path("runs/qat_ablation"), "where the arms are trained")
    out: Path = option(Path("bench/reports/qat_ablation.md"), "the report")
    overrides: tuple[str, ...] = option((), "qat.key=value for both QAT arms (qat.epochs, "
                                        "qat.lr, ...)", positional=True,
                                        metavar="QAT.KEY=VALUE")
    scheduler: Scheduler = option(factory=Scheduler, help="where the QAT runs train "
                                  "(experiments/executors.py)")


def qat_ablation(args: QatAblationRequest) -> int:
    """Train every QAT run, score every arm, write the report (JSON beside it)."""
    if not (args.qat_from / "last.pt").is_file():
        raise UsageError(f"--qat-from {args.qat_from}: no last.pt there (a trained run's "
                         "folder)")
    if not (args.zoo / "zoo.yaml").is_file():
        raise UsageError(f"--zoo {args.zoo}: no zoo.yaml there")
    bad = [o for o in args.overrides if not o.startswith("qat.") or o.startswith("qat.kd")]
    if bad:
        raise UsageError(f"'{bad[0]}': the arms differ only in qat.kd; give other qat.* keys")
    zoos, jobs = _train_arms(args)
    scores = Scores(args.work_dir / "scores.json")
    for backend in list(args.backends):
        score_all(args, backend, zoos, scores)
    data = {"run": str(args.qat_from), "zoo": str(args.zoo), "seeds": list(args.seeds),
            "overrides": list(args.overrides), "backends": list(args.backends),
            "zoos": {f"{a}-s{s}": str(z) for (a, s), z in zoos.items()},
            **({"jobs": jobs} if jobs else {}),
            "scores": scores.data}
    atomic_write_json(args.out.with_suffix(".json"), data)
    atomic_write_text(args.out, render(data))
    print(f"report: {args.out}")
    return 0


def _train_arms(args: QatAblationRequest
                ) -> tuple[dict[tuple[str, int], Path], dict[str, dict[str, Any]]]:
    """Every (arm, seed)'s zoo, trained here one after another or as jobs of the
    scheduler (each resumes from its checkpoint when submitted again); the jobs' logs."""
    keys = [(arm, seed) for seed in args.seeds for arm in QAT_ARMS]
    if args.scheduler.pooled:
        return {k: train_arm(args, *k) for k in keys}, {}
    from okdhp_edge.experiments.executors import SubmititPool

    with SubmititPool(args.scheduler, args.work_dir / "jobs", 1) as pool:
        jobs = [pool.submit(f"{a}-s{s}", train_arm, args, a, s) for a, s in keys]
        done = pool.wait_all(jobs)
    return ({k: Path(done[f"{k[0]}-s{k[1]}"]) for k in keys},
            {j.key: j.info() for j in jobs})


def train_arm(args: QatAblationRequest, arm: str, seed: int) -> Path:
    """The zoo of one QAT run, trained (or resumed) in a process of its own."""
    out = args.work_dir / f"{arm}-s{seed}"
    zoo_root = out / "zoo"
    done = sorted(zoo_root.glob("*/zoo.yaml")) if zoo_root.is_dir() else []
    if done:
        return done[0].parent
    runs = sorted(p.parent for p in out.glob("*/last.pt"))
    cmd = [sys.executable, "-m", "okdhp_edge.train"]
    if runs:
        cmd += ["--resume", str(runs[0])]
    else:
        cmd += ["--qat-from", str(args.qat_from), QAT_ARMS[arm], f"train.seed={seed}",
                f"train.out_dir={out}", f"zoo.root={zoo_root}", *args.overrides]
    log.info("%s seed %d: %s", arm, seed, " ".join(cmd))
    subprocess.run(cmd, check=True)
    done = sorted(zoo_root.glob("*/zoo.yaml"))
    if not done:
        raise RuntimeError(f"{' '.join(cmd)} wrote no zoo under {zoo_root}")
    return done[0].parent


class Scores:
    """Scores kept on disk as they are made: key -> {value, units, bootstrap, parity, files},
    ``files`` the sha256 of each file the score was measured on."""

    def __init__(self, path: Path) -> None:
        import json

        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, key: str, files: dict[str, str], make: Any, *args: Any) -> dict[str, Any]:
        """The score under ``key`` when it was measured on ``files`` (their sha256 by
        path); otherwise made by ``make(*args)`` and kept (a rebuilt file is scored again)."""
        kept = self.data.get(key)
        if kept is None or kept.get("files") != files:
            if kept is not None:
                log.info("%s: its file changed since it was scored; scoring again", key)
            self.data[key] = {**make(*args), "files": files}
            atomic_write_json(self.path, self.data)
        return self.data[key]


def score_all(args: QatAblationRequest, backend: str, zoos: dict[tuple[str, int], Path],
              scores: Scores) -> None:
    """Every arm's INT8 file and the float fp32 file of every student, on both splits (each
    file built, or found built, once)."""
    from okdhp_edge.backends.recipe import QuantRecipe
    from okdhp_edge.bench.run import target_file
    from okdhp_edge.manifest import load_student_manifest, zoo_students
    from okdhp_edge.utils.isolate import call_isolated

    for d, man in zoo_students(args.zoo):
        ptq = args.work_dir / "ptq" / man.name
        recipe = QuantRecipe(num_images=args.calib_images)
        files = [("fp32", d, "fp32", ptq, None), ("ptq", d, "int8", ptq, recipe)]
        files += [(f"{arm}-s{seed}", zoo / man.name, "int8", None, None)  # qat.branches:
                  for (arm, seed), zoo in zoos.items()  # a QAT zoo may hold fewer students
                  if (zoo / man.name / "student.yaml").is_file()]
        for name, student, precision, folder, rec in files:
            entry, path = call_isolated(target_file, student / "student.yaml", backend,
                                        precision, folder, rec, stage="convert", timeout_s=None)
            built = dict(entry.sha256 or {}) if path is not None else {}
            own = load_student_manifest(student / "student.yaml")  # a QAT student's own
            for split in SPLITS:
                scores.get(f"{backend}/{split}/{name}/{man.name}", built, _score, own,
                           backend, precision, split, path, entry)


def _score(man: Any, backend: str, precision: str, split: str, path: Optional[Path],
           entry: Any) -> dict[str, Any]:
    """One file's accuracy on ``split`` with its per-image results and whether its parity
    passed ({value: None, reason} where the file could not be made: ``entry``, its format
    record)."""
    from okdhp_edge.bench.run import file_report_accuracy
    from okdhp_edge.evaluation.datasets import report_dataset, training_split
    from okdhp_edge.schema import to_dict
    from okdhp_edge.utils.isolate import call_isolated

    if path is None:
        return {"value": None, "reason": entry.reason}
    dataset = training_split(man, "select") if split == "select" else report_dataset(man)
    acc = call_isolated(file_report_accuracy, man, backend, precision, path, dataset,
                        stage="score", timeout_s=None)
    boot = acc.get("bootstrap")
    return {"value": acc["value"], "units": acc.get("units"),
            "bootstrap": None if boot is None else to_dict(boot),
            "parity": bool(entry.parity and entry.parity.passed)}


# ---------------------------------------------------------------------------- report


def _delta(a: dict[str, Any], b: dict[str, Any]) -> Optional[tuple[float, Any]]:
    """a - b with its paired 95% interval (None where either is missing)."""
    from okdhp_edge.evaluation.uncertainty import paired_delta
    from okdhp_edge.records import Bootstrap

    if a.get("value") is None or b.get("value") is None:
        return None
    boot = a.get("bootstrap")
    ci = paired_delta(a.get("units"), b.get("units"), boot and Bootstrap(**boot))
    return a["value"] - b["value"], None if ci is None else (ci.low, ci.high)


def _seed_mean_delta(plus: list[dict[str, Any]], minus: list[dict[str, Any]]
                     ) -> Optional[tuple[float, Any]]:
    """The mean over seeds of plus - minus, with the interval that resamples images
    within each seed (paired)."""
    from okdhp_edge.evaluation.uncertainty import UnitResults, paired_mean_interval
    from okdhp_edge.records import Bootstrap

    if not plus or any(x.get("units") is None for x in plus + minus):
        return None
    boot = Bootstrap(**plus[0]["bootstrap"])
    groups = [([UnitResults.decode(p["units"])], [UnitResults.decode(m["units"])])
              for p, m in zip(plus, minus)]
    ci = paired_mean_interval(groups, boot.n_resamples, boot.seed, boot.confidence)
    mean = sum(p["value"] - m["value"] for p, m in zip(plus, minus)) / len(plus)
    return mean, (ci.low, ci.high)


def _cell(d: Optional[tuple[float, Any]]) -> str:
    if d is None:
        return "-"
    value, ci = d
    return f"{value:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")


def render(data: dict[str, Any]) -> str:
    """The report: per backend and split, each arm's INT8 minus the float fp32 file, and
    QAT with distillation minus QAT on labels, per seed, with paired 95% intervals."""
    s, seeds = data["scores"], data["seeds"]
    students = sorted({k.split("/")[-1] for k in s})
    lines = ["# INT8: post-training quantization vs quantization-aware fine-tuning", "",
             f"Float run `{data['run']}`, its zoo `{data['zoo']}`; QAT overrides: "
             f"{' '.join(data['overrides']) or 'none'}; seeds {seeds}.", "",
             "Each cell: INT8 AP minus the float student's fp32 AP on the same backend, with "
             "its paired 95% bootstrap interval over the split's images. Verdicts are read "
             "on the selection split.", ""]
    for backend in data["backends"]:
        for split in SPLITS:
            head = ["student", "fp32", "ptq"] + [f"{a} s{x}" for a in QAT_ARMS for x in seeds] \
                + [f"kd - labels s{x}" for x in seeds] + ["kd - labels, seed mean"]
            lines += [f"## {backend}, {split} split", "", "| " + " | ".join(head) + " |",
                      "|" + "---|" * len(head)]
            for st in students:
                lines.append("| " + " | ".join(_row(s, backend, split, st, seeds)) + " |")
            lines.append("")
    return "\n".join(lines)


def _row(s: dict[str, Any], backend: str, split: str, st: str, seeds: list[int]) -> list[str]:
    key = f"{backend}/{split}"
    base = s.get(f"{key}/fp32/{st}", {})
    cells = [st, f"{base['value']:.4f}" if base.get("value") is not None else "-",
             _cell(_delta(s.get(f"{key}/ptq/{st}", {}), base))]
    cells += [_cell(_delta(s.get(f"{key}/{a}-s{x}/{st}", {}), base))
              for a in QAT_ARMS for x in seeds]
    kd = [s.get(f"{key}/qat_kd-s{x}/{st}", {}) for x in seeds]
    labels = [s.get(f"{key}/qat_labels-s{x}/{st}", {}) for x in seeds]
    cells += [_cell(_delta(a, b)) for a, b in zip(kd, labels)]
    complete = all(x.get("value") is not None for x in kd + labels)
    return cells + [_cell(_seed_mean_delta(kd, labels) if complete else None)]


main = request_main(QatAblationRequest, qat_ablation)
