"""``python -m okdhp_edge.experiments ablation --config configs/ablation/synthetic.yaml``

Trains the quickstart students under several settings and seeds on the synthetic data,
and writes ``bench/reports/ablation_synthetic.{md,json}`` with mean and standard
deviation of report-split AP per student and arm, training cost, learning curves and the
exact commands. Resumable run by run: a finished run (its ``result.json``) is skipped, an
interrupted one continues from its checkpoint. When the work dir is lost (a wiped scratch
disk), ``--restore-from bench/reports/ablation_synthetic.json`` takes every run that report
holds instead of training it again (only the results come back, not the checkpoints or
zoos). A run is matched by what decides it, its base config and the last value of each
override, not by the arm it was published under: a patience-4 spec's a_2x (twice the
patience) restores as a patience-8 spec's a.

Arms (``--arms`` picks a subset):
  a  OKDHP unbalanced (the config as given)
  a_2x  OKDHP unbalanced for twice the schedule (epochs, LR steps and KD ramp x2): what
        longer training adds to OKDHP, beside what c_eq adds to the plain students
  b  OKDHP balanced (every branch as deep as the deepest)
  c  each student alone, plain, same epochs (equal iterations)
  c_eq  each student alone, plain, given the OKDHP run's training wall time (equal
        compute: epochs and LR steps scaled by the measured time-per-iteration ratio of
        arm a over arm c, averaged over their seeds; runs after both). Under a plateau
        schedule (train.plateau_patience > 0) the epoch cap is scaled the same way, the
        patience doubled, and the run may not stop before arm a's mean training wall time
        (train.min_wall_s); a_2x then doubles a's patience instead of its schedule
  d  FAU replaced by plain averaging
  e  distillation off, branches and ensemble loss kept
  f  KL with a temperature (default 0.1; released per-pixel normalisation)
  f_joint  KL with per-joint normalisation (temperature 1)
  f_both  both switches at once
  f_detach  KL with temperature T and the ensemble detached (a teacher the KL cannot pull)
  f_weight  the released KL with a stronger weight (spec key lambda_kd_strong, default 100
            times the config's lambda_kd: at 32x24 heatmaps the released 2 x KL pulls a
            prediction 1-3 px off about 250 times more weakly than its MSE does)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from okdhp_edge.utils.cli import UsageError, run_cli, setup_logging
from okdhp_edge.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger("okdhp_edge.experiments")

ARMS = ("a", "a_2x", "b", "c", "c_eq", "d", "e", "f", "f_joint", "f_both", "f_detach",
        "f_weight")


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


def _readable_command(command: str) -> str:
    """The command with each repeated ``key=value`` override given once, at its first place,
    with the value that wins (the last one): the run-specific overrides of arms c and c_eq
    repeat keys of the base overrides."""
    args = shlex.split(command)
    keys = [a.split("=", 1)[0] if "=" in a and not a.startswith("-") else None for a in args]
    last = {k: a for k, a in zip(keys, args) if k}
    out, seen = [], set()
    for k, a in zip(keys, args):
        if k in seen:
            continue
        if k:
            seen.add(k)
        out.append(last[k] if k else a)
    return " ".join(shlex.quote(a) for a in out)


def mac_ratios(cfg: Any) -> dict[str, float]:
    """Training cost of the multi-branch net over each plain student's (forward MACs),
    by student name."""
    import dataclasses

    from okdhp_edge import create_model
    from okdhp_edge.data.keypoints import get_spec
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


def run_one(config: Optional[Path], overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """Train (or resume) one run and evaluate its students; cached in result.json."""
    from okdhp_edge.config import config_to_dict, load_config
    from okdhp_edge.training.trainer import Trainer
    from okdhp_edge.training.zoo_writer import write_zoo

    result = run_dir / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    resume = (run_dir / "last.pt").is_file()
    planned = overrides + [f"zoo.root={run_dir}/zoo", f"zoo.name={run_dir.name}"]
    cfg = load_config(run_dir / "config.yaml" if resume else config, [] if resume else planned)
    if resume:
        _same_run(run_dir, config_to_dict(cfg), config_to_dict(load_config(config, planned)))
    t0 = time.time()
    trainer = Trainer(cfg, run_dir=run_dir, resume=resume)
    try:
        trainer.fit()
        zoo = write_zoo(trainer)
    finally:
        trainer.close()
    from okdhp_edge.manifest import zoo_students

    res = {
        "overrides": overrides, "wall_s": trainer.state.wall, "elapsed_s": time.time() - t0,
        "iterations": trainer.state.iteration,
        "finished": trainer.state.finished,  # why a plateau schedule ended; "" otherwise
        "images_per_s": float(np.mean([h["images_per_s"] for h in trainer.state.history])),
        "students": {m["name"]: m["accuracy"]["value"] for _, m in zoo_students(zoo)},
        "curves": [{"iteration": h["iteration"], "wall_s": h["wall_s"], **h["select"]}
                   for h in trainer.state.history if h["select"]],
        "losses": _last_losses(run_dir / "metrics.jsonl"),
        "command": train_command(config, overrides),
    }
    atomic_write_json(result, res)
    return res


def _same_run(run_dir: Path, found: dict[str, Any], planned: dict[str, Any],
              prefix: str = "") -> None:
    """Raise UsageError naming the first setting in which the run found in ``run_dir``
    differs from the planned one (another spec's run in the same work dir)."""
    for key in planned:
        a, b = found.get(key), planned[key]
        if isinstance(a, dict) and isinstance(b, dict):
            _same_run(run_dir, a, b, f"{prefix}{key}.")
        elif a != b:
            raise UsageError(f"{run_dir} holds a run with {prefix}{key}={a!r}, but this "
                             f"ablation plans {b!r}: another spec's run? Give this ablation its "
                             f"own --work-dir, or delete that folder to retrain it")


def _last_losses(metrics: Path) -> dict[str, float]:
    """Mean loss terms (unweighted) of the last epoch in a run's metrics.jsonl."""
    if not metrics.is_file():
        return {}
    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return {k: float(rows[-1][k]) for k in ("mse", "ens", "kl") if rows and k in rows[-1]}


def _student_key(name: str) -> str:
    return name.split("-")[0]  # hg4-b1 -> hg4 (balanced arms repeat a depth)


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


# (longer arm, its shorter twin): what more training adds, the test of a plateau
PLATEAU_TESTS = (("c_eq", "c"), ("a_2x", "a"))
PLATEAU_EVALS = 3  # the last evaluations that must add less than PLATEAU_GAIN
PLATEAU_GAIN = 0.01
PLATEAU_LONGER_GAIN = 0.02  # c_eq - c (about 2x the iterations) below this: at a plateau


def _std(v: list[float]) -> float:
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def plateau_gain(curves: list[dict], key: str, last: int = PLATEAU_EVALS) -> Optional[float]:
    """Best selection AP of the last ``last`` evaluations minus the best before them."""
    ys = [c[key] for c in curves if key in c]
    if len(ys) <= last:
        return None
    return float(max(ys[-last:]) - max(ys[:-last]))


def _per_seed(results: dict[str, dict[str, list[dict]]]) -> dict[str, dict[str, dict]]:
    """arm -> seed -> student -> mean AP over that seed's runs (arm b pools its branches)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for arm, seeds in results.items():
        for seed, runs in seeds.items():
            vals: dict[str, list[float]] = {}
            for r in runs:
                for s, v in r["students"].items():
                    vals.setdefault(_student_key(s), []).append(v)
            out.setdefault(arm, {})[seed] = {s: float(np.mean(v)) for s, v in vals.items()}
    return out


def best_selection(run: dict, student: str) -> Optional[float]:
    """A run's best selection-split AP of one student over its evaluations."""
    ys = [c[student] for c in run["curves"] if student in c]
    return max(ys) if ys else None


def _per_seed_selection(results: dict[str, dict[str, list[dict]]]
                        ) -> dict[str, dict[str, dict]]:
    """arm -> seed -> student -> best selection AP (mean over that seed's runs): what every
    verdict of the report is decided on; the report split is only reported."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for arm, seeds in results.items():
        for seed, runs in seeds.items():
            vals: dict[str, list[float]] = {}
            for r in runs:
                for s in r["students"]:
                    v = best_selection(r, s)
                    if v is not None:
                        vals.setdefault(_student_key(s), []).append(v)
            out.setdefault(arm, {})[seed] = {s: float(np.mean(v)) for s, v in vals.items()}
    return out


def _stats(values: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """student -> mean, sample std, count and the values, students ordered by depth."""
    return {k: {"mean": float(np.mean(v)), "std": _std(v), "n": len(v), "values": v}
            for k, v in sorted(values.items(), key=lambda kv: _depth(kv[0]))}


def equal_iteration_gaps(results: dict[str, dict[str, list[dict]]], ref: str = "c"
                         ) -> dict[str, dict[str, dict[str, Any]]]:
    """arm -> student -> selection AP minus ``ref``'s at equal iterations, paired by seed:
    each side's best evaluation up to the iteration count at which the shorter of the two
    runs ended (plateau schedules end each run at its own count)."""
    def best(run: dict, key: str, upto: int) -> Optional[float]:
        ys = [c[key] for c in run["curves"] if key in c and c["iteration"] <= upto]
        return max(ys) if ys else None

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for arm, seeds in results.items():
        if arm in (ref, "c_eq"):
            continue
        diffs: dict[str, list[float]] = {}
        for seed, runs in seeds.items():
            for r in runs:
                for st in r["students"]:
                    key = _student_key(st)
                    plain = [p for p in results.get(ref, {}).get(seed, [])
                             if key in map(_student_key, p["students"])]
                    if not plain:
                        continue
                    (pst,) = plain[0]["students"]
                    upto = min(r["iterations"], plain[0]["iterations"])
                    a, b = best(r, st, upto), best(plain[0], pst, upto)
                    if a is not None and b is not None:
                        diffs.setdefault(key, []).append(a - b)
        if diffs:
            out[arm] = _stats(diffs)
    return out


def _paired(arm: dict[str, dict[str, float]], ref: dict[str, dict[str, float]]
            ) -> dict[str, list[float]]:
    """student -> arm's AP minus ref's, one value per seed that both have (seed -> student
    -> AP, as ``_per_seed`` gives them)."""
    diffs: dict[str, list[float]] = {}
    for seed, studs in arm.items():
        for st, v in studs.items():
            r = ref.get(seed, {}).get(st)
            if r is not None:
                diffs.setdefault(st, []).append(v - r)
    return diffs


def _iterations(runs_by_seed: dict[str, list[dict]]) -> dict[str, list[int]]:
    """student -> the iteration counts of its runs (over seeds)."""
    out: dict[str, set[int]] = {}
    for runs in runs_by_seed.values():
        for r in runs:
            for s in r["students"]:
                out.setdefault(_student_key(s), set()).add(r["iterations"])
    return {s: sorted(v) for s, v in out.items()}


def shorter_schedule_gains(results: dict, reference: dict, pairs: dict[str, str]
                           ) -> dict[str, dict[str, Any]]:
    """What a longer schedule adds: each arm of this ablation minus an arm of an earlier,
    shorter one (``reference``: its JSON report), paired by seed and student, in best
    selection-split AP (a verdict, so never the report split).

    Returns ``{arm: {"ref_arm", "students": {s: {mean, std, n, values, iterations,
    ref_iterations}}}}`` for the pairs with at least one common seed.
    """
    mine = _per_seed_selection(results)
    theirs = _per_seed_selection(reference["runs"])
    out: dict[str, dict[str, Any]] = {}
    for arm, ref in pairs.items():
        diffs = _paired(mine.get(arm, {}), theirs.get(ref, {}))
        if not diffs:
            continue
        its, ref_its = _iterations(results[arm]), _iterations(reference["runs"][ref])
        out[arm] = {"ref_arm": ref, "students": {
            st: {"mean": float(np.mean(d)), "std": _std(d), "n": len(d), "values": d,
                 "iterations": its[st], "ref_iterations": ref_its[st]}
            for st, d in sorted(diffs.items(), key=lambda kv: _depth(kv[0]))}}
    return out


def summarize(results: dict[str, dict[str, list[dict]]], plateau: bool = False
              ) -> dict[str, Any]:
    """Per arm: AP mean / std over seeds per student, cost, plateau gains, and paired
    differences against the plain students (same seed, so same data order and init seed)."""
    table: dict[str, Any] = {}
    per_seed = _per_seed(results)
    for arm, seeds in results.items():
        per_student: dict[str, list[float]] = {}
        cost, iters, gains, ended = [], [], [], []
        for runs in seeds.values():
            wall = 0.0
            for r in runs:
                wall += r["wall_s"]
                iters.append(r["iterations"])
                if "finished" in r:  # results of runs before the plateau schedule lack it
                    ended.append(bool(r["finished"]))
                for s, v in r["students"].items():
                    per_student.setdefault(_student_key(s), []).append(v)
                    g = plateau_gain(r["curves"], s)
                    if g is not None:
                        gains.append(g)
            cost.append(wall)
        table[arm] = {
            "title": arm_title(arm, plateau),
            "students": _stats(per_student),
            "seeds": len(seeds),
            "train_wall_s_mean": float(np.mean(cost)) if cost else None,
            "iterations": sorted(set(iters)),
            "plateau_gain_max": max(gains) if gains else None,
            "runs_ended_at_plateau": [sum(ended), len(ended)],
        }
    select = _per_seed_selection(results)
    for arm in table:
        table[arm]["paired"] = {}
        for ref in ("a", "c", "c_eq", "e"):
            if ref == arm or ref not in per_seed or arm not in per_seed:
                continue
            diffs = _paired(per_seed[arm], per_seed[ref])
            table[arm]["paired"][ref] = _stats(diffs)
    for arm, ref in PLATEAU_TESTS:  # the plateau test's verdict reads selection AP only
        if arm in select and ref in select:
            table[arm]["paired_select"] = {ref: _stats(_paired(select[arm], select[ref]))}
    return table


def shorter_verdict(gains: dict[str, dict[str, Any]], report: str) -> str:
    """One sentence: what this ablation's schedule adds over an earlier, shorter one."""
    if not gains:
        return f"No arm of this ablation has a finished run to pair with {report} yet."
    def its(v: list[int]) -> str:
        return "/".join(map(str, v))

    parts, top = [], -1.0
    for arm, g in gains.items():
        top = max(top, max(d["mean"] for d in g["students"].values()))
        parts.append(f"{arm} minus {g['ref_arm']}: " + ", ".join(
            f"{st} {d['mean']:+.3f} ({its(d['iterations'])} vs {its(d['ref_iterations'])} "
            f"iterations" + (f", n={d['n']})" if d["n"] > 1 else ")")
            for st, d in g["students"].items()))
    verdict = ("the shorter schedule was already at a plateau" if top < PLATEAU_LONGER_GAIN
               else "the shorter schedule was not at a plateau")
    return (f"Against the shorter schedule of {report}, in best selection-split AP paired by "
            f"seed: " + "; ".join(parts)
            + f". At most {top:+.3f} (threshold {PLATEAU_LONGER_GAIN}): {verdict}.")


def plateau_verdict(table: dict[str, Any], plateau: bool = False) -> str:
    """Did the arms reach a plateau? Two facts: how much each arm's selection AP still
    gained in its last evaluations (LR drops flatten any curve, and the last drop may fall
    in that window), and what the plain students gain from about twice the iterations
    (c_eq vs c), which decides when it ran, and, when it ran, what OKDHP gains from twice
    the schedule (a_2x vs a)."""
    ended = [row.get("runs_ended_at_plateau", [0, 0]) for row in table.values()]
    stopped, counted = sum(e[0] for e in ended), sum(e[1] for e in ended)
    schedule = ""
    if stopped:
        capped = [arm for arm, row in table.items()
                  if row["runs_ended_at_plateau"][0] < row["runs_ended_at_plateau"][1]]
        schedule = (f"Plateau schedule: {stopped} of {counted} runs ended at its stop (every LR "
                    f"drop taken, then no student gained on its selection AP)"
                    + (f"; the others reached the epoch cap first (arms {', '.join(capped)}). "
                       if capped else ". "))
    rising = {arm: row["plateau_gain_max"] for arm, row in table.items()
              if row["plateau_gain_max"] is not None and row["plateau_gain_max"] >= PLATEAU_GAIN}
    if rising:
        arms = ", ".join(f"{arm} ({gain:+.3f})" for arm, gain in rising.items())
        end = (f"{schedule}Gain of at least {PLATEAU_GAIN} in the last {PLATEAU_EVALS} "
               f"evaluations: {arms}. ")
    else:
        end = (f"{schedule}Every run of every arm flattened by the end of its schedule "
               f"(plateau gain below {PLATEAU_GAIN}), but LR drops flatten any curve. ")
    longer = table.get("c_eq", {}).get("paired_select", {}).get("c")
    if not longer:
        return end + (f"The test of a plateau, c_eq vs c ({_words(plateau)['longer']}), has "
                      f"not run.")
    gain = max(d["mean"] for d in longer.values())
    gains = ", ".join(f"{s} {d['mean']:+.3f}" for s, d in longer.items())
    okdhp = table.get("a_2x", {}).get("paired_select", {}).get("a")
    also = ""
    if okdhp:
        gain = max(gain, max(d["mean"] for d in okdhp.values()))
        also = (f" OKDHP given {_words(plateau)['a_2x_how']} (a_2x) gains "
                + ", ".join(f"{s} {d['mean']:+.3f}" for s, d in okdhp.items()) + " over a.")
    verdict = (f"At most {gain:+.3f} (threshold {PLATEAU_LONGER_GAIN}): at a plateau."
               if gain < PLATEAU_LONGER_GAIN
               else f"Threshold {PLATEAU_LONGER_GAIN}: not at a plateau.")
    still = "" if gain < PLATEAU_LONGER_GAIN else " still"
    return end + (f"Decided on the selection split (best selection AP, paired by seed; the "
                  f"report split decides nothing): the plain students "
                  f"{_words(plateau)['longer']} (c_eq){still} gain {gains} over c.{also} "
                  f"{verdict}")


def _depth(name: str) -> int:
    digits = "".join(ch for ch in _student_key(name) if ch.isdigit())
    return int(digits) if digits else 0


def _iteration_range(its: list[int]) -> str:
    """A few iteration counts as they are; many (plateau schedules end anywhere) as a range."""
    return "/".join(map(str, its)) if len(its) <= 3 else f"{min(its)}-{max(its)}"


def _fmt(v: Optional[dict], signed: bool = False) -> str:
    if v is None:
        return "-"
    sign = "+" if signed else ""
    return (f"{v['mean']:{sign}.3f} ± {v['std']:.3f}" if v["n"] > 1
            else f"{v['mean']:{sign}.3f} (n=1)")


# (arm, reference arm, what the paired difference measures), in the order the report gives
COMPARISONS = (
    ("c_eq", "c", "Plain students given the OKDHP run's wall time (c_eq, {c_eq_how}) "
                  "vs {c_how} (c): what longer training still adds"),
    ("a", "c", "OKDHP (a) vs each student alone {c_vs} (c)"),
    ("a", "c_eq", "OKDHP (a) vs each student alone at equal wall time (c_eq)"),
    ("a_2x", "a", "OKDHP given {a_2x_how} (a_2x) vs a: what longer training still "
                  "adds to OKDHP"),
    ("a_2x", "c_eq", "OKDHP with {a_2x_how} (a_2x) vs each student alone at the "
                     "OKDHP run's wall time (c_eq)"),
    ("e", "c", "Shared multi-branch training + ensemble loss without distillation (e) "
               "vs alone (c)"),
    ("a", "e", "The distillation term itself: OKDHP (a) vs distillation off (e)"),
    ("f", "e", "KL with temperature 0.1 (f) vs distillation off (e)"),
    ("f_joint", "e", "KL with per-joint normalisation (f_joint) vs distillation off (e)"),
    ("f_both", "e", "KL with both switches (f_both) vs distillation off (e)"),
    ("f_detach", "e", "KL with temperature 0.1 and the ensemble detached (f_detach) vs "
                      "distillation off (e)"),
    ("f_weight", "a", "The released KL with a stronger weight (f_weight) vs the released "
                      "weight (a)"),
    ("f_weight", "e", "The released KL with a stronger weight (f_weight) vs distillation "
                      "off (e)"),
    ("d", "a", "FAU replaced by a plain mean (d) vs the FAU (a), both distilling"),
    ("b", "a", "Balanced branches (b; its hg4 pools three equal branches) vs unbalanced (a)"),
)


PLAIN_ARMS = ("c", "c_eq")
ASYMMETRY = ("† Unequal stopping rule: a multi-branch run trains on while any one of its "
             "students still gains on the selection split, a plain run stops when its one "
             "student stops, so a multi-branch student can train past the point where it would "
             "have stopped alone. Every comparison marked † favours the multi-branch arm in "
             "that way; c_eq (the plain students at twice the patience) is its check.")


def _asymmetric(arm: str, ref: str, plateau: bool) -> bool:
    """A multi-branch arm against a plain one under a plateau schedule: the two sides did
    not stop by the same rule (see ASYMMETRY)."""
    return plateau and ref in PLAIN_ARMS and arm not in PLAIN_ARMS


def findings(table: dict[str, Any], plateau: bool = False) -> list[str]:
    """Plain-language lines for the comparisons the ablation exists for (paired by seed)."""
    out = []
    for arm, ref, what in COMPARISONS:
        what = what.format(**_words(plateau)) + (" †" if _asymmetric(arm, ref, plateau) else "")
        p = table.get(arm, {}).get("paired", {}).get(ref)
        if not p:
            continue
        parts = []
        for s, d in p.items():
            if d["n"] < 2:
                parts.append(f"{s} {d['mean']:+.3f} AP (one seed: no noise estimate)")
                continue
            se = d["std"] / np.sqrt(d["n"])
            verdict = ("above the seed noise" if abs(d["mean"]) > 2 * se
                       else "within the seed noise")
            parts.append(f"{s} {d['mean']:+.3f} ± {d['std']:.3f} AP ({verdict}, "
                         f"n={d['n']})")
        out.append(f"- {what}: " + "; ".join(parts) + ".")
    return out


def _difference_table(rows: list[tuple[str, dict]], students: list[str]) -> list[str]:
    """Markdown rows: one per arm, its signed per-student differences (mean ± std)."""
    return (["| arm | " + " | ".join(students) + " |", "|---|" + "---|" * len(students)]
            + [f"| {arm} | " + " | ".join(_fmt(d.get(s), signed=True) for s in students)
               + " |" for arm, d in rows])


def write_report(table: dict[str, Any], results: dict, out: Path, meta: dict) -> None:
    """Markdown + JSON + learning-curve chart."""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out.with_suffix(".json"), {"meta": meta, "table": table,
                                                  "runs": results})
    sched = meta.get("plateau_schedule")
    plateau = bool(sched)
    students = sorted({s for a in table.values() for s in a["students"]}, key=_depth)
    lines = [f"# Ablation on synthetic data ({meta['config']})", ""]
    if meta.get("note"):  # e.g. why a report was superseded, kept with its data
        lines += [f"> {meta['note']}", ""]
    lines += ["Report-split COCO AP of each student (synthetic val, 300 images; never used "
             "for selection), mean ± sample std over seeds; best weights per student chosen "
             "on a selection split held out from the training images."
             + (" Arm b's hg4 pools its three equal-depth branches." if "b" in results else ""),
             ""]
    if sched:
        lines += [f"Every run trains to a plateau of its selection AP (plateau schedule): an "
                  f"evaluation every {sched['val_every']} epochs; when no student's selection "
                  f"AP, averaged over its last {sched['window']} evaluations, gains "
                  f"{sched['min_delta']:g} in {sched['patience']} evaluations in a row, the LR "
                  f"drops x{sched['lr_factor']:g}; after {sched['drops']} drops the next such "
                  f"plateau ends the run (at most {sched['epochs']} epochs).", ""]
    finished = sum(len(runs) for seeds in results.values() for runs in seeds.values())
    if finished < meta.get("planned_runs", 0):
        lines += [f"**In progress: {finished} of {meta['planned_runs']} runs finished** "
                  "(the ablation resumes run by run; rerun its command to continue).", ""]
    lines += ["| arm | setting | seeds | " + " | ".join(students)
              + " | iterations | train wall s / seed | plateau gain |",
              "|---|---|---|" + "---|" * (len(students) + 3)]
    for arm, row in table.items():
        stats = [row["students"].get(s) for s in students]
        cells = [_fmt(v) + (f" (n={v['n']})" if v and 1 < v["n"] < row["seeds"] else "")
                 for v in stats]
        wall = row["train_wall_s_mean"]
        gain = row["plateau_gain_max"]
        title = row["title"] + (f" (lambda_kd {meta['lambda_kd_strong']})"
                                if arm == "f_weight" and "lambda_kd_strong" in meta else "")
        lines.append(f"| {arm} | {title} | {row['seeds']} | " + " | ".join(cells)
                     + f" | {_iteration_range(row['iterations'])} | {wall:.0f} | "
                     + ("-" if gain is None else f"{gain:+.3f}") + " |")
    lines += ["", f"*Plateau gain*: over every run and student of the arm, the largest gain of "
              f"selection-split AP in the last {PLATEAU_EVALS} evaluations over the best "
              f"before them; below {PLATEAU_GAIN} means the curve has flattened.", "",
              plateau_verdict(table, plateau), ""]
    shorter = meta.get("shorter_schedule")
    if shorter:
        lines += [shorter_verdict(shorter["gains"], shorter["report"]), ""]
    for ref, title in (("c", _words(plateau)["c_ref"]), ("c_eq", "equal training wall time")):
        rows = [(arm, row["paired"][ref]) for arm, row in table.items()
                if ref in row.get("paired", {}) and arm not in ("c", "c_eq")]
        if not rows:
            continue
        lines += [f"## Paired by seed: arm minus plain students ({title}, arm {ref})"
                  + (" †" if plateau else ""), ""]
        if plateau and ASYMMETRY not in lines:
            lines += [ASYMMETRY, ""]
        lines += [*_difference_table(rows, students), ""]
    gaps = equal_iteration_gaps(results) if plateau else {}
    if gaps:  # under a fixed schedule arm c is the equal-iterations comparison already
        lines += ["## At equal iterations, from the learning curves (arm minus c)", "",
                  "Selection-split AP, paired by seed: each side's best evaluation up to the "
                  "iteration count at which the shorter of the two runs ended.", "",
                  *_difference_table(list(gaps.items()), students), ""]
    f = findings(table, plateau)
    if f:
        lines += ["## What the numbers say", "", *f,
                  "", "(\"above the seed noise\": |mean| > 2 standard errors of the paired "
                  "differences; with 3 seeds this is a weak test, read it as such.)", ""]
    margin_rows = []
    for arm, seeds in results.items():
        gaps: dict[str, list[float]] = {}
        for runs in seeds.values():
            for r in runs:
                last = r["curves"][-1] if r["curves"] else {}
                if "ensemble" not in last:
                    continue
                for s in r["students"]:
                    if s in last:
                        gaps.setdefault(s, []).append(last["ensemble"] - last[s])
        if gaps:
            margin_rows.append((arm, _stats(gaps)))
    if margin_rows:
        names = sorted({s for _, g in margin_rows for s in g}, key=lambda n: (_depth(n), n))
        lines += ["## How much the ensemble teacher knows beyond each student", "",
                  "Selection-split AP of the ensemble (FAU; plain mean in arm d) minus the "
                  "student's, at the last evaluation (mean over seeds): what distillation "
                  "has to transfer.", "",
                  "| arm | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for arm, g in margin_rows:
            lines.append(f"| {arm} | " + " | ".join(_fmt(g.get(s), signed=True)
                                                  for s in names) + " |")
        lines.append("")
    loss_rows = [(arm, r["losses"]) for arm, seeds in results.items() if not arm.startswith("c")
                 for r in seeds.get(next(iter(seeds)), []) if r.get("losses")]
    if loss_rows:
        lines += ["## Loss terms in the last epoch (first seed, unweighted means per iteration)",
                  "", f"The total is mse + {meta.get('lambda_ens', 1.0)} ens + "
                  f"{meta.get('lambda_kd', 2.0)} kl once the ramp is done"
                  + (f" ({meta['lambda_kd_strong']} kl in f_weight)."
                     if "f_weight" in results and "lambda_kd_strong" in meta else "."), "",
                  "| arm | mse (all stacks) | ens | kl (all branches) | kl / mse |",
                  "|---|---|---|---|---|"]
        for arm, lo in loss_rows:
            ratio = lo.get("kl", 0.0) / lo["mse"] if lo.get("mse") else float("nan")
            lines.append(f"| {arm} | {lo.get('mse', 0):.3e} | {lo.get('ens', 0):.3e} | "
                         f"{lo.get('kl', 0):.3e} | {ratio:.4f} |")
        lines.append("")
    if meta.get("mac_ratio_okdhp_over_plain"):
        lines += ["Forward MACs of the multi-branch net over each plain student: "
                  + ", ".join(f"{'hg' if k.isdigit() else ''}{k} {v:.2f}x" for k, v in
                              meta["mac_ratio_okdhp_over_plain"].items()) + ".", ""]
    lines += ["## Commands", "", "Whole ablation (resumable, run by run):", "",
              f"    {' '.join(shlex.quote(a) for a in meta.get('argv_display', []))}", "",
              "Each run:", ""]
    for arm, seeds in results.items():
        for seed, runs in seeds.items():
            for r in runs:
                # a plain run (one student) is always named, even alone in its seed
                named = len(runs) > 1 or len(r["students"]) == 1
                who = f" ({', '.join(r['students'])})" if named else ""
                lines.append(f"- {arm} seed {seed}{who}: `{_readable_command(r['command'])}`")
    lines += ["", "## Learning curves", "",
              "Selection-split AP per student, mean over seeds, against iterations and "
              "against training wall time.", "", f"![learning curves]({out.stem}_curves.png)"]
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    _curves(results, out.with_name(out.stem + "_curves.png"), plateau)


def _mean_curve(runs_by_seed: list[dict], key: str) -> tuple[list, list, list]:
    """Mean AP over seeds at each evaluation (seeds share the evaluation iterations)."""
    curves = [r["curves"] for r in runs_by_seed]
    n = min(len(c) for c in curves)
    its = [curves[0][i]["iteration"] for i in range(n)]
    wall = [float(np.mean([c[i]["wall_s"] for c in curves])) for i in range(n)]
    ap = [float(np.mean([c[i].get(key, np.nan) for c in curves])) for i in range(n)]
    return its, wall, ap


def _curves(results: dict, path: Path, plateau: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    students = sorted({_student_key(s) for seeds in results.values() for runs in seeds.values()
                       for r in runs for s in r["students"]}, key=_depth)
    if not students:
        return
    fig, axes = plt.subplots(len(students), 2, figsize=(12, 3.2 * len(students)), dpi=90,
                             squeeze=False)
    for i, arm in enumerate(results):
        color = plt.cm.tab10(i % 10)
        style = "--" if arm.startswith("c") else "-"
        for row, stud in enumerate(students):
            picked = []
            for runs in results[arm].values():
                for r in runs:
                    keys = [k for k in r["students"] if _student_key(k) == stud]
                    if keys and r["curves"]:
                        picked.append((r, keys[0]))
            if not picked:
                continue
            its, wall, ap = _mean_curve([r for r, _ in picked], picked[0][1])
            label = f"{arm}: {arm_title(arm, plateau)} (n={len(picked)})"
            axes[row][0].plot(its, ap, style, color=color, label=label, lw=1.4)
            axes[row][1].plot(wall, ap, style, color=color, lw=1.4)
    for row, stud in enumerate(students):
        for col, xl in enumerate(("iterations", "training wall time (s, one core each)")):
            ax = axes[row][col]
            ax.set_xlabel(xl)
            ax.set_ylabel(f"{stud}: selection AP")
            ax.grid(alpha=0.3)
            ax.set_ylim(bottom=max(0.0, ax.get_ylim()[0]))
    legend: dict[str, Any] = {}  # every arm once, also those with only some students (b)
    for row in range(len(students)):
        for h, lab in zip(*axes[row][0].get_legend_handles_labels()):
            legend.setdefault(lab, h)
    axes[0][0].legend(list(legend.values()), list(legend), fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@dataclass
class PlannedRun:
    arm: str
    seed: int
    label: str  # okdhp, hg2, ...
    run_dir: Path
    overrides: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.run_dir.name


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
            plain.setdefault(_student_key(name), []).append(r["wall_s"] / r["iterations"])
    return {k: float(per_iter_a / np.mean(v)) for k, v in plain.items()}


def okdhp_wall(results: dict[str, dict[str, list[dict]]]) -> float:
    """Arm a's training wall time in seconds, averaged over its finished seeds."""
    a = results.get("a", {})
    if not a:
        raise UsageError("arm c_eq needs arm a finished for at least one seed first")
    return float(np.mean([runs[0]["wall_s"] for runs in a.values()]))


def _stop_when_orphaned(parent: int, every_s: float = 2.0) -> None:
    """SIGTERM this process once its parent (the ablation runner) is gone: a killed runner
    must not leave its runs training unseen. The trainer checkpoints on SIGTERM, so the
    next runner resumes them. Once per process (a pool process trains run after run)."""
    if any(t.name == "orphan-watch" for t in threading.enumerate()):
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        log.warning("the ablation runner (pid %d) is gone: stopping this run", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="orphan-watch").start()


def _worker(config: Optional[str], overrides: list[str], run_dir: str,
            parent: int = 0) -> dict[str, Any]:
    """One run in a fresh process; its progress bar goes to run_dir/progress.log."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    setup_logging()
    if parent:
        _stop_when_orphaned(parent)
    with open(run / "progress.log", "a") as err:
        old, sys.stderr = sys.stderr, err
        try:
            return run_one(Path(config) if config else None, overrides, run)
        finally:
            sys.stderr = old


def train_command(config: Optional[Path], overrides: list[str]) -> str:
    """The ``okdhp_edge.train`` command line of one run."""
    return " ".join(shlex.quote(a) for a in [
        "python", "-m", "okdhp_edge.train", *(["--config", str(config)] if config else []),
        *overrides])


def run_identity(config: str, overrides: list[str]) -> tuple[str, tuple[str, ...]]:
    """What decides a run: its base config and its overrides with each key's last value
    (``a_2x`` of a patience-4 spec and ``a`` of a patience-8 spec are the same run)."""
    last = {o.split("=", 1)[0]: o for o in overrides}
    return config, tuple(sorted(last.values()))


def _command_config(command: str) -> str:
    """The ``--config`` of a published run's command line ("" when it had none)."""
    args = shlex.split(command)
    return next((b for a, b in zip(args, args[1:]) if a == "--config"), "")


def restorable_runs(path: Path) -> dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]]:
    """Finished runs of a published ablation report, grouped by :func:`run_identity` (two
    arms can train the same run: c_eq is c when the wall-time ratio rounds to 1); each
    result notes the arm it was published under (``restored_arm``)."""
    if not path.is_file():
        raise UsageError(f"--restore-from {path}: no such report")
    out = {}
    try:
        for arm, seeds in json.loads(path.read_text())["runs"].items():
            for results in seeds.values():
                for res in results:
                    key = run_identity(_command_config(res["command"]), res["overrides"])
                    out.setdefault(key, []).append(
                        {**res, "restored_arm": res.get("restored_arm", arm)})
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise UsageError(f"--restore-from {path}: not an ablation report (.json with "
                         f"runs -> arm -> seed -> results): {e!r}") from None
    return out


def ablation(args: argparse.Namespace) -> int:
    from okdhp_edge.config import load_config

    if not args.config.is_file():
        raise UsageError(f"{args.config}: ablation spec not found")
    spec = yaml.safe_load(args.config.read_text()) or {}
    spec_keys = {"base_config", "seeds", "arms", "overrides", "kl_temperature", "arm_seeds",
                 "lambda_kd_strong", "shorter_schedule"}
    if not (isinstance(spec, dict) and spec_keys & set(spec)):
        spec = {"base_config": str(args.config)}  # a plain training config
    unknown = set(spec) - spec_keys
    if unknown:
        raise UsageError(f"{args.config}: unknown ablation key '{sorted(unknown)[0]}' "
                         f"(expected {', '.join(sorted(spec_keys))})")
    base = Path(spec["base_config"]) if spec.get("base_config") else None
    seeds = spec.get("seeds", [0, 1, 2]) if args.seeds is None else args.seeds
    arms = spec.get("arms", list(ARMS)) if args.arms is None else args.arms
    arm_seeds = {a: [s for s in v if s in seeds] for a, v in (spec.get("arm_seeds") or {}).items()}
    bad = set(arm_seeds) - set(ARMS)
    if bad:
        raise UsageError(f"{args.config}: arm_seeds names unknown arm '{sorted(bad)[0]}'")
    extra_overrides = spec.get("overrides", []) + list(args.overrides)
    cfg = load_config(base, extra_overrides)  # validates every override before any run
    kl_t = spec.get("kl_temperature", 0.1)
    root = Path(args.work_dir)
    restorable: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for report in args.restore_from or []:  # several reports: each one's runs are candidates
        for key, found in restorable_runs(report).items():
            restorable.setdefault(key, []).extend(found)
    if cfg.data.dataset == "synthetic" and not args.report_only:
        from okdhp_edge.data.build import ensure_synthetic

        ensure_synthetic(cfg.data)  # once, before parallel runs would each generate it

    # Priority order: arms with every seed first (seed-major), then the arms cut to fewer
    # seeds in spec order; c_eq waits for a and c of its seed. A stop at any time keeps the
    # most important runs.
    def priority(p: PlannedRun) -> tuple:
        full = len(arm_seeds.get(p.arm, seeds)) == len(seeds)
        return ((0, seeds.index(p.seed), arms.index(p.arm)) if full
                else (1, arms.index(p.arm), seeds.index(p.seed)))

    planned = sorted((PlannedRun(arm, seed, "?", root) for arm in arms for seed in seeds
                      if seed in arm_seeds.get(arm, seeds)), key=priority)
    results: dict[str, dict[str, list]] = {}
    done: dict[str, dict] = {}
    meta = {"config": str(args.config), "seeds": seeds, "arm_seeds": arm_seeds,
            "mac_ratio_okdhp_over_plain": mac_ratios(cfg),
            "lambda_kd": cfg.loss.lambda_kd, "lambda_ens": cfg.loss.lambda_ens,
            "lambda_kd_strong": spec.get("lambda_kd_strong", 100 * cfg.loss.lambda_kd),
            "argv": sys.argv, "jobs": args.jobs,
            "plateau_schedule": {"patience": cfg.train.plateau_patience,
                                 "window": cfg.train.plateau_window,
                                 "min_delta": cfg.train.plateau_min_delta,
                                 "drops": cfg.train.plateau_drops,
                                 "lr_factor": cfg.train.lr_factor,
                                 "val_every": cfg.train.val_every,
                                 "epochs": cfg.train.epochs}
            if cfg.train.plateau_patience else None,
            "argv_display": ["python", "-m", "okdhp_edge.experiments",
                             *[a for a in sys.argv[1:] if a != "--report-only"]]}

    def expand(p: PlannedRun) -> list[PlannedRun]:
        extra = {"kl_temperature": kl_t, "lambda_kd_strong": meta["lambda_kd_strong"]}
        if p.arm == "c_eq":
            extra["wall_ratio"] = wall_ratios(results)
            extra["okdhp_wall_s"] = okdhp_wall(results)
        return [PlannedRun(p.arm, p.seed, label, root / f"{p.arm}-seed{p.seed}-{label}",
                           extra_overrides + ov + [f"train.seed={p.seed}"])
                for label, ov in arm_runs(p.arm, cfg, extra)]

    def ready(p: PlannedRun) -> bool:
        if p.arm != "c_eq":
            return True
        need = [q for q in planned_all if q.arm in ("a", "c")]  # every seed: a fair ratio
        return bool(need) and all(q.key in done for q in need) and \
            all(any(q.arm == a for q in need) for a in ("a", "c"))

    def load(q: PlannedRun) -> bool:
        """Record a run finished earlier (its result.json, or the same run in the
        --restore-from report); False when it has none."""
        path = q.run_dir / "result.json"
        if path.is_file():
            res = json.loads(path.read_text())
            _same_run(q.run_dir, {"overrides": res.get("overrides")}, {"overrides": q.overrides})
        else:  # a restored run was matched on these very settings: nothing to check
            same = restorable.get(run_identity(str(base) if base else "", q.overrides))
            if not same:
                return False
            res = next((r for r in same if r["restored_arm"] == q.arm), same[0])
            res = {**res, "restored_overrides": res["overrides"], "overrides": q.overrides}
            q.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, res)
            log.info("%s: restored from a published report (as arm %s there)", q.key,
                     res["restored_arm"])
        record(q, res)
        return True

    def record(run: PlannedRun, res: dict) -> None:
        if "losses" not in res:  # results written before the loss terms were kept
            res["losses"] = _last_losses(run.run_dir / "metrics.jsonl")
        done[run.key] = res
        results.setdefault(run.arm, {}).setdefault(str(run.seed), []).append(res)

    shorter = spec.get("shorter_schedule")
    reference = None
    if shorter:
        ref_path = Path(shorter.get("report", ""))
        if not ref_path.is_file():
            raise UsageError(f"{args.config}: shorter_schedule.report {ref_path} not found")
        reference = json.loads(ref_path.read_text())
        bad = [a for a in shorter.get("pairs", {}) if a not in ARMS]
        if bad or not shorter.get("pairs"):
            raise UsageError(f"{args.config}: shorter_schedule.pairs must map arms of this "
                             f"ablation to arms of {ref_path} (e.g. a: a_2x)")

    def publish() -> None:
        """Rewrite the report from every run recorded so far; when --arms / --seeds chose a
        subset to train, from every finished run of the whole spec (the report is the
        spec's, and a subset must not drop the runs it did not train)."""
        if (args.arms is not None or args.seeds is not None) and not args.report_only:
            spec_arms, spec_seeds = spec.get("arms", list(ARMS)), spec.get("seeds", [0, 1, 2])
            ablation(argparse.Namespace(**{
                **vars(args), "report_only": True,
                "arms": spec_arms + [a for a in arms if a not in spec_arms],
                "seeds": spec_seeds + [x for x in seeds if x not in spec_seeds]}))
            return
        ordered = _ordered(results, arms)
        if reference is not None:
            meta["shorter_schedule"] = {
                "report": str(shorter["report"]), "pairs": shorter["pairs"],
                "gains": shorter_schedule_gains(ordered, reference, shorter["pairs"])}
        write_report(summarize(ordered, bool(meta["plateau_schedule"])), ordered, args.out,
                     meta)

    def pending(runs: list[PlannedRun]) -> list[PlannedRun]:
        """Record the runs finished earlier; the others, still to train."""
        todo = []
        for q in runs:
            if load(q):
                log.info("%s: finished earlier (cached result.json)", q.key)
            else:
                todo.append(q)
        return todo

    # expand what does not depend on other runs now, c_eq later
    queue: list[PlannedRun] = []
    deferred: list[PlannedRun] = []
    for p in planned:
        if p.arm == "c_eq":
            deferred.append(p)
        else:
            queue.extend(expand(p))
    planned_all = list(queue)
    total = len(queue) + len(deferred) * len(cfg.model.branches)
    meta["planned_runs"] = total
    log.info("ablation: %d runs (%d jobs in parallel), work dir %s", total, args.jobs, root)

    if args.report_only:  # re-render from the finished runs, train nothing
        for q in queue:
            load(q)
        for d in deferred:
            try:
                for q in expand(d):
                    load(q)
            except UsageError:  # its a / c runs are not finished
                continue
        if not done:
            raise UsageError(f"{root}: no finished run (result.json) to report")
        publish()
        print(f"report: {args.out.with_suffix('.md')} ({len(done)} of {total} runs)")
        return 0

    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # runs finished earlier first: a ready c_eq must queue before later arms start
    queue = pending(queue)
    if done:
        publish()
    t0 = time.time()
    running: dict[Any, PlannedRun] = {}
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        while queue or deferred or running:
            for p in [d for d in deferred if ready(d)]:
                deferred.remove(p)
                queue.extend(pending(expand(p)))
                queue.sort(key=priority)  # stable: a ready c_eq goes before later arms
            while queue and len(running) < args.jobs:
                q = queue.pop(0)
                log.info("start %s (%d done of %d)", q.key, len(done), total)
                fut = pool.submit(_worker, str(base) if base else None, q.overrides,
                                  str(q.run_dir), os.getpid())
                running[fut] = q
            if not running:  # cached runs were recorded before: nothing else can become ready
                if deferred:
                    raise UsageError("arm c_eq cannot run: arms a and c are not both in "
                                     "this ablation")
                break
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in finished:
                q = running.pop(fut)
                res = fut.result()  # a failed run stops the ablation; finished ones are kept
                record(q, res)
                publish()
                log.info("done %s in %.0f s: %s (%d of %d, %.0f min elapsed)", q.key,
                         res["elapsed_s"], ", ".join(f"{k} {v:.3f}" for k, v in
                                                     res["students"].items()),
                         len(done), total, (time.time() - t0) / 60)
    publish()  # also when the last runs were cached
    print(f"report: {args.out.with_suffix('.md')}")
    return 0


