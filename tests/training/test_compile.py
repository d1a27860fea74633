"""The training step under torch.compile: the same loss curve as eager from the same seed,
checkpoints and zoos without compiled-module keys, the LR scaling rule."""

import json
from pathlib import Path

import pytest
import torch

from okdhp_edge.config import load_config
from tests.conftest import tiny_overrides


def test_lr_scales_with_the_batch():
    from okdhp_edge.training.optim import scaled_lr

    def lr(rule, batch, world=1):
        cfg = load_config(overrides=[f"train.lr_scaling={rule}", f"train.batch_size={batch}",
                                     "train.lr=2.5e-4", "train.lr_reference_batch=16"])
        return scaled_lr(cfg.train, world)

    assert lr("none", 64) == pytest.approx(2.5e-4)
    assert lr("linear", 64) == pytest.approx(1e-3)
    assert lr("linear", 32, world=2) == pytest.approx(1e-3)  # the batch over all ranks
    assert lr("sqrt", 64) == pytest.approx(5e-4)


def test_compile_off_is_the_function_itself():
    from okdhp_edge.training.device import compiled_terms

    def f():
        return 1

    assert compiled_terms(f, "off", torch.device("cpu")) is f


def _train(root: Path, tmp: Path, mode: str):
    from okdhp_edge.training.trainer import Trainer
    from okdhp_edge.training.zoo_writer import write_zoo

    cfg = load_config(overrides=tiny_overrides(
        root, tmp, "train.epochs=50", "train.val_every=50", f"train.compile={mode}",
        "train.amp=off", f"zoo.name=compile-{mode}"))
    trainer = Trainer(cfg, config_name=mode)
    zoo = write_zoo(trainer.fit())
    trainer.close()
    losses = [json.loads(x)["loss"] for x in
              (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    return trainer.run_dir, zoo, losses


@pytest.mark.slow
def test_compiled_step_follows_the_eager_loss_curve(synthetic_root, tmp_path):
    """200 iterations (50 epochs of 4) of the tiny OKDHP network from one seed. Inductor
    reorders float arithmetic, so the runs are not bit-equal and drift apart as training
    goes (measured: within 0.5% for the first 40 iterations, 3.5% by iteration 200). Stated
    tolerance: each of the first 10 epoch means within 1% of eager, each 10-epoch mean
    within 5%. The checkpoint and the students carry the plain module's keys."""
    _, _, eager = _train(synthetic_root, tmp_path / "eager", "off")
    run, zoo, compiled = _train(synthetic_root, tmp_path / "compiled", "default")
    assert len(eager) == len(compiled) == 50
    for a, b in zip(eager[:10], compiled[:10]):
        assert b == pytest.approx(a, rel=0.01)
    for i in range(0, 50, 10):
        assert sum(compiled[i:i + 10]) == pytest.approx(sum(eager[i:i + 10]), rel=0.05)
    ck = torch.load(run / "last.pt", weights_only=True)
    assert not any("_orig_mod" in k for k in ck["model"])
    from okdhp_edge.manifest import zoo_students
    from okdhp_edge.students import load_student

    for d, _ in zoo_students(zoo):
        load_student(d / "student.yaml")  # the plain architecture's keys load strictly


def test_a_compiled_cpu_step_keeps_its_thread_count(caplog):
    """train.threads=0 adapts the thread count to other processes' load, but a compiled
    step would recompile at every change (a 2-minute compile each time on 2 cores): with
    train.compile on, the governor is off and the log says the count is fixed."""
    import logging

    from okdhp_edge.training.device import thread_governor as _thread_governor

    cpu = torch.device("cpu")
    assert _thread_governor(0, cpu, False, "off") is not None  # eager: adapts
    with caplog.at_level(logging.INFO, logger="okdhp_edge.training.trainer"):
        assert _thread_governor(0, cpu, False, "default") is None
    assert "the thread count stays at" in caplog.text
