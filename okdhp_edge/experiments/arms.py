"""The ablation's arms: what each one trains (its overrides), their titles, and the cost
ratios between arms (MACs, wall time) that size the equal-compute arm."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from okdhp_edge.families import base_student_name
from okdhp_edge.utils.cli import UsageError

log = logging.getLogger("okdhp_edge.experiments")


ARMS = ("a", "a_2x", "b", "c", "c_eq", "d", "e", "f", "f_joint", "f_both", "f_detach",
        "f_weight")
# the arms by what they are (spec files and --arms may use either; reports keep the short
# keys, so that published reports and their run identities stay as they are)
ARM_NAMES = {"okdhp": "a", "okdhp_longer": "a_2x", "okdhp_balanced": "b", "alone": "c",
             "alone_equal_time": "c_eq", "fau_mean": "d", "no_distillation": "e",
             "kl_temperature": "f", "kl_per_joint": "f_joint",
             "kl_temperature_per_joint": "f_both", "kl_detached_teacher": "f_detach",
             "kl_strong": "f_weight"}


def canonical_arm(name: str, where: str = "arms") -> str:
    """The short key of arm ``name`` (a short key or a descriptive name)."""
    if name in ARMS:
        return name
    if name in ARM_NAMES:
        return ARM_NAMES[name]
    import difflib

    close = difflib.get_close_matches(str(name), list(ARM_NAMES) + list(ARMS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise UsageError(f"{where}: unknown arm '{name}'{hint}")


def arm_runs(arm: str, cfg: Any, extra: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(run label, overrides) of one arm; plain arms have one run per student."""
    from okdhp_edge.models.registry import balanced_fields, num_branches

    m = cfg.model
    if arm == "a":
        return [("okdhp", [])]
    if arm == "a_2x":
        t = cfg.train
        if t.plateau_patience:  # a longer plateau test: twice the patience at every LR
            return [("okdhp", [f"train.plateau_patience={2 * t.plateau_patience}",
                               f"train.epochs={2 * t.epochs}"])]
        return [("okdhp", [f"train.epochs={2 * t.epochs}",
                           f"train.lr_steps={[2 * s for s in t.lr_steps]}",
                           f"loss.ramp_epochs={2 * cfg.loss.ramp_epochs}"])]
    if arm == "b":
        return [("okdhp", _overrides(balanced_fields(m)))]
    if arm == "d":
        return [("okdhp", ["model.fau=mean"])]
    if arm == "e":
        return [("okdhp", ["loss.distill=false"])]
    t = extra.get("kl_temperature", 0.1)
    if arm == "f":
        return [("okdhp", [f"loss.kl_temperature={t}"])]
    if arm == "f_joint":
        return [("okdhp", ["loss.kl_norm=joint"])]
    if arm == "f_both":
        return [("okdhp", [f"loss.kl_temperature={t}", "loss.kl_norm=joint"])]
    if arm == "f_detach":
        return [("okdhp", [f"loss.kl_temperature={t}", "loss.detach_ensemble=true"])]
    if arm == "f_weight":
        return [("okdhp", [f"loss.lambda_kd={extra['lambda_kd_strong']}"])]
    if arm in ("c", "c_eq"):
        return [_plain_run(arm, cfg, i, extra) for i in range(num_branches(m))]
    raise UsageError(f"unknown arm '{arm}'; expected some of {', '.join(ARMS)}")


def _overrides(fields: dict[str, Any]) -> list[str]:
    return [f"model.{k}={v}" for k, v in fields.items()]


def _plain_run(arm: str, cfg: Any, branch: int, extra: dict[str, Any]
               ) -> tuple[str, list[str]]:
    """(label, overrides) of branch ``branch``'s student trained alone (arms c and c_eq)."""
    from okdhp_edge.models.registry import student_fields, student_name

    name = student_name(cfg.model, branch)
    epochs = cfg.train.epochs
    if arm == "c_eq":
        ratio = extra["wall_ratio"].get(name)
        if ratio is None:  # e.g. a report of an ablation still running
            raise UsageError(f"arm c_eq needs arm c's {name} finished first")
        epochs = max(epochs, int(round(epochs * ratio)))
    scale = epochs / cfg.train.epochs
    steps = [int(round(s * scale)) for s in cfg.train.lr_steps]
    ov = _overrides(student_fields(cfg.model, branch)) + [
        f"train.epochs={epochs}", f"train.lr_steps={steps}"]
    if arm == "c_eq" and cfg.train.plateau_patience:  # twice the patience: the OKDHP
        # run's wall time is spent at the LRs that still teach, not only the last
        ov += [f"train.plateau_patience={2 * cfg.train.plateau_patience}",
               f"train.min_wall_s={round(extra['okdhp_wall_s'])}"]
    return name, ov


