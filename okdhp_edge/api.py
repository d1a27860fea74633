"""The Python API behind the ``okdhp`` command: train a zoo, bench it, pick a student,
export a bundle. Each call returns values (paths, typed records), never printed text, and
takes the same keys as its command, checked the same way::

    from okdhp_edge import api
    from okdhp_edge.config import load_config

    if __name__ == "__main__":  # training starts data-loader processes: a script needs it
        run = api.train(load_config("configs/quickstart.yaml"), config_name="quickstart")
        report, files = api.bench(run.zoo, min_time=1.0)
        choice = api.pick(report, max_latency_ms=1.5)

The command line (``okdhp train|bench|zoo ...``) parses its arguments and calls these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from okdhp_edge.bench.decide import Decision
from okdhp_edge.errors import TrainingInterrupted
from okdhp_edge.records import BenchReport

Pick = Decision  # what api.pick returns: choice, closest, frontier and the ties behind them


@dataclass(frozen=True)
class TrainResult:
    """A finished training run: its folder and the zoo it wrote (None: ``write_zoo=False``,
    or a non-main process of a distributed run)."""

    run_dir: Path
    zoo: Optional[Path]
    is_main: bool = True  # the main process (rank 0) of a distributed run
    # the run's state at its end (:class:`okdhp_edge.training.checkpoint.TrainState`:
    # epochs, wall time, history, best epochs and their per-image results)
    state: Any = None


def train(cfg: Any, config_name: str = "", resume: Optional[Path] = None,
          write_zoo: bool = True, run_dir: Optional[Path] = None) -> TrainResult:
    """Train ``cfg`` (a :class:`okdhp_edge.config.Config`), then write its student zoo.
    ``resume``: continue the run in that folder; ``run_dir``: the folder of a new run
    (default: a new one under ``train.out_dir``).

    Raises:
        ConfigError: a value the command line would refuse (a negative LR, a wrong type).
        TrainingInterrupted: SIGINT/SIGTERM (a checkpoint was written; resume the run).
        NonFiniteLossError: the loss became NaN or infinite.
    """
    from okdhp_edge.config import check_machine, checked
    from okdhp_edge.training.trainer import Trainer
    from okdhp_edge.training.zoo_writer import hold_zoo_name, release_zoo_name
    from okdhp_edge.training.zoo_writer import write_zoo as write
    from okdhp_edge.utils.io import check_writable

    cfg = checked(cfg)  # as the command line checks it, before any work (ConfigError)
    check_machine(cfg)
    trainer_class = Trainer
    if cfg.qat.from_run:  # quantization-aware fine-tuning of a trained run (checked first)
        from okdhp_edge.training.qat import QatTrainer, qat_run_config

        cfg, trainer_class = qat_run_config(cfg), QatTrainer
    # what the end of the run needs, checked before its first step (WriteError, one line)
    check_writable(Path(cfg.train.out_dir))
    if write_zoo:
        check_writable(Path(cfg.zoo.root))
    trainer = trainer_class(cfg, run_dir=resume or run_dir, resume=resume is not None,
                            config_name=config_name)
    hold = write_zoo and trainer.dist.is_main
    try:
        if hold:
            hold_zoo_name(trainer.cfg, Path(trainer.run_dir))
        run = trainer.fit()
        zoo = write(run) if hold else None
        return TrainResult(Path(trainer.run_dir), zoo, trainer.dist.is_main, trainer.state)
    except TrainingInterrupted:
        raise  # resumable: the run keeps its zoo's name
    except BaseException:
        if hold:
            release_zoo_name(trainer.cfg, Path(trainer.run_dir))
        raise
    finally:
        trainer.close()


def bench(zoo: Path, *, out_root: Path = Path("bench/reports"), **options: Any
          ) -> tuple[BenchReport, dict[str, Path]]:
    """Bench every student of ``zoo`` and write the report set under
    ``out_root/<device-id>/``; returns the report and its files (json, md, png).

    ``options`` are the keys of ``okdhp bench`` (:class:`~okdhp_edge.bench.command.
    BenchRequest`; ``okdhp bench --show`` lists them): ``backends=("torch", "openvino")``
    (or ``"torch,openvino"``), ``min_time=1.0``, ``threads=2``, ``calib_images=100``...;
    an unknown one is refused naming the closest, a bad value as on the command line."""
    from okdhp_edge.bench.command import BenchRequest, measure_and_write

    return measure_and_write(BenchRequest.build(zoo=zoo, out_root=out_root, **options))


def pick(report: BenchReport | Path, max_latency_ms: float, **filters: Any) -> Decision:
    """The pick under a latency budget from a report (or its JSON path): the fastest
    student whose accuracy is statistically tied with the most accurate one within the
    budget. ``filters`` are the keys of ``okdhp zoo pick`` (:class:`~okdhp_edge.bench.
    decide.PickRequest`: ``stat``, ``scope``, ``min_accuracy``, ``backend``, ``precision``,
    ``max_ap_drop``, ``ap_tolerance``, ``max_memory_mb``, ``allow_emulated``), checked as
    there; a plan's or an emulated report is refused as there."""
    from okdhp_edge.bench.decide import PickRequest
    from okdhp_edge.bench.report import load_report

    req = PickRequest.build(max_latency_ms=max_latency_ms, **filters)
    rep = report if isinstance(report, BenchReport) else load_report(report)
    return req.decide_report(rep, "report" if isinstance(report, BenchReport) else str(report))


def export_bundle(student_yaml: Path, backend: str, precision: str, out: Path,
                  **options: Any) -> Path:
    """A deployable bundle of one student (see :func:`okdhp_edge.export.bundles.
    export_bundle`)."""
    from okdhp_edge.export.bundles import export_bundle as export

    return export(student_yaml, backend, precision, out, **options)
