"""End of a run: extract every branch as a student, evaluate it on the report split,
write ``student_zoo/<zoo>/<student>/`` and ``zoo.yaml``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from okdhp_edge.data.build import build_split, split_record
from okdhp_edge.evaluation.inference import (
    Predictions,
    engine_heatmap_fn,
    predict_heads,
    score_units,
)
from okdhp_edge.evaluation.uncertainty import accuracy_fields, interval_text
from okdhp_edge.manifest import unique_dir
from okdhp_edge.models.info import count_macs, count_params
from okdhp_edge.models.registry import create_model
from okdhp_edge.records import Accuracy, Provenance, ZooManifest
from okdhp_edge.students import (
    preprocessing_of,
    student_manifest,
    with_compression,
    write_zoo_dir,
)
from okdhp_edge.training.trainer import Trainer
from okdhp_edge.utils.provenance import git_commit

log = logging.getLogger(__name__)


def _report_paths(cfg: Any) -> dict[str, str]:
    if cfg.data.dataset == "synthetic":
        from okdhp_edge.data.build import synthetic_paths

        p = synthetic_paths(cfg.data.root)
        return {"ann": str(p["report_ann"]), "images": str(p["report_images"]), "headboxes": ""}
    return {"ann": cfg.data.report_ann, "images": cfg.data.report_images,
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


def _best_students(trainer: Trainer, heads: list) -> dict[str, torch.nn.Module]:
    """Each student extracted from the trained net, with its best (selection-split)
    weights when the run kept them, in eval mode."""
    models: dict[str, torch.nn.Module] = {}
    for h in heads:
        m = trainer.student(h)
        if h.name in trainer.best_states:
            m = create_model(m.family, num_joints=m.num_joints, **m.arch()).to(trainer.device)
            m.load_state_dict(trainer.best_states[h.name])
        if trainer.cfg.train.channels_last:
            m = m.to(memory_format=torch.channels_last)
        models[h.name] = m.eval()
    return models


def _provenance(trainer: Trainer, head: Any, commit: str) -> Provenance:
    """The manifest's provenance block of one student: run, commit, branch, distillation
    settings and the epoch its weights were selected at."""
    cfg, loss = trainer.cfg, trainer.cfg.loss
    return Provenance(
        config=str(trainer.run_dir / "config.yaml"), run=str(trainer.run_dir),
        git_commit=commit, seed=cfg.train.seed,
        branch=-1 if head.branch is None else head.branch,
        multi_branch={} if trainer.plain else trainer.model.multi_branch_record(),
        splits=split_record(cfg.data),
        distillation=({} if trainer.plain else {
            "lambda_kd": loss.lambda_kd, "lambda_ens": loss.lambda_ens,
            "ramp_epochs": loss.ramp_epochs, "distill": loss.distill,
            "kl_temperature": loss.kl_temperature, "kl_norm": loss.kl_norm,
            "detach_ensemble": loss.detach_ensemble, "fau": cfg.model.fau}),
        epoch=int(trainer.state.best_epoch.get(head.name, trainer.state.epoch)),
        select_metric=trainer.state.best.get(head.name),
    )


def write_zoo(trainer: Trainer) -> Path:
    """Write the zoo of a finished run; returns its directory (never an existing one)."""
    cfg = trainer.cfg
    zoo_name = cfg.zoo.name or trainer.run_dir.name
    zoo_dir = unique_dir(Path(cfg.zoo.root), zoo_name)
    report = build_split(cfg.data, "report", seed=cfg.train.seed)
    heads = [h for h in trainer.heads if h.name != "ensemble"]
    models = _best_students(trainer, heads)
    log.info("evaluating %d students on the report split (%d persons)", len(models), len(report))
    preds = predict_students(models, report, cfg.eval.flip_test, trainer.loaders.evaluation(report),
                             trainer.device, cfg.train.channels_last)
    paths = _report_paths(cfg)
    pre = preprocessing_of(cfg.data, trainer.spec.flip_pairs)
    commit = git_commit()
    manifests = {}
    for h in heads:
        res, units = score_units(report, preds[h.name], cfg.eval.rescore_thr,
                                 cfg.eval.oks_nms_thr, report.headboxes)
        stats = {k: float(v) for k, v in res.items() if isinstance(v, float)}
        m = models[h.name]
        accuracy = Accuracy(metric=res["metric"], value=float(res["value"]),
                            dataset=cfg.data.dataset, split="report", **paths,
                            flip_test=cfg.eval.flip_test, stats=stats,
                            **accuracy_fields(units, cfg.eval.bootstrap))
        provenance = _provenance(trainer, h, commit)
        manifests[h.name] = student_manifest(
            h.name, m, cfg.data.input_size, count_params(m),
            count_macs(m, tuple(cfg.data.input_size)), pre, accuracy, provenance)
        log.info("student %s: %s %.4f%s on the report split (selected at epoch %d)", h.name,
                 res["metric"], res["value"], interval_text(accuracy.ci95), provenance.epoch)
    manifests = with_compression(manifests)
    zoo = ZooManifest(schema=ZooManifest.VERSION, name=zoo_dir.name,
                      students=sorted(manifests, key=lambda n: manifests[n].params),
                      run=str(trainer.run_dir), dataset=cfg.data.dataset,
                      metric=next(iter(manifests.values())).accuracy.metric)
    write_zoo_dir(zoo_dir, zoo, manifests, models)
    log.info("zoo written: %s", zoo_dir)
    return zoo_dir