def mac_ratios(cfg: Any) -> dict[str, float]:
    """Training cost of the multi-branch net over each plain student's (forward MACs),
    by student name."""
    import dataclasses

    from okdhp_edge import create_model
    from okdhp_edge.data.formats import get_spec
    from okdhp_edge.models.info import count_macs
    from okdhp_edge.models.registry import (
        model_kwargs_from_config,
        num_branches,
        student_fields,
        student_name,
    )

    size, joints = tuple(cfg.data.input_size), get_spec(cfg.data.dataset).num_joints
    big = count_macs(create_model(cfg.model.name,
                                  **model_kwargs_from_config(cfg.model, joints)), size)
    out = {}
    for i in range(num_branches(cfg.model)):
        plain_cfg = dataclasses.replace(cfg.model, **student_fields(cfg.model, i))
        plain = create_model(plain_cfg.name, **model_kwargs_from_config(plain_cfg, joints))
        out[student_name(cfg.model, i)] = big / count_macs(plain, size)
    return out


ARM_TITLES = {
    "a": "OKDHP unbalanced",
    "a_2x": "OKDHP unbalanced, twice the schedule",
    "b": "OKDHP balanced",
    "c": "plain, alone (equal iterations)",
    "c_eq": "plain, alone (equal wall time)",
    "d": "FAU -> plain mean",
    "e": "no distillation (branches + ensemble loss)",
    "f": "KL with temperature T=0.1",
    "f_joint": "KL with per-joint normalisation",
    "f_both": "KL with T=0.1 and per-joint norm",
    "f_detach": "KL with T=0.1, ensemble detached",
    "f_weight": "released KL, stronger weight",
}


# Under a plateau schedule every arm trains to its own plateau: c is no longer "equal
# iterations", and c_eq trains at least arm a's wall time rather than about twice c's
# iterations.
PLATEAU_TITLES = {
    "a_2x": "OKDHP unbalanced, twice the plateau patience",
    "c": "plain, alone (each to its own plateau)",
    "c_eq": "plain, alone (twice the patience, at least the OKDHP run's wall time)",
}


def _words(plateau: bool) -> dict[str, str]:
    """The phrases of the report that depend on the schedule (fixed or plateau)."""
    if plateau:
        return {"c_ref": "each trained to its own plateau", "c_vs": "trained to its own "
                "plateau", "longer": "given twice the patience and at least the OKDHP run's "
                "wall time", "c_eq_how": "twice the patience, at least a's wall time",
                "c_how": "each to its own plateau", "a_2x_how": "twice the plateau patience"}
    return {"c_ref": "equal iterations", "c_vs": "at equal iterations",
            "longer": "given about twice the iterations", "c_eq_how": "more iterations",
            "c_how": "the shared schedule", "a_2x_how": "twice the schedule"}


def arm_title(arm: str, plateau: bool = False) -> str:
    """The arm's name in reports; c, c_eq and a_2x mean other things under a plateau
    schedule."""
    return (PLATEAU_TITLES.get(arm) if plateau else None) or ARM_TITLES.get(arm, arm)


def wall_ratios(results: dict[str, dict[str, list[dict]]]) -> dict[str, float]:
    """Per plain student: (OKDHP time per iteration) / (its own), from arms a and c,
    each time per iteration averaged over every seed both arms have finished."""
    a, c = results.get("a", {}), results.get("c", {})
    seeds = sorted(set(a) & set(c), key=int)
    if not seeds:
        raise UsageError("arm c_eq needs arms a and c finished for at least one seed first")
    per_iter_a = np.mean([a[s][0]["wall_s"] / a[s][0]["iterations"] for s in seeds])
    plain: dict[str, list[float]] = {}
    for s in seeds:
        for r in c[s]:
            (name,) = r["students"]
            plain.setdefault(base_student_name(name), []).append(r["wall_s"] / r["iterations"])
    return {k: float(per_iter_a / np.mean(v)) for k, v in plain.items()}


def okdhp_wall(results: dict[str, dict[str, list[dict]]]) -> float:
    """Arm a's training wall time in seconds, averaged over its finished seeds."""
    a = results.get("a", {})
    if not a:
        raise UsageError("arm c_eq needs arm a finished for at least one seed first")
    return float(np.mean([runs[0]["wall_s"] for runs in a.values()]))
