"""Where a run's epochs are recorded: the log line, TensorBoard (when installed) and
``metrics.jsonl``, rewritten whole from the checkpointed history so that a resumed run never
duplicates a line. Only the main rank writes."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional

from okdhp_edge.utils.io import atomic_write_text

log = logging.getLogger("okdhp_edge.training.trainer")

STARVED = 0.10  # an epoch that waits on data longer than this share is loader-bound


class EpochLog:
    """The epoch records of one run (``run_dir``), on the main rank only."""

    def __init__(self, run_dir: Path, is_main: bool, epochs: int, workers: int) -> None:
        self.run_dir, self.is_main = Path(run_dir), is_main
        self.epochs, self.workers = epochs, workers
        self._tb: Any = None
        self._tb_tried = False

    def write(self, record: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Log ``record`` (the epoch just ended) and rewrite metrics.jsonl from ``history``."""
        if not self.is_main:
            return
        sel = " ".join(f"{k}={v:.4f}" for k, v in record["select"].items())
        log.info("epoch %d/%d it %d loss %.4e (mse %.3e ens %.3e kl %.3e) %.1f img/s lr %.2e "
                 "data wait %.1f s (%.0f%%) %s", record["epoch"], self.epochs,
                 record["iteration"], record["loss"], record["mse"], record["ens"],
                 record["kl"], record["images_per_s"], record["lr"],
                 record.get("data_wait_s", 0.0), 100 * record.get("data_wait_frac", 0.0), sel)
        if record.get("data_wait_frac", 0.0) > STARVED:
            log.warning("the step waited on data for %.0f%% of the epoch: the loader is the "
                        "limit (data.workers=%d; see the loader estimate at start)",
                        100 * record["data_wait_frac"], self.workers)
        self._tensorboard(record)
        atomic_write_text(self.run_dir / "metrics.jsonl",
                          "".join(json.dumps(r) + "\n" for r in history))

    def _writer(self) -> Optional[Any]:
        """A SummaryWriter in the run folder when tensorboard is installed, else None."""
        if not self._tb_tried:
            self._tb_tried = True
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                self._tb = None
        return self._tb

    def _tensorboard(self, record: dict[str, Any]) -> None:
        tb = self._writer()
        if tb is None:
            return
        for k in ("loss", "mse", "ens", "kl", "images_per_s", "lr"):
            tb.add_scalar(f"train/{k}", record[k], record["iteration"])
        for k, v in record["select"].items():
            tb.add_scalar(f"select/{k}", v, record["iteration"])
        tb.flush()

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class EpochMeter:
    """One epoch's running sums, image rate, loader wait and progress bar."""

    KEYS = ("loss", "mse", "ens", "kl")

    def __init__(self, total: int, start: int, epoch: int, show: bool) -> None:
        from tqdm import tqdm

        self.sums = dict.fromkeys(self.KEYS, 0.0)
        self.n, self.images, self.wait = 0, 0, 0.0
        self.t0 = time.time()
        self.bar = tqdm(total=total, initial=start, leave=False, unit="it",
                        desc=f"epoch {epoch + 1}", disable=not show)

    def add(self, terms: Any, images: int) -> None:
        """A finished step: its loss terms (LossTerms) and the images all ranks saw."""
        self.n, self.images = self.n + 1, self.images + images
        for k, v in zip(self.KEYS, (terms.total, terms.mse, terms.ens, terms.kl)):
            self.sums[k] += float(v.detach())
        rate = self.images / max(time.time() - self.t0, 1e-9)
        self.bar.set_postfix(loss=f"{self.sums['loss'] / self.n:.3e}", img_s=f"{rate:.1f}")
        self.bar.update(1)

    def summary(self, mean: Callable[[float], float], lr: float) -> dict[str, float]:
        """The epoch's record fields (loss terms averaged over ranks by ``mean``)."""
        import torch

        self.bar.close()
        dt = time.time() - self.t0
        out = {k: mean(v / max(self.n, 1)) for k, v in self.sums.items()}
        return {**out, "images_per_s": self.images / max(dt, 1e-9), "lr": lr,
                "epoch_time_s": dt, "data_wait_s": self.wait,
                "data_wait_frac": self.wait / max(dt, 1e-9),
                "threads": torch.get_num_threads()}


def log_setup(trainer: Any) -> None:
    """What a run trains, where and how: one block at its start."""
    import torch

    from okdhp_edge.training.loaders import log_loader_needs

    t, cfg = trainer, trainer.cfg
    log.info("run %s: %s on %s, amp=%s, %d iters/epoch, %d train / %d select persons",
             t.run_dir, cfg.model.name, t.device,
             t.amp_dtype and str(t.amp_dtype).replace("torch.", ""),
             t.iters_per_epoch, len(t.train_set), len(t.select_set))
    if t.dist.enabled:
        log.info("DistributedDataParallel over %d process(es), backend %s, this rank %d",
                 t.dist.world_size, torch.distributed.get_backend(), t.dist.rank)
    log.info("batch %d x %d rank(s), LR %.3g (train.lr %.3g, %s scaling from batch %d), "
             "compile %s, threads %d%s, data workers %d", cfg.train.batch_size,
             t.dist.world_size, t.opt.base_lr, cfg.train.lr, cfg.train.lr_scaling,
             cfg.train.lr_reference_batch, cfg.train.compile, torch.get_num_threads(),
             " (fewer while other processes keep cores busy)" if t.governor else "",
             cfg.data.workers)
    if t.dist.is_main:
        log_loader_needs(t.train_set, cfg.data, t.device.type == "cuda")
