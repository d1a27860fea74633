"""Where a run's epochs are recorded: the log line, TensorBoard (when installed) and
``metrics.jsonl``, rewritten whole from the checkpointed history so that a resumed run never
duplicates a line. Only the main rank writes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

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
