"""Sweeps through an executor: the ablation's runs as submitit jobs (local processes here;
SLURM in tests/experiments/test_slurm.py), a killed job submitted again and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import okdhp, tiny_overrides

# imported here, not found (conftest.require): submitit gives its logger a handler on the
# sys.stderr of its import, and an import inside okdhp()'s redirected, then closed,
# stderr broke every later test of the worker ("I/O operation on closed file")
pytest.importorskip("submitit")


def _spec(tmp: Path, root: Path, epochs: int) -> Path:
    spec = tmp / "spec.yaml"
    spec.write_text(json.dumps({"seeds": [0, 1], "arms": ["a", "b"], "overrides":
                                tiny_overrides(root, tmp, f"train.epochs={epochs}")}))
    return spec


def _ablation(spec: Path, work: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "okdhp_edge.experiments", "ablation", "--config", str(spec),
            "--work-dir", str(work), "--out", str(out), *extra]


def _holding(path: Path) -> list[int]:
    """The processes with ``path`` open."""
    pids = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == str(path) for fd in fd_dir.iterdir()):
                pids.append(int(fd_dir.parent.name))
        except OSError:
            continue
    return pids


def kill_a_job_mid_run(proc: subprocess.Popen, work: Path, timeout: float) -> str:
    """Wait until run a-seed0 has a checkpoint, SIGKILL the job training it (as a lost node
    would end it), let the ablation finish; its stderr, which must say the job was
    submitted again."""
    victim = work / "a-seed0-okdhp"
    deadline = time.time() + 300
    while not (victim / "last.pt").is_file() and time.time() < deadline:
        time.sleep(0.2)
    holders = _holding(victim / "progress.log")
    assert holders, "the job of a-seed0 was not found running"
    for pid in holders:
        os.kill(pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    assert "ended without a result" in err and "submitted again" in err
    return err


def _rows(report: Path) -> dict:
    """Each run's students, AP, iterations and final losses (a resumed run's are bit for
    bit an uninterrupted one's: it restarts from the epoch checkpoint with its RNG state)."""
    runs = json.loads(report.read_text())["runs"]
    return {(arm, seed, i): (r["students"], r["iterations"], r["losses"])
            for arm, by_seed in runs.items() for seed, rs in by_seed.items()
            for i, r in enumerate(rs)}


