"""End of a run: extract every branch as a student, evaluate it on the report split,
write ``student_zoo/<zoo>/<student>/`` and ``zoo.yaml``."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from okdhp_edge.convert.qat_program import PROGRAM_FILE, program_bytes
from okdhp_edge.data.build import build_split, data_paths, split_record
from okdhp_edge.evaluation.inference import (
    Predictions,
    engine_heatmap_fn,
    predict_heads,
    score_units,
)
from okdhp_edge.evaluation.uncertainty import accuracy_fields, interval_text
from okdhp_edge.models.info import count_macs, count_params
from okdhp_edge.records import Accuracy, Provenance, QatRecord, WeightsRef
from okdhp_edge.students import preprocessing_of, student_manifest, write_zoo_of
from okdhp_edge.training.trainer import TrainedRun
from okdhp_edge.utils.provenance import git_commit

log = logging.getLogger(__name__)


def _report_paths(cfg: Any) -> dict[str, str]:
    paths = data_paths(cfg.data)
    return {"ann": paths["report_ann"], "images": paths["report_images"],
            "headboxes": cfg.data.report_headboxes}


@torch.no_grad()
def predict_students(models: dict[str, torch.nn.Module], dataset: Any, flip: bool,
                     batches: Any, device: torch.device, channels_last: bool
                     ) -> dict[str, Predictions]:
    """Decoded predictions of each student (eval mode) on ``dataset``, from ``batches``."""

    def engine(images: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(images).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return {k: m(x).heatmap.float().cpu().numpy() for k, m in models.items()}

    heads_fn = engine_heatmap_fn(engine, dataset.flip_index if flip else None)
    return predict_heads(dataset, heads_fn, batches=batches)


def _provenance(run: TrainedRun, name: str, commit: str) -> Provenance:
    """The manifest's provenance block of one student: run, commit, branch, distillation
    settings and the epoch its weights were selected at."""
    cfg, loss = run.cfg, run.cfg.loss
    return Provenance(
        config=str(run.run_dir / "config.yaml"), run=str(run.run_dir),
        git_commit=commit, seed=cfg.train.seed, branch=run.branches[name],
        multi_branch=run.multi_branch, splits=split_record(cfg.data),
        distillation=({} if not run.multi_branch else {
            "lambda_kd": loss.lambda_kd, "lambda_ens": loss.lambda_ens,
            "ramp_epochs": loss.ramp_epochs, "distill": loss.distill,
            "kl_temperature": loss.kl_temperature, "kl_norm": loss.kl_norm,
            "detach_ensemble": loss.detach_ensemble, "fau": cfg.model.fau}),
        epoch=run.best_epoch[name], select_metric=run.select_metric[name],
    )


_INT8 = "/int8"  # a student's int8 program among the predictions: "<name>/int8"


def _programs(run: TrainedRun, report: Any, preds: dict[str, Predictions]
              ) -> dict[str, tuple[QatRecord, bytes]]:
    """A quantization-aware run's students as int8 programs: each one's manifest record
    (the recipe, the float run, the program's sha256 and its report-split metric in
    PyTorch, from ``preds["<name>/int8"]``) and its archive. {} for a float run."""
    cfg, out = run.cfg, {}
    for name, q in (run.quantized or {}).items():
        res, _ = score_units(report, preds[name + _INT8], cfg.eval.rescore_thr,
                             cfg.eval.oks_nms_thr, report.headboxes)
        data = program_bytes(q.graph, tuple(cfg.data.input_size))
        ref = WeightsRef(PROGRAM_FILE, hashlib.sha256(data).hexdigest())
        out[name] = (QatRecord(run.qat.from_run, run.qat.recipe, ref,
                               float(res["value"])), data)
        log.info("student %s as int8 (its quantization-aware program in PyTorch): %s %.4f on "
                 "the report split", name, res["metric"], res["value"])
    return out


def hold_zoo_name(cfg: Any, run_dir: Path) -> None:
    """Hold the zoo's name (``zoo.name``, else the run's folder name) under ``zoo.root`` from
    the run's start, so that runs started at once under one name get their zoos in the order
    they started, not the order they finish; ``cfg.zoo.name`` and the run's ``config.yaml``
    say the name held (a resumed run holds it again)."""
    from okdhp_edge.config import save_config
    from okdhp_edge.manifest import reserve_name

    wanted = cfg.zoo.name or Path(run_dir).name
    held = reserve_name(Path(cfg.zoo.root), wanted, str(run_dir))
    if held != wanted:
        log.warning("zoo '%s' exists or is held by another run: this run's zoo will be '%s'",
                    wanted, held)
    if held != cfg.zoo.name:
        cfg.zoo.name = held
        save_config(cfg, Path(run_dir) / "config.yaml")


def release_zoo_name(cfg: Any, run_dir: Path) -> None:
    """Give back the name :func:`hold_zoo_name` held, if no zoo was written there."""
    from okdhp_edge.manifest import RESERVATION, reserved_for

    held = Path(cfg.zoo.root) / cfg.zoo.name
    if cfg.zoo.name and reserved_for(held) == str(run_dir):
        (held / RESERVATION).unlink(missing_ok=True)
        held.rmdir()


def write_zoo(run: TrainedRun) -> Path:
    """Write the zoo of a finished run (:meth:`Trainer.fit`'s value); returns its directory
    (never an existing one)."""
    cfg, models = run.cfg, run.students
    report = build_split(cfg.data, "report", seed=cfg.train.seed)
    log.info("evaluating %d students on the report split (%d persons)", len(models), len(report))
    int8 = {name + _INT8: q for name, q in (run.quantized or {}).items()}
    # one pass over the images for both (a QAT run is channels-first: qat_run_config)
    preds = predict_students({**models, **int8}, report, cfg.eval.flip_test,
                             run.evaluation_loader(report), run.device, cfg.train.channels_last)
    paths = _report_paths(cfg)
    pre = preprocessing_of(cfg.data, run.flip_pairs)
    commit = git_commit()
    manifests, programs = {}, _programs(run, report, preds)
    for name, m in models.items():
        res, units = score_units(report, preds[name], cfg.eval.rescore_thr,
                                 cfg.eval.oks_nms_thr, report.headboxes)
        stats = {k: float(v) for k, v in res.items() if isinstance(v, float)}
        accuracy = Accuracy(metric=res["metric"], value=float(res["value"]),
                            dataset=cfg.data.dataset, split="report", **paths,
                            flip_test=cfg.eval.flip_test, stats=stats,
                            **accuracy_fields(units, cfg.eval.bootstrap))
        provenance = _provenance(run, name, commit)
        manifests[name] = student_manifest(
            name, m, cfg.data.input_size, count_params(m),
            count_macs(m, tuple(cfg.data.input_size)), pre, accuracy, provenance)
        log.info("student %s: %s %.4f%s on the report split (selected at epoch %d)", name,
                 res["metric"], res["value"], interval_text(accuracy.ci95), provenance.epoch)
        if name in programs:
            manifests[name] = manifests[name].replace(qat=programs[name][0])
    zoo_dir = write_zoo_of(Path(cfg.zoo.root), cfg.zoo.name or run.run_dir.name, manifests,
                           models, run=str(run.run_dir), dataset=cfg.data.dataset,
                           student_files={k: {PROGRAM_FILE: v[1]} for k, v in programs.items()})
    log.info("zoo written: %s", zoo_dir)
    return zoo_dir
