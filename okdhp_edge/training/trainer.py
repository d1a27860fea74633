"""The OKDHP trainer: fit / train_one_epoch / validate, resumable and signal-safe."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

import torch

from okdhp_edge.config import Config, config_to_dict
from okdhp_edge.data.build import build_split
from okdhp_edge.data.formats import get_spec
from okdhp_edge.errors import NonFiniteLossError, TrainingInterrupted
from okdhp_edge.families import zoo_student_names
from okdhp_edge.losses import LossTerms, combine, okdhp_terms, plain_terms
from okdhp_edge.models.registry import is_multi_branch, model_from_config
from okdhp_edge.models.student import Student
from okdhp_edge.training.checkpoint import RunCheckpoint, TrainState
from okdhp_edge.training.device import compiled_terms, place
from okdhp_edge.training.distributed import all_reduce_mean, barrier, broadcast_flag, cleanup
from okdhp_edge.training.epoch_log import EpochLog, EpochMeter, log_setup
from okdhp_edge.training.loaders import EpochSampler, RunLoaders
from okdhp_edge.training.optim import build_optimization, lr_factor
from okdhp_edge.training.plateau import PlateauSchedule
from okdhp_edge.training.result import TrainedRun
from okdhp_edge.training.run_folder import new_run_dir, reopen_run_dir
from okdhp_edge.training.selection import Head, Selection
from okdhp_edge.training.signals import StopSignals
from okdhp_edge.training.validation import HeadValidation

__all__ = ["Head", "NonFiniteLossError", "TrainedRun", "Trainer", "TrainingInterrupted"]

log = logging.getLogger(__name__)


class Trainer:
    """Trains the configured model and writes the run folder.

    Run folder: ``config.yaml`` (resolved), ``last.pt`` (atomic, every epoch and on
    SIGINT/SIGTERM), ``best_students.pt`` (per branch, best on the selection split),
    ``metrics.jsonl`` (one line per epoch), ``train.log``. What differs in a
    quantization-aware run (:mod:`okdhp_edge.training.qat`) is its network and what its
    :class:`~okdhp_edge.training.selection.Selection` keeps.
    """

    def __init__(self, cfg: Config, run_dir: Optional[Path] = None, resume: bool = False,
                 config_name: str = "") -> None:
        self.cfg, self.config_name = cfg, config_name
        p = place(cfg.train)
        self.dist, self.device, self.amp_dtype, self.governor = (p.dist, p.device, p.amp_dtype,
                                                                 p.governor)
        self.spec = get_spec(cfg.data.dataset)
        self.state = TrainState()
        self.plain = not is_multi_branch(cfg.model.name)
        ck = RunCheckpoint.read(run_dir, self.device) if resume else None  # before the data
        self._build()  # before the run folder: a run that cannot start leaves none behind
        self.run_dir = new_run_dir(cfg, config_name, run_dir, self.dist) if not resume \
            else reopen_run_dir(run_dir, self.dist.is_main)
        self.checkpoint = RunCheckpoint(self.run_dir, self.dist.is_main,
                                        cfg.train.checkpoint_minutes)
        self.epoch_log = EpochLog(self.run_dir, self.dist.is_main, cfg.train.epochs,
                                  cfg.data.workers)
        self.stop = StopSignals(cfg.train.stop_deadline_s,
                                lambda: f"resume from {self.run_dir / 'last.pt'}")
        if ck is not None:
            self._load(ck)

    # ---------------------------------------------------------------- setup
    def _build(self) -> None:
        cfg = self.cfg
        self.model = self._create_model().to(self.device)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_set = build_split(cfg.data, "train", seed=cfg.train.seed)
        self.select_set = build_split(cfg.data, "select", seed=cfg.train.seed)
        if len(self.train_set) < cfg.train.batch_size * self.dist.world_size:
            raise ValueError(f"training split has {len(self.train_set)} persons, fewer than one "
                             f"batch ({cfg.train.batch_size} x {self.dist.world_size} ranks)")
        self.sampler = EpochSampler(len(self.train_set), cfg.train.seed, self.dist.rank,
                                    self.dist.world_size)
        self.loaders = RunLoaders(self.train_set, self.sampler, cfg.train.batch_size,
                                  cfg.eval.batch_size, cfg.data.workers,
                                  pin_memory=self.device.type == "cuda")
        self.iters_per_epoch = len(self.sampler) // cfg.train.batch_size
        if cfg.train.max_iters_per_epoch:
            self.iters_per_epoch = min(self.iters_per_epoch, cfg.train.max_iters_per_epoch)
        self.net = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.opt = build_optimization(self.model, cfg.train, self.device, self.amp_dtype,
                                      self.dist.world_size, self._lr_factor)
        self._terms_fn = compiled_terms(self._terms, cfg.train.compile, self.device)
        self.heads = self._heads()
        self.plateau = PlateauSchedule(cfg.train)
        self.selection = self._selection()
        self.validation = HeadValidation(self.model, self.heads, self.plain, self.device,
                                         cfg.train.channels_last, self.loaders)

    def _create_model(self) -> torch.nn.Module:
        """The network this run trains (CPU, before the run folder exists)."""
        return model_from_config(self.cfg.model, self.spec.num_joints)

    def _selection(self) -> Selection:
        """What is kept of a student at its best epoch: its own weights."""
        return Selection(self.heads, self.state, self.student)

    def _heads(self) -> list[Head]:
        if self.plain:
            return [Head(self.model.short_name(), None)]
        names = zoo_student_names(self.model.branch_names())
        return [Head(nm, i) for i, nm in enumerate(names)] + [Head("ensemble", None)]

    def _lr_factor(self, it: int) -> float:
        return lr_factor(self.cfg.train, it, self.iters_per_epoch, self.state.drops)

    def student(self, head: Head) -> Student:
        """The plain network (a registered student family) a head deploys as (a copy for
        branches)."""
        return self.model if self.plain else self.model.student(head.branch)

    # ---------------------------------------------------------------- checkpoints
    def save(self) -> None:
        """``last.pt``: what a resumed run continues from (also mid-epoch)."""
        self.checkpoint.write({"model": self.model.state_dict(), **self.opt.state_dict(),
                               **self.state.to_checkpoint(),
                               "config": json.dumps(config_to_dict(self.cfg))})

    def _load(self, ck: dict[str, Any]) -> None:
        if json.loads(ck["config"]) != config_to_dict(self.cfg):
            log.warning("resuming with a config that differs from the checkpoint's")
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck)
        self.state = self.selection.state = TrainState.from_checkpoint(ck)
        RunCheckpoint.restore_rng(ck)
        self.selection.load(self.run_dir)
        log.info("resumed %s at epoch %d, iteration %d", self.run_dir, self.state.epoch,
                 self.state.iteration)

    # ---------------------------------------------------------------- training
    def _terms(self, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward and the unweighted loss terms: what ``train.compile`` compiles."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            out = self.net(x)
        if self.plain:
            return plain_terms(out, t, w)
        return okdhp_terms(out, t, w, self.cfg.loss)

    def _loss(self, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor,
              epoch: float) -> LossTerms:
        mse, ens, kl = self._terms_fn(x, t, w)
        if self.plain:
            return LossTerms(mse, mse, ens, kl)
        return combine(mse, ens, kl, epoch, self.cfg.loss)

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training split (or ``max_iters_per_epoch`` batches)."""
        s = self.state
        self.net.train()
        meter = EpochMeter(self.iters_per_epoch, s.iter_in_epoch, epoch, self.dist.is_main)
        batches = iter(self.loaders.train(epoch, s.iter_in_epoch * self.cfg.train.batch_size))
        while True:
            t_wait = time.perf_counter()
            batch = next(batches, None)  # the time the step waits on the loader
            meter.wait += time.perf_counter() - t_wait
            if batch is None or s.iter_in_epoch >= self.iters_per_epoch:
                break
            s.skipped_images += batch["skipped"]
            if "image" not in batch:
                continue
            terms = self._step(*self._to_device(batch), epoch)
            s.iteration, s.iter_in_epoch = s.iteration + 1, s.iter_in_epoch + 1
            meter.add(terms, batch["image"].shape[0] * self.dist.world_size)
            if broadcast_flag(self.stop.requested, self.dist):
                break
            if self.checkpoint.due():  # mid-epoch, as SIGTERM writes: resumes at this step
                self.save()
            self._govern_threads()
        s.wall += time.time() - meter.t0
        return meter.summary(lambda v: all_reduce_mean(v, self.dist), self.opt.lr)

    def _to_device(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        x = torch.from_numpy(batch["image"]).to(self.device, non_blocking=True)
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t = torch.from_numpy(batch["target"]).to(self.device, non_blocking=True)
        w = torch.from_numpy(batch["target_weight"]).to(self.device, non_blocking=True)
        return x, t, w

    def _step(self, x: torch.Tensor, t: torch.Tensor, w: torch.Tensor,
              epoch: int) -> LossTerms:
        """One optimizer step on a batch (x [B, 3, H, W], targets t [B, K, h, w], joint
        weights w [B, K]); its loss terms. A non-finite loss stops the run before the step."""
        s = self.state
        terms = self._loss(x, t, w, epoch + s.iter_in_epoch / self.iters_per_epoch)
        if not torch.isfinite(terms.total):
            raise NonFiniteLossError(
                f"non-finite loss at epoch {epoch + 1}, iteration {s.iteration}; "
                f"the last good checkpoint {self.run_dir / 'last.pt'} is kept")
        self.opt.step(terms.total)
        return terms

    def _govern_threads(self) -> None:
        """train.threads=0: give cores up while other processes keep them busy."""
        n = self.governor.update() if self.governor is not None else None
        if n is not None:
            log.info("other processes keep %.1f core(s) busy: training on %d thread(s) "
                     "(train.threads=0 adapts; set it to pin the count)",
                     self.governor.others, n)
            torch.set_num_threads(n)

    # ---------------------------------------------------------------- validation
    def validate(self) -> tuple[dict[str, float], dict[str, str]]:
        """Selection-split metric (and per-image results) of every head: rank 0 computes,
        all ranks wait."""
        res = self.validation.scores(self.select_set, self.cfg.eval) if self.dist.is_main \
            else ({}, {})
        barrier(self.dist)
        return res

    # ---------------------------------------------------------------- fit
    def _epoch(self) -> dict[str, Any]:
        """Train one epoch, validate when due (best students, plateau schedule), checkpoint;
        returns the epoch's record. Raises TrainingInterrupted after a stop signal."""
        cfg, s = self.cfg, self.state
        epoch = s.epoch
        stats = self.train_one_epoch(epoch)
        if self.stop.requested:
            self.save()
            raise TrainingInterrupted(f"stopped at epoch {epoch + 1}, iteration {s.iteration}; "
                                      f"resume with --resume {self.run_dir}")
        s.epoch, s.iter_in_epoch = epoch + 1, 0
        metrics, plateau = {}, ""
        if (epoch + 1) % cfg.train.val_every == 0 or epoch + 1 == cfg.train.epochs:
            metrics, units = self.validate()  # on rank 0; {} on the others
            self.selection.update(metrics, epoch + 1, units,
                                  self.run_dir if self.dist.is_main else None)
            if cfg.train.plateau_patience:
                plateau = self.plateau.apply(s, metrics, [h.name for h in self.selection.heads],
                                             self.dist, self.opt.optimizer, self._lr_factor)
        record = {"epoch": epoch + 1, "iteration": s.iteration, "wall_s": s.wall,
                  **stats, "select": metrics, "skipped_images": s.skipped_images}
        if plateau:
            record["plateau"] = plateau
        s.history.append(record)
        self.save()
        self.epoch_log.write(record, s.history)
        return record

    def fit(self) -> TrainedRun:
        """Train to ``train.epochs`` (or to the plateau schedule's end); returns the trained
        students (:meth:`result`)."""
        cfg, s = self.cfg, self.state
        log_setup(self)
        with self.stop:
            while s.epoch < cfg.train.epochs and not s.finished:
                self._epoch()
        if cfg.train.plateau_patience and not s.finished and s.epoch >= cfg.train.epochs:
            log.warning("the epoch cap train.epochs=%d came before the plateau schedule's end "
                        "(%d of %d LR drops): the selection AP may still be rising",
                        cfg.train.epochs, s.drops, cfg.train.plateau_drops)
        return self.result()

    def result(self) -> TrainedRun:
        """The students of this run as they stand: each with its best (selection-split)
        weights where the run kept them, else its current ones; eval mode."""
        sel, students = self.selection, {}
        sel.device = self.device
        for h in sel.heads:
            m = sel.selected(h)
            if self.cfg.train.channels_last:
                m = m.to(memory_format=torch.channels_last)
            students[h.name] = m.eval()
        return TrainedRun(
            cfg=self.cfg, run_dir=Path(self.run_dir), device=self.device, students=students,
            branches={h.name: -1 if h.branch is None else h.branch for h in sel.heads},
            best_epoch={h.name: sel.best_epoch(h) for h in sel.heads},
            select_metric={h.name: sel.metric(h) for h in sel.heads},
            multi_branch={} if self.plain else self.model.multi_branch_record(),
            flip_pairs=self.spec.flip_pairs, evaluation_loader=self.loaders.evaluation)

    def close(self) -> None:
        """Stop the data workers and the TensorBoard writer; leave the process group."""
        self.loaders.close()
        self.epoch_log.close()
        cleanup(self.dist)