@pytest.mark.slow  # 8 tiny trainings (4 through submitit with one killed, 4 local): ~3 min
def test_a_killed_job_is_resubmitted_resumes_and_the_report_matches_a_local_run(
        synthetic_root, tmp_path):
    spec = _spec(tmp_path, synthetic_root, epochs=4)
    work = tmp_path / "jobs-work"
    proc = subprocess.Popen(_ablation(spec, work, tmp_path / "jobs.md", "--executor",
                                      "submitit-local", "--jobs", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_a_job_mid_run(proc, work, timeout=600)
    res = json.loads(tmp_path.joinpath("jobs.json").read_text())
    tries = [r["job"]["tries"] for by_seed in res["runs"].values() for rs in by_seed.values()
             for r in rs if "job" in r]
    assert sorted(tries)[-1] == 2 and len(tries) == 4  # the killed one ran twice
    assert all(Path(r["job"]["stderr"]).parent.parent == work / "jobs"
               for by_seed in res["runs"].values() for rs in by_seed.values() for r in rs)
    # the same ablation trained here: the same rows, the killed run's included
    local = okdhp("experiments", "ablation", "--config", spec, "--work-dir",
                  tmp_path / "local-work", "--out", tmp_path / "local.md")
    assert local.returncode == 0, local.stderr
    assert _rows(tmp_path / "jobs.json") == _rows(tmp_path / "local.json")


def test_slurm_without_sbatch_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    res = okdhp("experiments", "ablation", "--config", "configs/ablation/synthetic.yaml",
                "--executor", "slurm", "--work-dir", tmp_path / "w", "--out", tmp_path / "r.md")
    assert res.returncode == 2 and "no sbatch on PATH" in res.stderr


def test_scheduler_keys_are_the_requests_and_checked():
    res = okdhp("experiments", "ablation", "--config", "configs/ablation/synthetic.yaml",
                "--executor", "cloud")
    assert res.returncode == 2 and "executor (--executor)" in res.stderr
    res = okdhp("experiments", "ablation", "--config", "configs/ablation/synthetic.yaml",
                "--executor", "slurm", "--time-min", "0")
    assert res.returncode == 2 and "time_min (--time-min)" in res.stderr


@pytest.mark.slow  # two tiny QAT fine-tunes as submitit jobs: ~1 min
def test_the_qat_ablations_arms_train_as_jobs(tiny_zoo, tmp_path):
    """``experiments qat --executor submitit-local``: each (arm, seed) a job whose zoo and
    logs the ablation gets back."""
    import yaml

    from okdhp_edge.experiments.qat import QatAblationRequest, _train_arms
    from tests.training.test_qat import QAT

    run = Path(yaml.safe_load((tiny_zoo / "zoo.yaml").read_text())["run"])
    args = QatAblationRequest.build(
        qat_from=run, zoo=tiny_zoo, seeds=(0,), work_dir=tmp_path / "w",
        overrides=tuple(o for o in QAT if o.startswith("qat.") and not o.startswith("qat.kd")),
        executor="submitit-local")
    zoos, jobs = _train_arms(args)
    assert set(zoos) == {("qat_labels", 0), ("qat_kd", 0)}
    assert all((z / "zoo.yaml").is_file() for z in zoos.values())
    assert set(jobs) == {"qat_labels-s0", "qat_kd-s0"}
    assert all(Path(j["stdout"]).is_file() for j in jobs.values())


@pytest.mark.slow  # 3 cells as submitit jobs: ~1 min
def test_the_calibration_sweeps_cells_run_as_jobs_and_match_a_local_sweep(tiny_zoo, tmp_path):
    """``bench calibration --executor submitit-local``: each cell a job, its value the one a
    local sweep measures, its job, logs and node recorded."""
    base = [sys.executable, "-m", "okdhp_edge.bench", "calibration", "--zoo", str(tiny_zoo),
            "--students", "hg2", "--backends", "onnxruntime", "--calib-images", "4,8",
            "--calib-methods", "default", "--device-name", "box"]
    runs = {}
    for name, extra in (("jobs", ["--executor", "submitit-local", "--jobs", "2"]),
                        ("here", [])):
        proc = subprocess.run([*base, "--out-root", str(tmp_path / name), "--work-dir",
                               str(tmp_path / f"{name}-work"), *extra[:2]],
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = json.loads((tmp_path / name / "box" / "tiny_calibration.json").read_text())
    jobs, here = runs["jobs"], runs["here"]
    assert set(jobs["cells"]) == set(here["cells"]) == {"hg2/onnxruntime/default/4",
                                                        "hg2/onnxruntime/default/8"}
    for key, cell in jobs["cells"].items():
        assert cell["value"] == here["cells"][key]["value"]
        assert Path(cell["job"]["stdout"]).is_file() and cell["device"]
    assert jobs["fp32"]["hg2/onnxruntime"]["value"] == here["fp32"]["hg2/onnxruntime"]["value"]


def _sleep_and_mark(path: str, seconds: float) -> str:
    time.sleep(seconds)
    Path(path).write_text("finished")
    return path


def test_leaving_the_pool_by_an_error_cancels_its_open_jobs(tmp_path):
    """The pool is a context manager: an exception inside (a refusal, Ctrl-C) cancels every
    job still without a result, so no job of a stopped sweep goes on computing; a local job
    started with SIGINT ignored (a background job of a shell script) is ended too."""
    from okdhp_edge.experiments.executors import Scheduler, SubmititPool

    sched = Scheduler(executor="submitit-local")
    mark = tmp_path / "mark"
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what the job inherits
    try:
        with pytest.raises(KeyboardInterrupt):
            with SubmititPool(sched, tmp_path / "jobs", 1) as pool:
                job = pool.submit("sleeper", _sleep_and_mark, str(mark), 4.0)
                raise KeyboardInterrupt
    finally:
        signal.signal(signal.SIGINT, before)
    # its process has ended on the way out, killed (not 4 s later, finished): the function
    # ran in it, so the mark can no longer be written
    assert job.job.done() and job.job.state == "INTERRUPTED"
    assert not mark.exists()
