"""A tiny ablation on a real single-node SLURM (tests/experiments/slurm_cluster.py): every
run a job, one job killed mid-run, resubmitted and resumed, the report as a local run's."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import okdhp
from tests.experiments.slurm_cluster import single_node_slurm
from tests.experiments.test_executors import _ablation, _rows, _spec, kill_a_job_mid_run

# imported here, not found (conftest.require): submitit gives its logger a handler on the
# sys.stderr of its import, and an import inside okdhp()'s redirected, then closed,
# stderr broke every later test of the worker ("I/O operation on closed file")
pytest.importorskip("submitit")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    yield from single_node_slurm(tmp_path_factory.mktemp("slurm"))


@pytest.mark.slow  # 8 tiny trainings, 4 of them as SLURM jobs with one killed: ~3 min
def test_a_tiny_ablation_on_slurm_survives_a_killed_job(slurm, synthetic_root, tmp_path):
    spec = _spec(tmp_path, synthetic_root, epochs=4)
    work = tmp_path / "slurm-work"
    proc = subprocess.Popen([*slurm.enter, *_ablation(spec, work, tmp_path / "slurm.md",
                                                      "--executor", "slurm",
                                                      "--time-min", "30")],
                            env=slurm.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    kill_a_job_mid_run(proc, work, timeout=900)
    res = json.loads((tmp_path / "slurm.json").read_text())
    jobs = [r["job"] for by_seed in res["runs"].values() for rs in by_seed.values()
            for r in rs]
    assert len(jobs) == 4 and max(j["tries"] for j in jobs) == 2
    assert all(os.path.isfile(j["stdout"]) for j in jobs)  # the logs the report names
    local = okdhp("experiments", "ablation", "--config", spec, "--work-dir",
                  tmp_path / "local-work", "--out", tmp_path / "local.md")
    assert local.returncode == 0, local.stderr
    assert _rows(tmp_path / "slurm.json") == _rows(tmp_path / "local.json")