def render(path: Path) -> Path:
    """Re-render a published ablation report (Markdown, curves, the JSON's summary table)
    from its JSON alone: no spec file, work dir or training needed."""
    try:
        rep = json.loads(Path(path).read_text())
        meta, results = rep["meta"], rep["runs"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not an ablation report (.json with meta and runs): "
                         f"{exc!r}") from None
    shorter = meta.get("shorter_schedule")
    if shorter:  # recomputed from the shorter ablation's own report
        reference = json.loads(Path(shorter["report"]).with_suffix(".json").read_text())
        shorter["gains"] = shorter_schedule_gains(results, reference, shorter["pairs"])
    out = Path(path).with_suffix(".md")
    write_report(summarize(results, bool(meta.get("plateau_schedule"))), results, out, meta)
    return out


def _ordered(results: dict, arms: list[str]) -> dict:
    """Results in spec arm order, runs in student order, for stable reports."""
    out = {}
    for arm in arms:
        if arm in results:
            out[arm] = {s: sorted(results[arm][s], key=lambda r: sorted(r["students"])[0])
                        for s in sorted(results[arm], key=int)}
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m okdhp_edge.experiments", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    ab = sub.add_parser("ablation")
    ab.add_argument("--config", type=Path, required=True,
                    help="an ablation spec (base_config, seeds, arms, overrides) or a config")
    ab.add_argument("--seeds", type=int, nargs="*")
    ab.add_argument("--arms", nargs="*", choices=ARMS)
    ab.add_argument("--work-dir", default="runs/ablation")
    ab.add_argument("--report-only", action="store_true",
                    help="write the report from the finished runs; train nothing")
    ab.add_argument("--restore-from", type=Path, metavar="REPORT_JSON", action="append",
                    help="a published ablation report (repeatable): every run of this "
                         "ablation that it holds (same base config and overrides, any arm "
                         "name) is taken as finished instead of retrained (a lost work dir)")
    ab.add_argument("--jobs", type=int, default=1,
                    help="runs trained in parallel (each with train.threads from the spec)")
    ab.add_argument("--out", type=Path, default=Path("bench/reports/ablation_synthetic.md"))
    ab.add_argument("overrides", nargs="*")
    rd = sub.add_parser("render", help="re-render published ablation reports from their JSON")
    rd.add_argument("reports", nargs="+", type=Path, metavar="REPORT_JSON")
    args = p.parse_args(argv)
    setup_logging()
    if args.cmd == "render":
        for path in args.reports:
            print(f"report: {render(path)}")
        return 0
    return ablation(args)


def cli() -> None:
    """Console-script entry point: one-line errors and exit codes as with python -m."""
    from okdhp_edge.utils.cli import run_cli as _run

    _run(main)


if __name__ == "__main__":
    run_cli(main)
