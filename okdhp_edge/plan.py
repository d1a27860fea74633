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

from okdhp_edge.config import config_text, load_config
from okdhp_edge.data.formats import dataset_format, get_spec
from okdhp_edge.families import is_multi_branch, zoo_student_names
from okdhp_edge.manifest import unique_dir
from okdhp_edge.models.info import count_macs, count_params
from okdhp_edge.models.registry import create_model, model_kwargs_from_config
from okdhp_edge.records import UNTRAINED_SPLIT, Accuracy, Provenance, StudentManifest
from okdhp_edge.students import preprocessing_of, student_manifest, write_zoo_of
from okdhp_edge.utils.provenance import git_commit

log = logging.getLogger(__name__)

def plan_students(cfg: Any) -> dict[str, torch.nn.Module]:
    """name -> untrained student (eval mode) of every branch the config trains."""
    torch.manual_seed(cfg.train.seed)
    spec = get_spec(cfg.data.dataset)
    net = create_model(cfg.model.name, **model_kwargs_from_config(cfg.model, spec.num_joints))
    if not is_multi_branch(cfg.model.name):
        return {net.short_name(): net.eval()}
    names = zoo_student_names(net.branch_names())
    return {n: net.student(i).eval() for i, n in enumerate(names)}


def write_plan_zoo(configs: list[Path], overrides: list[str], root: Path,
                   name: Optional[str] = None) -> Path:
    """Write the untrained students of ``configs`` (the same overrides applied to each) as
    one zoo under ``root``; returns it. Every config must share the input size."""
    cfgs = [load_config(c, overrides) for c in configs]
    if len({tuple(c.data.input_size) for c in cfgs}) > 1 or \
            len({c.data.dataset for c in cfgs}) > 1:
        raise ValueError("planned configs must share data.dataset and data.input_size")
    name = name or "plan_" + "+".join(Path(c).stem for c in configs)
    where = unique_dir(Path(root), name)  # the configs' paths the manifests name
    models: dict[str, torch.nn.Module] = {}
    manifests: dict[str, StudentManifest] = {}
    for path, cfg in zip(configs, cfgs):
        students = plan_students(cfg)
        for student, m in students.items():
            if student in models:
                raise ValueError(f"two planned configs both give a student '{student}'")
            branch = list(students).index(student) if len(students) > 1 else -1
            models[student] = m
            manifests[student] = _plan_manifest(student, m, cfg, branch,
                                                where / f"{Path(path).stem}.yaml")
    # the resolved configs beside the students
    files = {f"{Path(path).stem}.yaml": config_text(cfg) for path, cfg in zip(configs, cfgs)}
    zoo_dir = write_zoo_of(Path(root), where.name, manifests, models, run="",
                           dataset=cfgs[0].data.dataset, files=files)
    log.info("plan zoo (untrained students %s) written: %s", ", ".join(models), zoo_dir)
    return zoo_dir


def _plan_manifest(student: str, m: torch.nn.Module, cfg: Any, branch: int,
                   config_path: Path) -> StudentManifest:
    size = tuple(cfg.data.input_size)
    accuracy = Accuracy(metric=dataset_format(cfg.data.dataset).metric, value=None,
                        dataset=cfg.data.dataset, split=UNTRAINED_SPLIT, ann="", images="",
                        headboxes="", flip_test=False, stats={})
    prov = Provenance(config=str(config_path), run="", git_commit=git_commit(),
                      seed=cfg.train.seed, branch=branch, multi_branch={}, splits={},
                      distillation={}, epoch=0, select_metric=None)
    return student_manifest(student, m, list(size), count_params(m), count_macs(m, size),
                            preprocessing_of(cfg.data, get_spec(cfg.data.dataset).flip_pairs),
                            accuracy, prov)
