"""Summaries of finished runs: per seed and arm, paired differences, and the plateau and
shorter-schedule verdicts (decided on the selection split)."""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

from okdhp_edge.experiments.arms import _words, arm_title
from okdhp_edge.families import base_student_name

log = logging.getLogger("okdhp_edge.experiments")


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
                    vals.setdefault(base_student_name(s), []).append(v)
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
                        vals.setdefault(base_student_name(s), []).append(v)
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
                    key = base_student_name(st)
                    plain = [p for p in results.get(ref, {}).get(seed, [])
                             if key in map(base_student_name, p["students"])]
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


def _with_intervals(stats: dict[str, dict[str, Any]], cis: dict[str, list[float]]
                    ) -> dict[str, dict[str, Any]]:
    """Each student's paired stats with its interval over images (``ci95_images``)."""
    return {s: ({**d, "ci95_images": cis[s]} if s in cis else d) for s, d in stats.items()}


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


def _units_of(runs: list[dict], student: str, split: str) -> list[Any]:
    """The decoded per-image results of ``student`` (base name) in a seed's runs."""
    from okdhp_edge.evaluation.uncertainty import UnitResults

    return [UnitResults.decode(text) for r in runs
            for s, text in r.get("units", {}).get(split, {}).items()
            if base_student_name(s) == student]


def image_intervals(results: dict[str, dict[str, list[dict]]], arm: str, ref: str,
                    split: str = "report", n_resamples: int = 1000
                    ) -> dict[str, list[float]]:
    """student -> the paired bootstrap interval, over the split's images, of the seed-mean
    difference ``arm - ref`` (every seed's figures recomputed on the same resampled
    images); only students whose runs kept their per-image results on both sides."""
    from okdhp_edge.evaluation.uncertainty import paired_mean_interval

    students = {base_student_name(s) for runs in results.get(arm, {}).values()
                for r in runs for s in r.get("units", {}).get(split, {})}
    out = {}
    for st in sorted(students):
        groups = [(_units_of(runs, st, split), _units_of(results[ref].get(seed, []), st, split))
                  for seed, runs in results[arm].items()]
        groups = [g for g in groups if g[0] and g[1]]
        if not groups:
            continue
        try:
            ci = paired_mean_interval(groups, n_resamples)
        except ValueError as exc:  # different splits: no interval, said once
            log.info("%s - %s, %s: %s", arm, ref, st, exc)
            continue
        out[st] = [ci.low, ci.high]
    return out


def arm_intervals(results: dict[str, dict[str, list[dict]]], arm: str,
                  split: str = "report", n_resamples: int = 1000) -> dict[str, list[float]]:
    """student -> the bootstrap interval, over the split's images, of the arm's seed-mean
    figure (only students whose runs kept their per-image results)."""
    from okdhp_edge.evaluation.uncertainty import mean_interval

    students = {base_student_name(s) for runs in results.get(arm, {}).values()
                for r in runs for s in r.get("units", {}).get(split, {})}
    out = {}
    for st in sorted(students):
        groups = [g for g in (_units_of(runs, st, split) for runs in results[arm].values()) if g]
        try:
            ci = mean_interval(groups, n_resamples)
        except ValueError as exc:
            log.info("%s, %s: %s", arm, st, exc)
            continue
        out[st] = [ci.low, ci.high]
    return out


def _iterations(runs_by_seed: dict[str, list[dict]]) -> dict[str, list[int]]:
    """student -> the iteration counts of its runs (over seeds)."""
    out: dict[str, set[int]] = {}
    for runs in runs_by_seed.values():
        for r in runs:
            for s in r["students"]:
                out.setdefault(base_student_name(s), set()).add(r["iterations"])
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
                    per_student.setdefault(base_student_name(s), []).append(v)
                    g = plateau_gain(r["curves"], s)
                    if g is not None:
                        gains.append(g)
            cost.append(wall)
        table[arm] = {
            "title": arm_title(arm, plateau),
            "students": _with_intervals(_stats(per_student), arm_intervals(results, arm)),
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
            table[arm]["paired"][ref] = _with_intervals(
                _stats(diffs), image_intervals(results, arm, ref, "report"))
    for arm, ref in PLATEAU_TESTS:  # the plateau test's verdict reads selection AP only
        if arm in select and ref in select:
            table[arm]["paired_select"] = {ref: _with_intervals(
                _stats(_paired(select[arm], select[ref])),
                image_intervals(results, arm, ref, "select"))}
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


def _ci_text(d: dict[str, Any]) -> str:
    from okdhp_edge.evaluation.uncertainty import interval_text

    return interval_text(d.get("ci95_images"), "+.3f")


def _threshold_verdict(rows: list[dict[str, Any]], threshold: float) -> tuple[str, bool]:
    """Whether longer training still gains: every gain's interval over images (its point,
    where the runs kept no per-image results) below ``threshold`` is a plateau, any one
    wholly above it is not, anything else is undecided. (sentence, at a plateau)"""
    spans = [d.get("ci95_images") or [d["mean"], d["mean"]] for d in rows]
    kept = [bool(d.get("ci95_images")) for d in rows]
    how = ("intervals over images" if all(kept) else
           "points: some runs kept no per-image results" if any(kept) else
           "points: these runs kept no per-image results")
    top = max(hi for _, hi in spans)
    if top < threshold:
        return f"At most {top:+.3f} ({how}; threshold {threshold}): at a plateau.", True
    if any(lo >= threshold for lo, _ in spans):
        return f"Threshold {threshold} ({how}): not at a plateau.", False
    return (f"Undecided: an interval over images reaches the threshold {threshold} "
            f"(up to {top:+.3f}) without lying above it.", False)


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
    rows = list(longer.values())
    gains = ", ".join(f"{s} {d['mean']:+.3f}{_ci_text(d)}" for s, d in longer.items())
    okdhp = table.get("a_2x", {}).get("paired_select", {}).get("a")
    also = ""
    if okdhp:
        rows += list(okdhp.values())
        also = (f" OKDHP given {_words(plateau)['a_2x_how']} (a_2x) gains "
                + ", ".join(f"{s} {d['mean']:+.3f}{_ci_text(d)}" for s, d in okdhp.items())
                + " over a.")
    verdict, at_plateau = _threshold_verdict(rows, PLATEAU_LONGER_GAIN)
    still = "" if at_plateau else " still"
    return end + (f"Decided on the selection split (best selection AP, paired by seed; the "
                  f"report split decides nothing): the plain students "
                  f"{_words(plateau)['longer']} (c_eq){still} gain {gains} over c.{also} "
                  f"{verdict}")


def _depth(name: str) -> int:
    """A student's size rank within its family: stacks (hg4) or decoder width (mbv2-d64)."""
    import re

    key = base_student_name(name)
    m = re.fullmatch(r"hg(\d+)", key) or re.search(r"-d(\d+)$", key)
    return int(m.group(1)) if m else 0
