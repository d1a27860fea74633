import json
import shutil
import subprocess
import sys

import cv2
import pytest

from okdhp_edge.manifest import zoo_students
from tests.conftest import ROOT, okdhp, tiny_overrides


def test_visualize_torch_and_onnx(tiny_zoo, synthetic_root, tmp_path):
    d, _ = zoo_students(tiny_zoo)[-1]
    img = next((synthetic_root / "images" / "val").iterdir())
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.png"
        proc = okdhp("visualize", "--student", d / "student.yaml", "--image", img, "--box", "10",
                     "10", "100", "100", "--backend", backend, "--out", out)
        assert proc.returncode == 0, proc.stderr
        assert cv2.imread(str(out)).shape[:2] == cv2.imread(str(img)).shape[:2]


def test_visualize_bad_box(tiny_zoo, synthetic_root, tmp_path):
    d, _ = zoo_students(tiny_zoo)[-1]
    img = next((synthetic_root / "images" / "val").iterdir())
    proc = okdhp("visualize", "--student", d / "student.yaml", "--image", img, "--box", "0", "0",
                 "0", "5", "--out", tmp_path / "x.png")
    assert proc.returncode == 2 and "positive width" in proc.stderr


# (arms, the two runs whose results are lost, the arm a subset keeps): the arms of the
# report's comparisons are slow (6 trainings, then 2; c_eq needs a and c); the default run's
# two arms (3 trainings, then 2) go through every step of the runner
@pytest.mark.parametrize("arms, lost, subset", [
    (["c", "e"], ("c-seed0-hg3", "e-seed0-okdhp"), "e"),
    pytest.param(["a", "c", "c_eq", "e"], ("c_eq-seed0-hg2", "e-seed0-okdhp"), "e",
                 marks=pytest.mark.slow)])
def test_ablation_runner_is_resumable(synthetic_root, tmp_path, arms, lost, subset):
    out = tmp_path / "abl.md"
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"seeds": [0], "arms": arms,
                                "overrides": tiny_overrides(synthetic_root, tmp_path,
                                                            "train.epochs=1")}))
    cmd = ["experiments", "ablation", "--config", str(spec),
           "--work-dir", str(tmp_path / "work"), "--out", str(out), "--jobs", "2"]
    proc = okdhp(*cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(out.with_suffix(".json").read_text())
    assert set(rep["table"]) == set(arms)
    assert set(rep["table"]["c"]["students"]) == {"hg2", "hg3"}
    if "c_eq" in arms:  # each student alone for OKDHP's wall time: at least c's iterations
        eq = rep["runs"]["c_eq"]["0"]
        assert all(r["iterations"] >= rep["runs"]["c"]["0"][0]["iterations"] for r in eq)
    assert "okdhp_edge.train" in out.read_text()
    runs = sum(len(rep["runs"][a]["0"]) for a in arms)
    proc = okdhp(*cmd)  # all cached
    assert proc.returncode == 0 and proc.stderr.count("finished earlier") == runs, proc.stderr
    for run in lost:  # resumed in queue order (a ready c_eq before a later arm)
        (tmp_path / "work" / run / "result.json").unlink()
    proc = okdhp(*cmd[:-1], "1")
    started = [x.split("start ")[1].split()[0] for x in proc.stderr.splitlines() if " start " in x]
    assert proc.returncode == 0 and started == list(lost), proc.stderr
    table = json.loads(out.with_suffix(".json").read_text())["table"]
    shutil.rmtree(tmp_path / "work")  # the work dir lost: its report brings the runs back
    proc = okdhp(*cmd, "--restore-from", out.with_suffix(".json"))
    assert proc.returncode == 0 and proc.stderr.count("restored from") == runs, proc.stderr
    assert " start " not in proc.stderr
    assert json.loads(out.with_suffix(".json").read_text())["table"] == table
    proc = okdhp(*cmd, "--arms", subset)
    assert proc.returncode == 0, proc.stderr[-3000:]  # a subset keeps the others in the report
    assert json.loads(out.with_suffix(".json").read_text())["table"] == table


def test_quickstart_glue_on_tiny_settings(synthetic_root, tmp_path):
    """The quickstart's steps chain (train -> bench -> pick) and it says where things are."""

    config = ROOT / "configs" / "quickstart.yaml"
    overrides = [o for o in tiny_overrides(synthetic_root, tmp_path, "train.epochs=1")
                 if not o.startswith(("train.out_dir", "zoo.root"))]
    proc = subprocess.run([sys.executable, "-m", "okdhp_edge.quickstart", "--config",
                           str(config), "--max-latency-ms", "1000", "--min-time", "0.05",
                           "--min-iters", "4", "--warmup-time", "0.02", "--backends",
                           "torch,onnxruntime", *overrides],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pick on " in proc.stdout and "<- pick" in proc.stdout
    for what in ("zoo:", "report:", "chart:"):
        line = next(x for x in proc.stdout.splitlines() if x.startswith(what))
        assert (tmp_path / line.split(":", 1)[1].strip()).exists()
    # a second run keeps the first zoo
    zoos = sorted(p.name for p in (tmp_path / "student_zoo").iterdir())
    assert zoos == ["quickstart"]
