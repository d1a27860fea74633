"""The ablation runner (okdhp_edge.experiments): arms, runs, restoring, summaries, reports."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from okdhp_edge.config import load_config
from tests.conftest import ROOT, tiny_overrides

CONFIG_DIR = ROOT / "configs"




@pytest.mark.parametrize("name", [p.name for p in (CONFIG_DIR / "ablation").glob("*.yaml")])
def test_ablation_spec_is_valid(name):
    from okdhp_edge.experiments import ARMS, arm_runs, canonical_arm

    spec = yaml.safe_load((CONFIG_DIR / "ablation" / name).read_text())
    assert {canonical_arm(a) for a in spec["arms"]} <= set(ARMS) and len(spec["seeds"]) >= 2
    base = CONFIG_DIR.parent / spec["base_config"]
    cfg = load_config(base, spec["overrides"])
    extra = {"kl_temperature": spec["kl_temperature"],
             "lambda_kd_strong": spec.get("lambda_kd_strong", 200.0),
             "wall_ratio": {"hg2": 2.0, "hg3": 1.8, "hg4": 1.6, "mbv2x0.5-d16": 2.0,
                            "mbv2x0.5-d32": 1.9, "mbv2x0.5-d64": 1.7}, "okdhp_wall_s": 900.0}
    for arm in ARMS:  # every arm's overrides are valid keys and values
        for _, overrides in arm_runs(arm, cfg, extra):
            load_config(base, spec["overrides"] + overrides)


@pytest.mark.parametrize("content, needle", [(None, "no such report"),
                                              ("{}", "not an ablation report"),
                                              ('{"runs": []}', "not an ablation report"),
                                              ('{"runs": {"a": {"0": [{}]}}}', "not an abl")])
def test_restore_from_needs_an_ablation_report(tmp_path, content, needle):
    from okdhp_edge.experiments import main
    from okdhp_edge.utils.cli import UsageError

    report = tmp_path / "report.json"
    if content is not None:
        report.write_text(content)
    with pytest.raises(UsageError, match=needle):
        main(["ablation", "--config", str(CONFIG_DIR / "ablation" / "synthetic.yaml"),
              "--report-only", "--work-dir", str(tmp_path / "w"), "--restore-from", str(report)])


def test_restore_from_matches_the_run_not_the_arm_name(tmp_path):
    """The patience-4 report's a_2x (patience 8, epoch cap 600) is the patience-8 spec's a."""
    from okdhp_edge.experiments import main

    root = ROOT
    report = root / "bench" / "reports" / "ablation_synthetic_p4.json"
    published = json.loads(report.read_text())["runs"]["a_2x"]["0"][0]
    work = tmp_path / "w"
    assert main(["ablation", "--config", str(CONFIG_DIR / "ablation" / "synthetic.yaml"),
                 "--report-only", "--arms", "a", "c", "--seeds", "0", "--work-dir", str(work),
                 "--out", str(tmp_path / "r.md"), "--restore-from", str(report),
                 "--restore-from", str(report.with_name("ablation_synthetic_p2.json"))]) == 0
    got = json.loads((work / "a-seed0-okdhp" / "result.json").read_text())
    assert got["students"] == published["students"] and got["restored_arm"] == "a_2x"
    assert got["restored_overrides"] == published["overrides"] != got["overrides"]
    assert not (work / "c-seed0-hg2").exists()  # patience 4 is not patience 8: not restored


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_killed_runner_leaves_no_run_training(synthetic_root, tmp_path):
    """SIGTERM to the ablation runner: its worker checkpoints and exits instead of training
    on, orphaned, with nobody to record the result."""
    import signal
    import time

    from tests.conftest import tiny_overrides

    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"seeds": [0], "arms": ["a"], "overrides": tiny_overrides(
        synthetic_root, tmp_path, "train.epochs=500")}))
    runner = subprocess.Popen([sys.executable, "-m", "okdhp_edge.experiments", "ablation",
                               "--config", str(spec), "--work-dir", str(tmp_path / "w"),
                               "--out", str(tmp_path / "r.md")], stderr=subprocess.DEVNULL)
    log = tmp_path / "w" / "a-seed0-okdhp" / "train.log"

    def children() -> list[int]:
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == runner.pid:
                out.append(int(stat.parent.name))
        return out

    deadline = time.time() + 120
    while not (log.is_file() and "epoch 1/500" in log.read_text()) and time.time() < deadline:
        time.sleep(0.5)
    workers = [p for p in children() if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
    assert workers, "the run did not start"
    runner.send_signal(signal.SIGTERM)
    runner.wait(timeout=30)
    deadline = time.time() + 60
    while any(Path(f"/proc/{p}").exists() for p in workers) and time.time() < deadline:
        time.sleep(0.5)
    alive = [p for p in workers if Path(f"/proc/{p}").exists()]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    assert not alive, "a worker kept training after its runner was killed"
    assert (log.parent / "last.pt").is_file() and "runner (pid" in log.read_text()


def test_c_eq_waits_for_every_plain_student():
    """A report of a running ablation (c's hg4 not finished) must not crash on c_eq."""
    from okdhp_edge.experiments import arm_runs
    from okdhp_edge.utils.cli import UsageError

    cfg = load_config(CONFIG_DIR / "quickstart.yaml")
    with pytest.raises(UsageError, match="c's hg4 finished first"):
        arm_runs("c_eq", cfg, {"wall_ratio": {"hg2": 2.0, "hg3": 1.6}})
    runs = arm_runs("c_eq", cfg, {"wall_ratio": {"hg2": 2.0, "hg3": 1.6, "hg4": 1.4}})
    assert [label for label, _ in runs] == ["hg2", "hg3", "hg4"]


def test_c_eq_under_a_plateau_schedule_trains_at_least_okdhp_wall_time():
    from okdhp_edge.experiments import arm_runs

    cfg = load_config(CONFIG_DIR / "quickstart.yaml", ["train.lr_steps=[]",
                                                       "train.plateau_patience=3"])
    extra = {"wall_ratio": {"hg2": 2.0, "hg3": 1.6, "hg4": 1.4}, "okdhp_wall_s": 812.4}
    for _, ov in arm_runs("c_eq", cfg, extra):
        assert "train.min_wall_s=812" in ov and "train.lr_steps=[]" in ov
        assert "train.plateau_patience=6" in ov
        load_config(CONFIG_DIR / "quickstart.yaml", ["train.plateau_patience=3", *ov])
    assert all("min_wall_s" not in o for _, ov in arm_runs("c", cfg, extra) for o in ov)
    ((_, longer),) = arm_runs("a_2x", cfg, extra)
    assert "train.plateau_patience=6" in longer and not any("lr_steps" in o for o in longer)


def test_shorter_schedule_gains_pair_seeds_across_ablations():
    from okdhp_edge.experiments import shorter_schedule_gains, shorter_verdict

    def run(selection, iterations):
        """Best selection AP as given; report AP 0.1 everywhere (it must decide nothing)."""
        return {"students": {k: 0.1 for k in selection}, "iterations": iterations,
                "curves": [{"iteration": iterations, **selection}]}

    reference = {"runs": {"a_2x": {"0": [run({"hg2": 0.60, "hg4": 0.70}, 200)]},
                          "c_eq": {"0": [run({"hg2": 0.55}, 300), run({"hg4": 0.66}, 250)]}},
                 "table": {"a_2x": {"iterations": [200]}, "c_eq": {"iterations": [250, 300]}}}
    results = {"a": {"0": [run({"hg2": 0.61, "hg4": 0.705}, 400)],
                     "1": [run({"hg2": 0.9, "hg4": 0.9}, 400)]},  # no seed 1 there: unpaired
               "c": {"0": [run({"hg2": 0.58}, 400), run({"hg4": 0.69}, 400)]}}
    gains = shorter_schedule_gains(results, reference, {"a": "a_2x", "c": "c_eq"})
    assert gains["a"]["students"]["hg2"]["values"] == pytest.approx([0.01])
    assert gains["a"]["students"]["hg4"]["n"] == 1
    assert gains["c"]["students"]["hg2"]["mean"] == pytest.approx(0.03)
    hg4 = gains["c"]["students"]["hg4"]
    assert hg4["ref_iterations"] == [250] and hg4["iterations"] == [400]
    text = shorter_verdict(gains, "ref.json")
    assert ("c minus c_eq: hg2 +0.030 (400 vs 300 iterations), hg4 +0.030 (400 vs 250 "
            "iterations)") in text
    assert text.endswith("the shorter schedule was not at a plateau.")
    flat = shorter_schedule_gains({"a": results["a"]}, reference, {"a": "a_2x"})
    assert shorter_verdict(flat, "ref.json").endswith("already at a plateau.")
    assert "yet" in shorter_verdict({}, "ref.json")


def test_ablation_summary_pairs_seeds_and_checks_plateau():
    from okdhp_edge.experiments import findings, plateau_gain, plateau_verdict, summarize

    def run(students, curve):
        return {"students": students, "wall_s": 10.0, "iterations": 100,
                "curves": [{"iteration": i, "wall_s": i, **{k: v for k in students}}
                           for i, v in enumerate(curve)]}

    flat = [0.1, 0.5, 0.6, 0.61, 0.612, 0.613]
    results = {
        "a": {"0": [run({"hg2": 0.60, "hg4": 0.70}, flat)],
              "1": [run({"hg2": 0.62, "hg4": 0.71}, flat)]},
        "c": {"0": [run({"hg2": 0.58}, flat), run({"hg4": 0.69}, flat)],
              "1": [run({"hg2": 0.61}, flat), run({"hg4": 0.71}, flat)]},
    }
    table = summarize(results)
    assert table["a"]["students"]["hg2"]["mean"] == pytest.approx(0.61)
    assert table["a"]["students"]["hg2"]["std"] == pytest.approx(np.std([0.6, 0.62], ddof=1))
    paired = table["a"]["paired"]["c"]
    assert paired["hg2"]["values"] == pytest.approx([0.02, 0.01])
    assert paired["hg4"]["values"] == pytest.approx([0.01, 0.0])
    assert table["c"]["train_wall_s_mean"] == 20.0  # both plain runs of a seed
    assert plateau_gain([{"x": v} for v in flat], "x") == pytest.approx(0.013)
    assert table["a"]["plateau_gain_max"] == pytest.approx(0.013)
    text = "\n".join(findings(table))
    assert "hg2 +0.015" in text and "equal iterations" in text
    with_d = summarize({**results, "d": {"0": [run({"hg2": 0.55, "hg4": 0.72}, flat)]}})
    assert "hg2 -0.050 AP (one seed" in "\n".join(findings(with_d))  # d vs a, same seed
    assert "a (+0.013)" in plateau_verdict(table)  # 0.013 >= 0.01: still rising
    assert "has not run" in plateau_verdict(table)
    table["a"]["plateau_gain_max"] = table["c"]["plateau_gain_max"] = 0.004
    assert plateau_verdict(table).startswith("Every run of every arm flattened")
    assert "has not run" in plateau_verdict(table)
    def verdict_with_longer(gain: float, report_ap: float) -> str:
        """c_eq seed 0's hg4 curve ``gain`` above c's in selection AP, at ``report_ap``."""
        longer = {"0": [run({"hg2": 0.59}, flat),
                        run({"hg4": report_ap}, [v + gain for v in flat])]}
        table = summarize({**results, "c_eq": longer})
        for row in table.values():
            row["plateau_gain_max"] = 0.004
        return plateau_verdict(table)

    # the verdict reads the selection split alone: the report AP may say anything
    for report_ap in (0.50, 0.69, 0.90):
        assert "At most +0.010" in verdict_with_longer(0.01, report_ap)  # a plateau
        assert verdict_with_longer(0.05, report_ap).endswith("not at a plateau.")
    assert "Decided on the selection split" in verdict_with_longer(0.01, 0.5)
    longer = {"0": [run({"hg2": 0.59}, flat), run({"hg4": 0.70}, flat)]}
    doubled = {"0": [run({"hg2": 0.20, "hg4": 0.20}, [v + 0.03 for v in flat])]}
    table = summarize({**results, "c_eq": longer, "a_2x": doubled})
    assert "(a_2x) gains hg2 +0.030, hg4 +0.030 over a" in plateau_verdict(table)
    assert plateau_verdict(table).endswith("not at a plateau.")


def test_ablation_report_under_a_plateau_schedule(tmp_path):
    from okdhp_edge.experiments import summarize, write_report

    def run(students, finished, its):
        return {"students": students, "wall_s": 10.0, "iterations": its, "finished": finished,
                "overrides": [], "command": "python -m okdhp_edge.train",
                "curves": [{"iteration": i, "wall_s": i, **students} for i in range(5)]}

    stop = "plateau after 2 LR drops: ..."
    results = {
        "a": {str(s): [run({"hg2": 0.60, "hg4": 0.70}, stop, 900 + s)] for s in range(3)},
        "c": {str(s): [run({"hg2": 0.58}, stop, 800 + s), run({"hg4": 0.69}, "", 3900)]
              for s in range(3)},
    }
    meta = {"config": "spec.yaml", "argv_display": ["python"], "seeds": [0],
            "plateau_schedule": {"patience": 2, "window": 3, "min_delta": 0.003, "drops": 2,
                                 "lr_factor": 0.1, "val_every": 5, "epochs": 300}}
    write_report(summarize(results, plateau=True), results, tmp_path / "r.md", meta)
    text = (tmp_path / "r.md").read_text()
    assert "gains 0.003 in 2 evaluations in a row, the LR drops x0.1" in text
    assert "plain, alone (each to its own plateau)" in text
    assert "OKDHP (a) vs each student alone trained to its own plateau (c)" in text
    assert "6 of 9 runs ended at its stop" in text and "epoch cap first (arms c)" in text
    assert "| 800-3900 |" in text  # six distinct counts of arm c as a range
    assert "## At equal iterations, from the learning curves" in text
    results["c"]["2"].pop()  # mid-ablation: c's hg4 has two seeds where hg2 has three
    write_report(summarize(results, plateau=True), results, tmp_path / "r.md", meta)
    text = (tmp_path / "r.md").read_text()
    row = next(x for x in text.splitlines() if x.startswith("| c |"))
    assert "| 3 | 0.580 ± 0.000 | 0.690 ± 0.000 (n=2) |" in row
    # a plain run alone in its seed is still named
    assert "- c seed 2 (hg2): `" in text and "- a seed 2: `" in text
    assert "Arm b" not in text  # b did not run: no note on how its students are pooled
    # every comparison of a multi-branch arm with a plain one carries the stopping-rule note
    assert "OKDHP (a) vs each student alone trained to its own plateau (c) †" in text
    assert text.count("Unequal stopping rule") == 1


def test_render_rebuilds_a_published_report_from_its_json(tmp_path):
    import shutil

    from okdhp_edge.experiments import render

    src = CONFIG_DIR.parent / "bench" / "reports" / "ablation_synthetic_p4.json"
    copy = tmp_path / src.name
    shutil.copyfile(src, copy)
    out = render(copy)
    assert out.read_text() == src.with_suffix(".md").read_text()
    assert copy.read_text() == src.read_text()
    assert (tmp_path / "ablation_synthetic_p4_curves.png").stat().st_size > 1000


@pytest.mark.parametrize("runs", [[1, 2], {"a": [1]}, {"a": {"0": ["x"]}}])
def test_render_refuses_a_malformed_report_in_one_line(tmp_path, runs):
    import json

    from okdhp_edge.errors import UsageError
    from okdhp_edge.experiments import render

    bad = tmp_path / "r.json"
    bad.write_text(json.dumps({"meta": {}, "runs": runs}))
    with pytest.raises(UsageError, match="not an ablation report"):
        render(bad)


def test_equal_iteration_gaps_compare_best_up_to_the_shorter_run():
    from okdhp_edge.experiments import equal_iteration_gaps

    def run(key, its, curve):
        return {"students": {key: 0.0}, "iterations": its,
                "curves": [{"iteration": i, key: v} for i, v in curve]}

    results = {  # a ends at 300, plain hg2 at 200: both read up to iteration 200
        "a": {"0": [{"students": {"hg2": 0.0}, "iterations": 300,
                     "curves": [{"iteration": 100, "hg2": 0.4}, {"iteration": 200, "hg2": 0.5},
                                {"iteration": 300, "hg2": 0.9}]}]},
        "c": {"0": [run("hg2", 200, [(100, 0.45), (200, 0.42)])]},
    }
    gaps = equal_iteration_gaps(results)
    assert list(gaps) == ["a"] and gaps["a"]["hg2"]["values"] == pytest.approx([0.05])


def test_ablation_report_commands_give_each_override_once():
    from okdhp_edge.experiments import _readable_command

    cmd = ("python -m okdhp_edge.train --config configs/quickstart.yaml train.epochs=42 "
           "'train.lr_steps=[34,39]' model.name=hg train.epochs=80 'train.lr_steps=[65, 74]' "
           "train.seed=0")
    assert _readable_command(cmd) == (
        "python -m okdhp_edge.train --config configs/quickstart.yaml train.epochs=80 "
        "'train.lr_steps=[65, 74]' model.name=hg train.seed=0")


def test_ablation_refuses_a_run_of_another_spec_in_its_work_dir(synthetic_root, tmp_path):
    from okdhp_edge.config import save_config
    from okdhp_edge.experiments import run_one
    from okdhp_edge.utils.cli import UsageError

    ov = tiny_overrides(synthetic_root, tmp_path)
    run = tmp_path / "a-seed0-okdhp"
    run.mkdir()
    other = ov + ["train.epochs=5", f"zoo.root={run}/zoo", f"zoo.name={run.name}"]
    save_config(load_config(overrides=other), run / "config.yaml")
    (run / "last.pt").write_bytes(b"")  # a checkpoint it would have resumed from
    with pytest.raises(UsageError, match="train.epochs=5, but this ablation plans 2"):
        run_one(None, ov, run)


def test_light_students_keep_their_own_columns():
    """Student keys strip only the branch suffix of balanced arms: light students of one
    encoder (mbv2-d16, mbv2-d64) stay apart, ordered by decoder width."""
    from okdhp_edge.experiments.summary import _depth
    from okdhp_edge.families import base_student_name, zoo_student_names

    assert base_student_name("hg4-b1") == "hg4" and base_student_name("hg4") == "hg4"
    assert base_student_name("mbv2x0.5-d16") == "mbv2x0.5-d16"
    assert base_student_name("mbv2-d64-b2") == "mbv2-d64"
    # the names the trainer and the plan give branches, and back
    zoo = zoo_student_names(["hg4", "hg4", "hg2"])
    assert zoo == ["hg4-b0", "hg4-b1", "hg2"]
    assert [base_student_name(n) for n in zoo] == ["hg4", "hg4", "hg2"]
    names = ["mbv2x0.5-d64", "mbv2x0.5-d16", "mbv2x0.5-d32"]
    assert sorted(names, key=_depth) == ["mbv2x0.5-d16", "mbv2x0.5-d32", "mbv2x0.5-d64"]
    assert sorted(["hg8", "hg2", "hg4"], key=_depth) == ["hg2", "hg4", "hg8"]


def test_ablation_differences_carry_intervals_over_images():
    """Runs that kept their per-image (here per-person) results give each paired difference
    an interval over the same resampled units; a verdict stands only where it excludes 0."""
    from okdhp_edge.evaluation.uncertainty import pckh_units
    from okdhp_edge.experiments import findings, summarize

    rng = np.random.default_rng(0)
    vis = np.ones((300, 4), bool)
    base = rng.uniform(size=(300, 4))

    def units(p_hit: float, shuffled: bool) -> str:
        hits = base < p_hit
        if shuffled:  # the same figure, other persons hit: a tie, not a dominated copy
            hits = hits[np.random.default_rng(1).permutation(300)]
        return pckh_units(hits, vis, np.ones(4, bool), np.arange(300)).encode()

    def run(student, p_hit, shuffled=False):
        return {"students": {student: 100 * p_hit}, "wall_s": 1.0, "iterations": 10,
                "curves": [], "units": {"report": {student: units(p_hit, shuffled)},
                                        "select": {}}}

    results = {"a": {"0": [run("hg2", 0.70)], "1": [run("hg2", 0.71)]},
               "c": {"0": [run("hg2", 0.60)], "1": [run("hg2", 0.61)]},
               "e": {"0": [run("hg2", 0.698, True)], "1": [run("hg2", 0.708, True)]}}
    table = summarize(results)
    lo, hi = table["a"]["paired"]["c"]["hg2"]["ci95_images"]
    assert 0 < lo < 100 * 0.10 < hi  # a - c: +10 points, an interval above 0
    lo, hi = table["a"]["paired"]["e"]["hg2"]["ci95_images"]
    assert lo <= 0 <= hi  # a - e: the same hits but for a hair
    lo, hi = table["a"]["students"]["hg2"]["ci95_images"]  # the arm's own seed-mean figure
    assert lo < 100 * 0.705 < hi
    text = "\n".join(findings(table))
    assert "hg2 +10.000 ± 0.000 AP [" in text and "and the image sample's" in text
    # about +0.2 points on both seeds: above the seed noise, not the image sample's
    assert "above the seed noise, within the image sample's" in text
