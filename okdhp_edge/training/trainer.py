"""The OKDHP trainer: fit / train_one_epoch / validate, resumable and signal-safe."""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from okdhp_edge.config import Config
from okdhp_edge.data.build import build_split
from okdhp_edge.data.dataset import TopDownDataset
from okdhp_edge.data.formats import get_spec
from okdhp_edge.errors import NonFiniteLossError, TrainingInterrupted
from okdhp_edge.evaluation.inference import (
    Predictions,
    engine_heatmap_fn,
    predict_heads,
    score_units,
)
from okdhp_edge.families import zoo_student_names
from okdhp_edge.losses import LossTerms, combine, okdhp_terms, plain_terms
from okdhp_edge.models.registry import (
    create_model,
    is_multi_branch,
    model_kwargs_from_config,
)
from okdhp_edge.models.student import Student
from okdhp_edge.training.checkpoint import (
    TrainState,
    check_resume_keys,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from okdhp_edge.training.device import (
    compiled_terms,
    resolve_amp,
    resolve_device,
    seed_everything,
)
from okdhp_edge.training.distributed import (
    all_reduce_mean,
    barrier,
    broadcast_flag,
    cleanup,
    init_distributed,
)
from okdhp_edge.training.epoch_log import EpochLog
from okdhp_edge.training.loaders import EpochSampler, RunLoaders, log_loader_needs
from okdhp_edge.training.plateau import PlateauSchedule
from okdhp_edge.training.run_folder import new_run_dir, reopen_run_dir
from okdhp_edge.utils.cpu import ThreadGovernor

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- trainer


@dataclass
class Head:
    """One output that is validated: a branch (a student) or the ensemble."""

    name: str
    branch: Optional[int]  # None for the ensemble


@dataclass(frozen=True)
class TrainedRun:
    """What a finished run hands to the zoo writer: its students, with the weights selected
    on the selection split, in eval mode, and what their manifests record of the run."""

    cfg: Any
    run_dir: Path
    device: torch.device
    students: dict[str, Student]  # name -> network, in branch order
    branches: dict[str, int]  # name -> branch index (-1: a plain network)
    best_epoch: dict[str, int]  # name -> epoch its weights were selected at
    select_metric: dict[str, Optional[float]]  # name -> its selection-split metric there
    multi_branch: dict[str, Any]  # the network's branch record ({} for a plain network)
    flip_pairs: list
    evaluation_loader: Callable[[Any], Any]  # dataset -> the run's evaluation batches
    # quantization-aware runs: name -> the student's int8 program in PyTorch, and what the
    # manifests record of the fine-tuning ({from_run, recipe})
    quantized: dict[str, Any] = field(default_factory=dict)
    qat: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Trains the configured model and writes the run folder.

    Run folder: ``config.yaml`` (resolved), ``last.pt`` (atomic, every epoch and on
    SIGINT/SIGTERM), ``best_students.pt`` (per branch, best on the selection split),
    ``metrics.jsonl`` (one line per epoch), ``train.log``.
    """

    def __init__(self, cfg: Config, run_dir: Optional[Path] = None, resume: bool = False,
                 config_name: str = "") -> None:
        self.cfg = cfg
        self.dist = init_distributed(resolve_device(cfg.train.device).type)
        self.device = resolve_device(cfg.train.device)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.amp_dtype = resolve_amp(cfg.train.amp, self.device)
        self.config_name = config_name
        self.governor = _thread_governor(cfg.train.threads, self.device, self.dist.enabled,
                                         cfg.train.compile)
        seed_everything(cfg.train.seed + self.dist.rank, cfg.train.deterministic, self.device)
        self.spec = get_spec(cfg.data.dataset)
        self.state = TrainState()
        self._stop = False
        self._saved_at = time.monotonic()
        self.plain = not is_multi_branch(cfg.model.name)
        ck = None
        if resume and run_dir is not None and (Path(run_dir) / "last.pt").is_file():
            ck = load_checkpoint(Path(run_dir) / "last.pt", self.device)  # checked first:
            check_resume_keys(ck, Path(run_dir) / "last.pt")  # before any data is read
        self._build()  # before the run folder: a run that cannot start leaves none behind
        self.run_dir = self._make_run_dir(run_dir, resume)
        self.epoch_log = EpochLog(self.run_dir, self.dist.is_main, cfg.train.epochs,
                                  cfg.data.workers)
        if ck is not None:
            self._load(ck)

    # ---------------------------------------------------------------- setup
    def _make_run_dir(self, run_dir: Optional[Path], resume: bool) -> Path:
        if resume:
            return reopen_run_dir(run_dir, self.dist.is_main)
        return new_run_dir(self.cfg, self.config_name, run_dir, self.dist)

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
        self.base_lr = scaled_lr(cfg.train, self.dist.world_size)
        compiled = cfg.train.compile != "off"
        # a compiled optimizer step reads the LR as a tensor: a Python float would be baked
        # into the graph and recompile it at every scheduler step
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), weight_decay=cfg.train.weight_decay,
            lr=torch.tensor(self.base_lr, device=self.device) if compiled else self.base_lr,
            fused=self.device.type == "cuda" or None)
        self._terms_fn = compiled_terms(self._terms, cfg.train.compile, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        use_scaler = self.amp_dtype == torch.float16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        # the grad scaler steps the optimizer itself (eagerly); otherwise the step compiles
        self._opt_step = torch.compile(self.optimizer.step) if compiled and not use_scaler \
            else None
        self.heads = self._heads()
        self.plateau = PlateauSchedule(cfg.train)
        self.best_states: dict[str, dict[str, torch.Tensor]] = {}
        self._units: dict[str, str] = {}  # the last validation's per-image results

    def _create_model(self) -> torch.nn.Module:
        """The network this run trains (CPU, before the run folder exists)."""
        cfg = self.cfg
        model = create_model(cfg.model.name,
                             **model_kwargs_from_config(cfg.model, self.spec.num_joints))
        if cfg.model.encoder_checkpoint:
            if not hasattr(model, "encoder"):
                raise ValueError(f"model.encoder_checkpoint: model '{cfg.model.name}' has no "
                                 "encoder (set it for light and okdhp_light)")
            from okdhp_edge.models.encoders import load_encoder_checkpoint

            load_encoder_checkpoint(model.encoder, cfg.model.encoder_checkpoint)
        return model

    def _heads(self) -> list[Head]:
        if self.plain:
            return [Head(self.model.short_name(), None)]
        names = zoo_student_names(self.model.branch_names())
        heads = [Head(nm, i) for i, nm in enumerate(names)]
        return heads + [Head("ensemble", None)]

    def _lr_factor(self, it: int) -> float:
        cfg = self.cfg.train
        epoch = it / max(1, self.iters_per_epoch)
        drops = self.state.drops if cfg.plateau_patience else sum(
            epoch >= s for s in cfg.lr_steps)
        f = cfg.lr_factor ** drops
        if cfg.warmup_iters and it < cfg.warmup_iters:
            f *= (it + 1) / cfg.warmup_iters
        return f

    # ---------------------------------------------------------------- checkpoints
    def _checkpoint(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                **self.state.to_checkpoint(), "rng": rng_state(),
                "config": json.dumps(_cfg_dict(self.cfg))}

    def save(self) -> None:
        if self.dist.is_main:
            save_checkpoint(self.run_dir / "last.pt", self._checkpoint())
        self._saved_at = time.monotonic()

    def _save_if_due(self) -> None:
        """A mid-epoch checkpoint once ``train.checkpoint_minutes`` have passed since the
        last one (the same as SIGTERM writes: a resumed run continues from this iteration)."""
        every = self.cfg.train.checkpoint_minutes * 60
        if every and time.monotonic() - self._saved_at >= every:
            self.save()

    def _load(self, ck: dict[str, Any]) -> None:
        if json.loads(ck["config"]) != _cfg_dict(self.cfg):
            log.warning("resuming with a config that differs from the checkpoint's")
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])
        self.state = TrainState.from_checkpoint(ck)
        set_rng_state(ck["rng"])
        best = self.run_dir / "best_students.pt"
        if best.is_file():
            self.best_states = load_checkpoint(best)
        log.info("resumed %s at epoch %d, iteration %d", self.run_dir, self.state.epoch,
                 self.state.iteration)

    # ---------------------------------------------------------------- training
    def _install_signals(self) -> dict:
        def handler(signum, frame):  # noqa: ARG001
            log.warning("signal %d: stopping after this iteration and writing a checkpoint",
                        signum)
            self._stop = True

        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return old

    def _to_device(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        x = torch.from_numpy(batch["image"]).to(self.device, non_blocking=True)
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t = torch.from_numpy(batch["target"]).to(self.device, non_blocking=True)
        w = torch.from_numpy(batch["target_weight"]).to(self.device, non_blocking=True)
        return x, t, w

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
        from tqdm import tqdm

        s, bs = self.state, self.cfg.train.batch_size
        self.net.train()
        start_iter = s.iter_in_epoch
        loader = self.loaders.train(epoch, start_iter * bs)
        sums = {"loss": 0.0, "mse": 0.0, "ens": 0.0, "kl": 0.0}
        n, images, t0, wait = 0, 0, time.time(), 0.0
        bar = tqdm(total=self.iters_per_epoch, initial=start_iter, desc=f"epoch {epoch + 1}",
                   disable=not self.dist.is_main, leave=False, unit="it")
        batches = iter(loader)
        while True:
            t_wait = time.perf_counter()
            batch = next(batches, None)  # the time the step waits on the loader
            wait += time.perf_counter() - t_wait
            if batch is None or s.iter_in_epoch >= self.iters_per_epoch:
                break
            s.skipped_images += batch["skipped"]
            if "image" not in batch:
                continue
            x, t, w = self._to_device(batch)
            terms = self._step(x, t, w, epoch)
            s.iteration += 1
            s.iter_in_epoch += 1
            n += 1
            images += x.shape[0] * self.dist.world_size
            for k, v in zip(sums, (terms.total, terms.mse, terms.ens, terms.kl)):
                sums[k] += float(v.detach())
            rate = images / max(time.time() - t0, 1e-9)
            bar.set_postfix(loss=f"{sums['loss'] / n:.3e}", img_s=f"{rate:.1f}")
            bar.update(1)
            if broadcast_flag(self._stop, self.dist):
                break
            self._save_if_due()
            self._govern_threads()
        bar.close()
        dt = time.time() - t0
        s.wall += dt
        out = {k: all_reduce_mean(v / max(n, 1), self.dist) for k, v in sums.items()}
        out.update(images_per_s=images / max(dt, 1e-9),
                   lr=float(self.optimizer.param_groups[0]["lr"]), epoch_time_s=dt,
                   data_wait_s=wait, data_wait_frac=wait / max(dt, 1e-9),
                   threads=torch.get_num_threads())
        return out

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
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms.total).backward()
        if self._opt_step is not None:
            self._opt_step()
        else:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
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
    @torch.no_grad()
    def head_predictions(self, dataset: TopDownDataset, flip: bool
                         ) -> dict[str, Predictions]:
        """Decoded predictions of every head of the training network on ``dataset`` (eval
        mode, fp32)."""
        was = self.model.training
        self.model.eval()
        try:
            engine = lambda images: self._head_heatmaps(  # noqa: E731
                torch.from_numpy(images).to(self.device))
            heads_fn = engine_heatmap_fn(engine, dataset.flip_index if flip else None)
            return predict_heads(dataset, heads_fn, batches=self.loaders.evaluation(dataset))
        finally:
            self.model.train(was)

    def _head_heatmaps(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.model(x)
        if self.plain:
            return {self.heads[0].name: out.heatmap.float().cpu().numpy()}
        hms = {h.name: out.branch_heatmaps[h.branch].float().cpu().numpy()
               for h in self.heads if h.branch is not None}
        hms["ensemble"] = out.ensemble.float().cpu().numpy()
        return hms

    def validate(self) -> dict[str, float]:
        """Selection-split metric of every head (rank 0 computes, all ranks wait)."""
        res: dict[str, float] = {}
        if self.dist.is_main:
            ds = self.select_set
            preds = self.head_predictions(ds, self.cfg.eval.flip_test)
            self._units = {}
            for name, p in preds.items():
                r, units = score_units(ds, p, self.cfg.eval.rescore_thr,
                                       self.cfg.eval.oks_nms_thr, ds.headboxes)
                res[name] = float(r["value"])
                if units is not None:
                    self._units[name] = units.encode()
        barrier(self.dist)
        return res

    def _update_best(self, metrics: dict[str, float], epoch: int) -> None:
        s = self.state
        improved = False
        for h in self.heads:
            if h.name == "ensemble" or h.name not in metrics:
                continue
            if metrics[h.name] > s.best.get(h.name, -math.inf):
                s.best[h.name], s.best_epoch[h.name] = metrics[h.name], epoch
                if h.name in self._units:
                    s.best_units[h.name] = self._units[h.name]
                self.best_states[h.name] = self._snapshot(h)
                improved = True
        if improved and self.dist.is_main:
            save_checkpoint(self.run_dir / "best_students.pt", self.best_states)

    def _plateau(self, metrics: dict[str, float]) -> str:
        """The plateau schedule's verdict after a validation: "", "drop" or "stop".

        Decided on rank 0 (the only one with metrics) and agreed by every rank.
        """
        cfg, s = self.cfg.train, self.state
        verdict = ""
        if self.dist.is_main:
            students = [h.name for h in self.heads if h.name != "ensemble"]
            verdict = self.plateau.verdict(s, metrics, students)
        if broadcast_flag(verdict == "drop", self.dist):
            s.drops, s.stale = s.drops + 1, 0
            for group in self.optimizer.param_groups:  # from the next iteration on
                set_lr(group, group["initial_lr"] * self._lr_factor(s.iteration))
            log.info("plateau: no student gained %.4g selection AP in %d validations; LR drop "
                     "%d of %d, LR now %.2e", cfg.plateau_min_delta, cfg.plateau_patience,
                     s.drops, cfg.plateau_drops, float(self.optimizer.param_groups[0]["lr"]))
            return "drop"
        if broadcast_flag(verdict == "stop", self.dist):
            s.finished = self.plateau.finished_message(s)
            log.info("%s; stopping at epoch %d, iteration %d", s.finished, s.epoch, s.iteration)
            return "stop"
        return ""

    def _snapshot(self, head: Head) -> dict[str, torch.Tensor]:
        """What is kept of a head at its best epoch (CPU copies): its student's weights."""
        return {k: v.detach().cpu().clone() for k, v in self.student(head).state_dict().items()}

    def _selected(self, head: Head, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        """The student of ``head`` with the weights :meth:`_snapshot` kept."""
        m = self.student(head)
        m = create_model(m.family, num_joints=m.num_joints, **m.arch()).to(self.device)
        m.load_state_dict(state)
        return m

    def student(self, head: Head) -> Student:
        """The plain network (a registered student family) a head deploys as (a copy for
        branches)."""
        if self.plain:
            return self.model
        return self.model.student(head.branch)

    # ---------------------------------------------------------------- fit
    def _log_setup(self) -> None:
        """What this run trains, where and how: one block at its start."""
        cfg = self.cfg
        log.info("run %s: %s on %s, amp=%s, %d iters/epoch, %d train / %d select persons",
                 self.run_dir, cfg.model.name, self.device,
                 self.amp_dtype and str(self.amp_dtype).replace("torch.", ""),
                 self.iters_per_epoch, len(self.train_set), len(self.select_set))
        if self.dist.enabled:
            log.info("DistributedDataParallel over %d process(es), backend %s, this rank %d",
                     self.dist.world_size, torch.distributed.get_backend(), self.dist.rank)
        log.info("batch %d x %d rank(s), LR %.3g (train.lr %.3g, %s scaling from batch %d), "
                 "compile %s, threads %d%s, data workers %d", cfg.train.batch_size,
                 self.dist.world_size, self.base_lr, cfg.train.lr, cfg.train.lr_scaling,
                 cfg.train.lr_reference_batch, cfg.train.compile, torch.get_num_threads(),
                 " (fewer while other processes keep cores busy)" if self.governor else "",
                 cfg.data.workers)
        if self.dist.is_main:
            log_loader_needs(self.train_set, self.cfg.data, self.device.type == "cuda")

    def _epoch(self) -> dict[str, Any]:
        """Train one epoch, validate when due (best students, plateau schedule), checkpoint;
        returns the epoch's record. Raises TrainingInterrupted after a stop signal."""
        cfg, s = self.cfg, self.state
        epoch = s.epoch
        stats = self.train_one_epoch(epoch)
        if self._stop:
            self.save()
            raise TrainingInterrupted(f"stopped at epoch {epoch + 1}, iteration {s.iteration}; "
                                      f"resume with --resume {self.run_dir}")
        s.epoch, s.iter_in_epoch = epoch + 1, 0
        metrics, plateau = {}, ""
        if (epoch + 1) % cfg.train.val_every == 0 or epoch + 1 == cfg.train.epochs:
            metrics = self.validate()  # on rank 0; {} on the others
            self._update_best(metrics, epoch + 1)
            if cfg.train.plateau_patience:
                plateau = self._plateau(metrics)
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
        old = self._install_signals()
        self._log_setup()
        try:
            while s.epoch < cfg.train.epochs and not s.finished:
                self._epoch()
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
        if cfg.train.plateau_patience and not s.finished and s.epoch >= cfg.train.epochs:
            log.warning("the epoch cap train.epochs=%d came before the plateau schedule's end "
                        "(%d of %d LR drops): the selection AP may still be rising",
                        cfg.train.epochs, s.drops, cfg.train.plateau_drops)
        return self.result()

    def result(self) -> TrainedRun:
        """The students of this run as they stand: each with its best (selection-split)
        weights where the run kept them, else its current ones; eval mode."""
        heads = [h for h in self.heads if h.name != "ensemble"]
        students: dict[str, Student] = {}
        for h in heads:
            m = (self._selected(h, self.best_states[h.name]) if h.name in self.best_states
                 else self.student(h))
            if self.cfg.train.channels_last:
                m = m.to(memory_format=torch.channels_last)
            students[h.name] = m.eval()
        return TrainedRun(
            cfg=self.cfg, run_dir=Path(self.run_dir), device=self.device, students=students,
            branches={h.name: -1 if h.branch is None else h.branch for h in heads},
            best_epoch={h.name: int(self.state.best_epoch.get(h.name, self.state.epoch))
                        for h in heads},
            select_metric={h.name: self.state.best.get(h.name) for h in heads},
            multi_branch={} if self.plain else self.model.multi_branch_record(),
            flip_pairs=self.spec.flip_pairs, evaluation_loader=self.loaders.evaluation)

    def close(self) -> None:
        """Stop the data workers and the TensorBoard writer; leave the process group."""
        self.loaders.close()
        self.epoch_log.close()
        cleanup(self.dist)


def _thread_governor(threads: int, device: torch.device, distributed: bool,
                     compile_mode: str = "off") -> Optional[ThreadGovernor]:
    """Pin ``train.threads`` when set; else a governor for a single CPU process (None on
    CUDA, where the host threads do not bound the step, and for distributed CPU runs). A
    compiled CPU step keeps one thread count: a change would recompile it (measured: a
    compiled quickstart iteration took 254 s after the governor dropped to 1 thread)."""
    if threads > 0:
        torch.set_num_threads(threads)
        return None
    if device.type != "cpu" or distributed:
        return None
    if compile_mode != "off":
        log.info("train.compile=%s: the thread count stays at %d while training (a change "
                 "would recompile the step); set train.threads to choose it", compile_mode,
                 torch.get_num_threads())
        return None
    return ThreadGovernor(torch.get_num_threads())


def scaled_lr(tcfg: Any, world_size: int = 1) -> float:
    """``train.lr`` scaled from ``lr_reference_batch`` to the batch of one step over all
    ranks: linearly (Goyal et al. 2017), by the square root, or not at all."""
    ratio = tcfg.batch_size * world_size / tcfg.lr_reference_batch
    factor = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[tcfg.lr_scaling]
    return tcfg.lr * factor


def set_lr(group: dict[str, Any], value: Any) -> None:
    """Set a param group's LR in place where it is a tensor (a compiled optimizer step
    holds on to that tensor), else replace it."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(float(value))
    else:
        group["lr"] = float(value)


def _cfg_dict(cfg: Config) -> dict[str, Any]:
    from okdhp_edge.config import config_to_dict

    return config_to_dict(cfg)

