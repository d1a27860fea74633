import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from okdhp_edge.config import load_config
from okdhp_edge.manifest import zoo_students
from okdhp_edge.training.checkpoint import load_checkpoint
from okdhp_edge.training.trainer import NonFiniteLossError, Trainer, TrainingInterrupted
from tests.conftest import ROOT, tiny_overrides

CONFIG_DIR = ROOT / "configs"
CONFIGS = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if "ablation" not in p.parts)

def _cfg(root, tmp, *extra):
    return load_config(overrides=tiny_overrides(root, tmp, "train.amp=off", *extra))


def _state(path):
    return load_checkpoint(path)["model"]


def test_run_folder_and_zoo(tiny_zoo):
    students = zoo_students(tiny_zoo)
    assert [m.name for _, m in students] == ["hg2", "hg3"]  # ordered by size
    run = Path(students[0][1].provenance.run)
    assert load_config(run / "config.yaml").model.branches == [1, 2]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    assert set(json.loads(lines[-1])["select"]) == {"hg2", "hg3", "ensemble"}
    for d, man in students:
        assert man.accuracy.split == "report" and man.accuracy.metric == "AP"
        assert man.provenance.distillation["lambda_kd"] == 2.0
        assert (d / man.weights.file).is_file()
    big = students[-1][1]
    assert big.compression.params == 1.0
    assert students[0][1].compression.params > 1.0


def test_checkpoint_loads_weights_only(tiny_zoo):
    run = Path(zoo_students(tiny_zoo)[0][1].provenance.run)
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["epoch"] == 2 and "optimizer" in ck and "rng" in ck


