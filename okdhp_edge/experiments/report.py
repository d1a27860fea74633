"""The ablation report (Markdown, JSON and learning curves) and its re-rendering from JSON."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any, Optional

import numpy as np

from okdhp_edge.evaluation.uncertainty import interval_text
from okdhp_edge.experiments.arms import _words, arm_title
from okdhp_edge.experiments.runs import _readable_command
from okdhp_edge.experiments.summary import (
    PLATEAU_EVALS,
    PLATEAU_GAIN,
    _depth,
    _stats,
    equal_iteration_gaps,
    plateau_verdict,
    shorter_schedule_gains,
    shorter_verdict,
    summarize,
)
from okdhp_edge.families import base_student_name
from okdhp_edge.utils.cli import UsageError
from okdhp_edge.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger("okdhp_edge.experiments")


def _iteration_range(its: list[int]) -> str:
    """A few iteration counts as they are; many (plateau schedules end anywhere) as a range."""
    return "/".join(map(str, its)) if len(its) <= 3 else f"{min(its)}-{max(its)}"


def _fmt(v: Optional[dict], signed: bool = False) -> str:
    if v is None:
        return "-"
    sign = "+" if signed else ""
    # over the split's images, where the runs kept them
    span = interval_text(v.get("ci95_images"), f"{sign}.3f")
    return (f"{v['mean']:{sign}.3f} ± {v['std']:.3f}{span}" if v["n"] > 1
            else f"{v['mean']:{sign}.3f}{span} (n=1)")


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
        out.append(f"- {what}: " + "; ".join(_finding(s, d) for s, d in p.items()) + ".")
    return out


def _finding(student: str, d: dict[str, Any]) -> str:
    """One student's paired difference: against the seed noise (|mean| > 2 standard errors
    over seeds) and, where the runs kept per-image results, the interval over images of
    the seed-mean difference (a claim stands only where both support it)."""
    ci = d.get("ci95_images")
    span = interval_text(ci, "+.3f") + " over images" if ci else ""
    images_say = None if not ci else not (ci[0] <= 0 <= ci[1])
    if d["n"] < 2:
        if images_say is None:
            return f"{student} {d['mean']:+.3f} AP (one seed: no noise estimate)"
        word = "outside" if images_say else "within"
        return (f"{student} {d['mean']:+.3f} AP{span} (one seed: {word} the image sample's "
                f"noise, no seed noise estimate)")
    se = d["std"] / np.sqrt(d["n"])
    seeds_say = abs(d["mean"]) > 2 * se
    if not seeds_say:
        verdict = "within the seed noise"
    elif images_say is False:
        verdict = "above the seed noise, within the image sample's"
    else:
        verdict = "above the seed noise" + (" and the image sample's" if images_say else "")
    return f"{student} {d['mean']:+.3f} ± {d['std']:.3f} AP{span} ({verdict}, n={d['n']})"


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
    plateau = bool(meta.get("plateau_schedule"))
    students = sorted({s for a in table.values() for s in a["students"]}, key=_depth)
    lines = (_intro_lines(results, meta) + _table_lines(table, results, meta, students)
             + _paired_lines(table, results, students, plateau) + _margin_lines(results)
             + _loss_lines(results, meta) + _command_lines(results, meta, out))
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    _curves(results, out.with_name(out.stem + "_curves.png"), plateau)


def _intro_lines(results: dict, meta: dict) -> list[str]:
    """Title, note, what is measured, the schedule, progress."""
    lines: list[str] = []
    sched = meta.get("plateau_schedule")
    lines += [f"# Ablation on synthetic data ({meta['config']})", ""]
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
    return lines


def _table_lines(table: dict, results: dict, meta: dict, students: list[str]) -> list[str]:
    """The arms x students table, the plateau test and the shorter-schedule verdict."""
    lines: list[str] = []
    plateau = bool(meta.get("plateau_schedule"))
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
    return lines


def _paired_lines(table: dict, results: dict, students: list[str], plateau: bool) -> list[str]:
    """Differences paired by seed (against c, c_eq, and at equal iterations) and findings."""
    lines: list[str] = []
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
        seeds = max(row["seeds"] for row in table.values())
        lines += ["## What the numbers say", "", *f,
                  "", "(\"above the seed noise\": |mean| > 2 standard errors of the paired "
                  f"differences; with {seeds} seed{'s' * (seeds != 1)} this is a weak test, "
                  "read it as such.)", ""]
    return lines


def _margin_lines(results: dict) -> list[str]:
    """What the ensemble teacher knows beyond each student."""
    lines: list[str] = []
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
    return lines


def _loss_lines(results: dict, meta: dict) -> list[str]:
    """The loss terms of the last epoch, and the MAC ratios."""
    lines: list[str] = []
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
    return lines


def _command_lines(results: dict, meta: dict, out: Path) -> list[str]:
    """The commands of the ablation and of each run; the curves."""
    lines: list[str] = []
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
    return lines


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

    students = sorted({base_student_name(s) for seeds in results.values() for runs in seeds.values()
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
                    keys = [k for k in r["students"] if base_student_name(k) == stud]
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


def render(path: Path) -> Path:
    """Re-render a published ablation report (Markdown, curves, the JSON's summary table)
    from its JSON alone: no spec file, work dir or training needed."""
    try:
        rep = json.loads(Path(path).read_text())
        meta, results = rep["meta"], rep["runs"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not an ablation report (.json with meta and runs): "
                         f"{exc!r}") from None
    if not (isinstance(meta, dict) and isinstance(results, dict) and all(
            isinstance(seeds, dict) and all(isinstance(runs, list) and all(
                isinstance(r, dict) for r in runs) for runs in seeds.values())
            for seeds in results.values())):
        raise UsageError(f"{path}: not an ablation report: 'meta' must be a mapping and "
                         "'runs' a mapping of arm -> seed -> list of runs")
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
