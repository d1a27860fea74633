"""Untrained students of a config, written as a zoo: what ``bench --plan`` measures.

A plan zoo holds the students a training config would produce, with seeded random weights
and no accuracy (``accuracy.split: untrained``, value null), so that their latency can be
measured on every backend and precision of a device before any training. Its reports are
marked untrained and never enter a trained zoo's pick.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch

from okdhp_edge.config import load_config, save_config
from okdhp_edge.data.keypoints import get_spec
from okdhp_edge.manifest import UNTRAINED_SPLIT, ZOO_SCHEMA, unique_dir
from okdhp_edge.models.info import count_macs, count_params
from okdhp_edge.models.registry import create_model, is_multi_branch, model_kwargs_from_config
from okdhp_edge.students import (
    preprocessing_of,
    set_compression,
    student_manifest,
    write_zoo_dir,
)
from okdhp_edge.utils.provenance import git_commit

log = logging.getLogger(__name__)

METRICS = {"mpii": "PCKh@0.5"}  # every other dataset is scored with OKS AP


def plan_students(cfg: Any) -> dict[str, torch.nn.Module]:
    """name -> untrained student (eval mode) of every branch the config trains."""
    torch.manual_seed(cfg.train.seed)
    spec = get_spec(cfg.data.dataset)
    net = create_model(cfg.model.name, **model_kwargs_from_config(cfg.model, spec.num_joints))
    if not is_multi_branch(cfg.model.name):
        return {net.short_name(): net.eval()}
    names = net.branch_names()
    return {(f"{n}-b{i}" if names.count(n) > 1 else n): net.student(i).eval()
            for i, n in enumerate(names)}


def write_plan_zoo(config: Optional[Path], overrides: list[str], root: Path,
                   name: Optional[str] = None) -> Path:
    """Write the untrained students of ``config`` as a zoo under ``root``; returns it."""
    cfg = load_config(config, overrides)
    spec = get_spec(cfg.data.dataset)
    name = name or f"plan_{Path(config).stem if config else 'default'}"
    zoo_dir = unique_dir(Path(root), name)
    models = plan_students(cfg)
    size = tuple(cfg.data.input_size)
    accuracy = {"metric": METRICS.get(cfg.data.dataset, "AP"), "value": None,
                "dataset": cfg.data.dataset, "split": UNTRAINED_SPLIT, "ann": "", "images": "",
                "headboxes": "", "flip_test": False, "stats": {}}
    commit = git_commit()
    manifests: dict[str, dict[str, Any]] = {}
    for i, (student, m) in enumerate(models.items()):
        prov = {"config": str(zoo_dir / "config.yaml"), "run": "", "git_commit": commit,
                "seed": cfg.train.seed, "branch": i if len(models) > 1 else -1,
                "multi_branch": {}, "splits": {}, "distillation": {}, "epoch": 0,
                "select_metric": None}
        manifests[student] = student_manifest(
            student, m, list(size), count_params(m), count_macs(m, size),
            preprocessing_of(cfg.data, spec.flip_pairs), dict(accuracy), prov)
    set_compression(manifests)
    zoo = {"schema": ZOO_SCHEMA, "name": zoo_dir.name,
           "students": sorted(manifests, key=lambda n: manifests[n]["params"]),
           "run": "", "dataset": cfg.data.dataset, "metric": accuracy["metric"]}
    write_zoo_dir(zoo_dir, zoo, manifests, models)
    save_config(cfg, zoo_dir / "config.yaml")
    log.info("plan zoo (untrained students %s) written: %s", ", ".join(zoo["students"]),
             zoo_dir)
    return zoo_dir