def test_resume_matches_uninterrupted(synthetic_root, tmp_path):
    full = Trainer(_cfg(synthetic_root, tmp_path / "a"))
    full.fit()
    part = Trainer(_cfg(synthetic_root, tmp_path / "b", "train.epochs=1"))
    part.fit()
    resumed = Trainer(_cfg(synthetic_root, tmp_path / "b"), run_dir=part.run_dir, resume=True)
    resumed.fit()
    a, b = _state(full.run_dir / "last.pt"), _state(resumed.run_dir / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("workers", [0, 1])
def test_interrupt_mid_epoch_then_resume(synthetic_root, tmp_path, workers):
    """With a data worker the samples come through persistent workers (the epoch in the
    sampler's keys): the weights must still equal an in-process uninterrupted run's."""
    full = Trainer(_cfg(synthetic_root, tmp_path / "a"))
    full.fit()
    w = f"data.workers={workers}"

    class Interrupted(Trainer):
        def _loss(self, *a, **k):
            if self.state.iteration == 3:
                self.stop.requested = True  # what SIGINT/SIGTERM set
            return super()._loss(*a, **k)

    t = Interrupted(_cfg(synthetic_root, tmp_path / "b", w))
    with pytest.raises(TrainingInterrupted, match="--resume"):
        t.fit()
    t.close()
    ck = load_checkpoint(t.run_dir / "last.pt")
    assert (ck["epoch"], ck["iter_in_epoch"]) == (0, 4)
    resumed = Trainer(_cfg(synthetic_root, tmp_path / "b", w), run_dir=t.run_dir, resume=True)
    try:
        resumed.fit()
    finally:
        resumed.close()  # its data workers stop now, not when a later test collects it
    a, b = _state(full.run_dir / "last.pt"), _state(resumed.run_dir / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_persistent_workers_cut_epochs_match_in_process(synthetic_root, tmp_path):
    """Epochs cut short (max_iters_per_epoch) leave batches prefetched in the persistent
    workers; the next epoch must start from its own order, as in-process loading does."""
    cut = ("train.max_iters_per_epoch=2", "train.epochs=3")
    runs = [Trainer(_cfg(synthetic_root, tmp_path / str(w), f"data.workers={w}", *cut))
            for w in (0, 1)]
    for t in runs:
        try:
            t.fit()
        finally:
            t.close()
    a, b = (_state(t.run_dir / "last.pt") for t in runs)
    assert runs[0].iters_per_epoch == 2 and runs[1].state.iteration == 6
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_loss_keeps_last_good_checkpoint(synthetic_root, tmp_path):
    class Exploding(Trainer):
        def _loss(self, *a, **k):
            terms = super()._loss(*a, **k)
            if self.state.epoch == 1:
                terms.total = terms.total * float("nan")
            return terms

    t = Exploding(_cfg(synthetic_root, tmp_path))
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        t.fit()
    assert load_checkpoint(t.run_dir / "last.pt")["epoch"] == 1


def test_plain_baseline(synthetic_root, tmp_path):
    cfg = _cfg(synthetic_root, tmp_path, "model.name=hg2", "train.epochs=1")
    t = Trainer(cfg)
    t.fit()
    assert [h.name for h in t.heads] == ["hg2"]


# no validation after the first one is progress
PLATEAU = ("train.lr_steps=[]", "train.plateau_patience=1", "train.plateau_drops=1",
           "train.plateau_min_delta=1.0", "train.plateau_window=2")


def _plateau(t: Trainer, metrics: dict) -> str:
    """The plateau schedule's verdict after a validation, as the trainer applies it."""
    return t.plateau.apply(t.state, metrics, ["hg2"], t.dist, t.opt.optimizer, t._lr_factor)


@pytest.mark.parametrize("window, verdicts", [
    (1, ["", "", "", "drop"]),  # the lucky 0.70 sets the bar: 0.52 and 0.56 are stale
    (2, ["", "", "", "", "drop"]),  # averages 0.50 0.60 0.61 0.54 0.53: progress at 0.61
])
def test_plateau_test_averages_the_last_validations(synthetic_root, tmp_path, window, verdicts):
    cfg = _cfg(synthetic_root, tmp_path, "model.name=hg2", "train.lr_steps=[]",
               "train.plateau_patience=2", "train.plateau_drops=1",
               "train.plateau_min_delta=0.005", f"train.plateau_window={window}")
    t = Trainer(cfg)
    got = []
    for v in [0.50, 0.70, 0.52, 0.56, 0.50][:len(verdicts)]:
        got.append(_plateau(t, {"hg2": v}))
        t.state.history.append({"select": {"hg2": v}})
    assert got == verdicts and t.state.drops == 1


def test_no_plateau_before_plateau_min_epoch(synthetic_root, tmp_path):
    # the AP of a slow start (0.0, 0.0, ...) is flat, but the run has not levelled off
    cfg = _cfg(synthetic_root, tmp_path, "model.name=hg2", "train.lr_steps=[]",
               "train.plateau_patience=2", "train.plateau_drops=1",
               "train.plateau_min_delta=0.005", "train.plateau_window=1",
               "train.plateau_min_epoch=3")
    t = Trainer(cfg)
    got = []
    for epoch, v in enumerate([0.0, 0.0, 0.0, 0.0, 0.0], start=1):
        t.state.epoch = epoch
        got.append(_plateau(t, {"hg2": v}))
        t.state.history.append({"select": {"hg2": v}})
    assert got == ["", "", "", "drop", ""]  # stale from epoch 3 on: drop at the 2nd stale one


def test_plateau_schedule_drops_the_lr_then_stops(synthetic_root, tmp_path):
    cfg = _cfg(synthetic_root, tmp_path, "train.epochs=20", *PLATEAU)
    t = Trainer(cfg)
    t.fit()
    hist = t.state.history
    assert [h.get("plateau", "") for h in hist] == ["", "drop", "stop"]
    assert [h["lr"] for h in hist] == pytest.approx([1e-3, 1e-3, 1e-4])
    assert t.state.finished.startswith("plateau after 1 LR drops")
    resumed = Trainer(cfg, run_dir=t.run_dir, resume=True)  # a finished run stays finished
    resumed.fit()
    assert resumed.state.iteration == t.state.iteration and resumed.state.drops == 1


def test_plateau_schedule_trains_at_least_min_wall_s(synthetic_root, tmp_path, caplog):
    cfg = _cfg(synthetic_root, tmp_path, "train.epochs=4", "train.min_wall_s=1e9", *PLATEAU)
    t = Trainer(cfg)
    t.fit()
    assert t.state.epoch == 4 and t.state.finished == "" and t.state.drops == 1
    assert "epoch cap train.epochs=4 came before the plateau" in caplog.text


@pytest.mark.parametrize("extra, needle", [
    (["train.plateau_patience=2"], "set train.lr_steps=[]"),
    (["train.min_wall_s=10"], "needs a plateau schedule"),
    (["train.plateau_min_epoch=30"], "plateau_min_epoch needs a plateau schedule"),
])
def test_plateau_config_errors(extra, needle):
    from okdhp_edge.config import ConfigError

    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_config(overrides=extra)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_and_builds(path):
    from okdhp_edge import create_model
    from okdhp_edge.models.registry import model_kwargs_from_config

    cfg = load_config(path, ["model.width=8", "model.stem_width=8", "model.depth=1",
                             "data.input_size=[32,32]"])
    kwargs = model_kwargs_from_config(cfg.model, 16 if cfg.data.dataset == "mpii" else 17)
    m = create_model(cfg.model.name, **kwargs).eval()
    with torch.no_grad():
        m(torch.zeros(1, 3, 32, 32))


def test_ddp_two_cpu_processes(synthetic_root, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29533", "-m", "okdhp_edge.train", "--no-zoo",
           *tiny_overrides(synthetic_root, tmp_path, "train.epochs=1", "train.run_name=ddp")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DistributedDataParallel over 2 process(es), backend gloo" in proc.stderr
    runs = list((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["ddp"]  # rank 0 alone wrote, one folder
    ck = load_checkpoint(runs[0] / "last.pt")
    assert ck["epoch"] == 1


# slow: the DDP path under torchrun is the two-process test's; one process is the GPU check's
@pytest.mark.slow
def test_torchrun_with_one_process_is_distributed(synthetic_root, tmp_path):
    """torchrun --nproc_per_node=1 runs the DDP code path (what a one-GPU check exercises)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1",
           "--master_port=29534", "-m", "okdhp_edge.train", "--no-zoo",
           *tiny_overrides(synthetic_root, tmp_path, "train.epochs=1", "train.run_name=ddp1")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DistributedDataParallel over 1 process(es), backend gloo" in proc.stderr
    assert load_checkpoint(tmp_path / "runs" / "ddp1" / "last.pt")["epoch"] == 1


def test_sigkill_mid_epoch_loses_at_most_the_checkpoint_interval(synthetic_root, tmp_path):
    """train.checkpoint_minutes writes mid-epoch checkpoints: a run SIGKILLed inside an
    epoch resumes from the last one and ends with the weights of an uninterrupted run."""
    import subprocess
    import sys
    import time

    # batches of 2: 24 iterations an epoch, so that the kill lands inside the first one
    # even on a busy machine
    full = Trainer(_cfg(synthetic_root, tmp_path / "a", "train.batch_size=2"))
    full.fit()
    full.close()
    cfg_args = [*tiny_overrides(synthetic_root, tmp_path / "b"), "train.amp=off",
                "train.batch_size=2", "train.checkpoint_minutes=1e-6",
                "train.run_name=killed"]
    proc = subprocess.Popen([sys.executable, "-m", "okdhp_edge.train", "--no-zoo", *cfg_args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "b" / "runs" / "killed" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if last.is_file() and load_checkpoint(last)["iter_in_epoch"] >= 2:
            break
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    ck = load_checkpoint(last)
    assert ck["epoch"] == 0 and ck["iter_in_epoch"] >= 2  # killed inside the first epoch
    resumed = Trainer(load_config(last.parent / "config.yaml", ["train.checkpoint_minutes=0"]),
                      run_dir=last.parent, resume=True)
    resumed.fit()
    resumed.close()
    a, b = _state(full.run_dir / "last.pt"), _state(last)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _group_members(pgid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if os.getpgid(int(d.name)) == pgid:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table in /proc")
def test_sigkill_leaves_no_orphan_workers(synthetic_root, tmp_path):
    """After a SIGKILL of the trainer, its data workers, their fork server and the resource
    tracker exit on their own within seconds."""
    import signal
    import subprocess
    import sys
    import time

    args = [*tiny_overrides(synthetic_root, tmp_path), "data.workers=1", "train.epochs=50",
            "train.run_name=orphans"]
    proc = subprocess.Popen([sys.executable, "-m", "okdhp_edge.train", "--no-zoo", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    metrics = tmp_path / "runs" / "orphans" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not metrics.is_file():  # workers are up by epoch 1
        time.sleep(0.1)
    assert len(_group_members(proc.pid)) > 1, "no worker processes to check"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while time.time() < deadline and _group_members(proc.pid):
        time.sleep(0.5)
    left = _group_members(proc.pid)
    for pid in left:  # clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} processes outlived the trainer by 20 s"


def test_resume_without_a_checkpoint_is_one_line(tmp_path):
    import subprocess
    import sys

    (tmp_path / "run").mkdir()
    proc = subprocess.run([sys.executable, "-m", "okdhp_edge.train", "--resume",
                           str(tmp_path / "run")], capture_output=True, text=True)
    assert proc.returncode == 2 and "no checkpoint there" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", ["pickle", "garbage", "foreign", "truncated"])
def test_resume_from_a_bad_checkpoint_is_one_line(tmp_path, content):
    import pickle

    run = tmp_path / "run"
    run.mkdir()
    ck = run / "last.pt"
    if content == "pickle":
        ck.write_bytes(pickle.dumps({"epoch": 1, "x": ValueError("an arbitrary object")}))
    elif content == "garbage":
        ck.write_bytes(bytes(range(256)))
    elif content == "foreign":
        torch.save({"epoch": 1}, ck)
    else:
        torch.save({"model": torch.zeros(1000)}, ck)
        ck.write_bytes(ck.read_bytes()[:300])
    # data that is not there: the checkpoint is refused before any data is read
    (run / "config.yaml").write_text("model: {name: hg2}\ndata: {root: /nonexistent/okdhp}\n")
    proc = subprocess.run([sys.executable, "-m", "okdhp_edge.train", "--resume", str(run)],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {ck}") and "Traceback" not in proc.stderr
    assert "weights_only=False" not in proc.stderr


def test_files_respect_the_umask(tiny_zoo):
    import stat

    from okdhp_edge.utils.io import UMASK

    for f in (tiny_zoo / "zoo.yaml", *tiny_zoo.glob("*/weights.safetensors")):
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~UMASK
    assert not list(tiny_zoo.parent.glob(f".{tiny_zoo.name}.partial-*"))


def test_a_run_that_cannot_start_leaves_no_folder(tmp_path):
    from okdhp_edge.data.errors import DataError

    cfg = load_config(overrides=["data.dataset=coco", f"data.train_ann={tmp_path}/none.json",
                                 f"train.out_dir={tmp_path}/runs"])
    with pytest.raises(DataError, match="annotation file not found"):
        Trainer(cfg, config_name="broken")
    assert not (tmp_path / "runs").exists()


def test_checkpoint_state_round_trip_and_older_checkpoints(tmp_path):
    """TrainState through checkpoint entries; a checkpoint written before the plateau fields
    resumes with their defaults, one without a needed field is refused in one line."""
    from okdhp_edge.training.checkpoint import (
        RESUME_KEYS,
        CheckpointError,
        TrainState,
        check_resume_keys,
    )

    state = TrainState(epoch=3, iteration=30, best={"hg2": 0.5}, drops=1, finished="plateau")
    ck = {"config": {}, "model": {}, "optimizer": {}, "scheduler": {}, "scaler": {}, "rng": {},
          **state.to_checkpoint()}
    assert TrainState.from_checkpoint(ck) == state
    old = {k: v for k, v in ck.items() if k not in TrainState.OPTIONAL}
    check_resume_keys(old, tmp_path / "last.pt")
    assert TrainState.from_checkpoint(old) == TrainState(epoch=3, iteration=30, best={"hg2": 0.5})
    assert not set(TrainState.OPTIONAL) & set(RESUME_KEYS)
    with pytest.raises(CheckpointError, match="not a training checkpoint .no wall"):
        check_resume_keys({k: v for k, v in ck.items() if k != "wall"}, tmp_path / "last.pt")


STUCK_RUN = """
import sys, time
from pathlib import Path
from okdhp_edge.config import load_config
from okdhp_edge.training.trainer import Trainer
from okdhp_edge.utils.cli import setup_logging

setup_logging()
marker = Path(sys.argv[1])

class Stuck(Trainer):
    def _step(self, *a, **k):
        if self.state.iteration == 1:  # an iteration that does not finish
            marker.write_text("in the step")
            time.sleep(600)
        return super()._step(*a, **k)

Stuck(load_config(None, sys.argv[2:])).fit()
"""


def _stuck_run(synthetic_root, tmp_path, deadline_s: float) -> subprocess.Popen:
    """A training process inside an iteration that does not finish (a machine starved of
    cores), once its marker file says so."""
    import time

    marker = tmp_path / "stuck"
    args = [*tiny_overrides(synthetic_root, tmp_path), "train.amp=off",
            f"train.stop_deadline_s={deadline_s}", "train.run_name=stuck"]
    proc = subprocess.Popen([sys.executable, "-c", STUCK_RUN, str(marker), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    deadline = time.time() + 120
    while not marker.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.is_file(), proc.communicate()[1][-2000:]
    return proc


def test_sigterm_in_a_step_that_never_ends_exits_within_the_deadline(synthetic_root, tmp_path):
    """A run whose iteration does not finish still stops on SIGTERM: within
    train.stop_deadline_s it says that no checkpoint could be written and exits 128 + 15."""
    import signal
    import time

    proc = _stuck_run(synthetic_root, tmp_path, 2)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert time.time() - t0 < 10  # the deadline (2 s), not the 600 s step
    assert "no checkpoint within 2 s of signal 15" in err and "resume from" in err


def test_a_second_signal_exits_at_once(synthetic_root, tmp_path):
    import signal
    import time

    proc = _stuck_run(synthetic_root, tmp_path, 300)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None  # the first asks for a checkpoint and waits for the step
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGINT and "again: exiting now" in err


def test_a_bad_checkpoints_message_ends_at_a_word():
    from okdhp_edge.training.checkpoint import _clip

    text = ("Weights only load failed. This file can still be loaded, to do so you have two "
            "options. If you do it, make sure you trust the source")
    assert _clip(text) == "Weights only load failed"
    long = "word " * 40
    assert _clip(long).endswith("word ...") and len(_clip(long)) <= 124


def test_two_runs_started_at_once_under_one_name_get_two_folders(tmp_path):
    """The run folder is made when its name is chosen (two trainings started together
    under one name wrote into one folder, and their zoos came out crossed)."""
    from okdhp_edge.manifest import reserve_dir

    first, second = reserve_dir(tmp_path, "same"), reserve_dir(tmp_path, "same")
    assert (first.name, second.name) == ("same", "same-2") and first.is_dir()


def test_a_zoo_name_is_held_from_the_runs_start(tmp_path):
    """The name a run's zoo will take is held when the run starts: a second run asking for
    it holds the next one; a resumed run holds its own again; a holder whose run folder is
    gone gives it up; a held folder is no zoo to ``zoo list``."""
    from okdhp_edge.manifest import reserve_name, reserved_for

    run_a, run_b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    run_a.mkdir(parents=True)
    run_b.mkdir()
    zoo = tmp_path / "zoo"
    assert reserve_name(zoo, "same", str(run_a)) == "same"
    assert reserve_name(zoo, "same", str(run_b)) == "same-2"
    assert reserve_name(zoo, "same", str(run_a)) == "same"  # resumed: its own
    assert reserved_for(zoo / "same-2") == str(run_b) and not list(zoo.glob("*/zoo.yaml"))
    run_b.rmdir()
    assert reserve_name(zoo, "same-2", str(run_a / "c")) == "same-2"  # stale: taken over


def test_runs_started_at_once_under_one_zoo_name_get_it_in_starting_order(synthetic_root,
                                                                          tmp_path,
                                                                          monkeypatch):
    """Two trainings with one explicit ``zoo.name``: the first started keeps the name even
    when the second finishes first (the zoos were named in finishing order); a run that
    fails gives back the name it held."""
    import yaml

    from okdhp_edge import api
    from okdhp_edge.config import load_config

    base = tiny_overrides(synthetic_root, tmp_path, "zoo.name=same")
    slow = subprocess.Popen(
        [sys.executable, "-m", "okdhp_edge", "train", *base, "train.run_name=slow",
         "train.epochs=8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path)
    log = tmp_path / "runs" / "slow" / "train.log"
    try:
        deadline = time.monotonic() + 120
        while slow.poll() is None and "iters/epoch" not in (log.read_text() if log.is_file()
                                                            else ""):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        fast = api.train(load_config(overrides=[*base, "train.run_name=fast", "train.epochs=1",
                                                "train.max_iters_per_epoch=1"]))
        assert slow.poll() is None  # the slow run was still training when the fast one ended
        _, err = slow.communicate(timeout=300)
        assert slow.returncode == 0, err[-3000:]
    finally:
        slow.kill()
    assert fast.zoo.name == "same-2"
    for name, run in (("same", "slow"), ("same-2", "fast")):
        zoo = yaml.safe_load((tmp_path / "zoo" / name / "zoo.yaml").read_text())
        assert (zoo["name"], Path(zoo["run"]).name) == (name, run)
    resolved = yaml.safe_load((fast.run_dir / "config.yaml").read_text())
    assert resolved["zoo"]["name"] == "same-2"
    def fails(run):
        assert (tmp_path / "zoo" / "same-3").is_dir()  # held while it trained
        raise OSError("disk full")

    monkeypatch.setattr("okdhp_edge.training.zoo_writer.write_zoo", fails)
    with pytest.raises(OSError, match="disk full"):
        api.train(load_config(overrides=[*base, "train.epochs=1",
                                         "train.max_iters_per_epoch=1"]))
    assert not (tmp_path / "zoo" / "same-3").exists()


UNGUARDED = """
import sys
from okdhp_edge import api
from okdhp_edge.config import load_config
run = api.train(load_config(None, sys.argv[1:]), config_name="script")
print("RESULT", run.zoo)
"""


def test_the_api_runs_from_a_script_without_a_main_guard(synthetic_root, tmp_path):
    """A script calling api.train at its top level, with data workers: they start without
    running the script again (it died in the workers' fork server: 'An attempt has been
    made to start a new process before the current process has finished its bootstrapping
    phase')."""
    script = tmp_path / "train_it.py"
    script.write_text(UNGUARDED)
    args = [*tiny_overrides(synthetic_root, tmp_path, "train.epochs=1", "data.workers=1",
                            "train.max_iters_per_epoch=2")]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("RESULT ") == 1  # trained once, not again in a worker
