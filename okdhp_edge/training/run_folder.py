"""A run's folder: created (or reopened on resume) with its resolved config and train.log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from okdhp_edge.config import save_config
from okdhp_edge.manifest import reserve_dir

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def attach_log_file(run_dir: Path) -> None:
    """Append the package's log records to ``run_dir/train.log``."""
    handler = logging.FileHandler(Path(run_dir) / "train.log")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger("okdhp_edge").addHandler(handler)


def reopen_run_dir(run_dir: Optional[Path], is_main: bool) -> Path:
    """The folder of a run to resume: its train.log goes on; a killed writer's temporaries
    are removed (also from a folder refused for having no checkpoint yet)."""
    from okdhp_edge.utils.io import remove_stale_temporaries

    if is_main and run_dir is not None and Path(run_dir).is_dir():
        remove_stale_temporaries(Path(run_dir))
    if run_dir is None or not (Path(run_dir) / "last.pt").is_file():
        raise FileNotFoundError(f"--resume {run_dir}: no last.pt checkpoint there")
    if is_main:
        attach_log_file(Path(run_dir))
    return Path(run_dir)


def new_run_dir(cfg: Any, config_name: Optional[str], run_dir: Optional[Path], dist: Any
                ) -> Path:
    """A new run's folder (``train.out_dir/<name>``, never an existing one), agreed by every
    rank, with the resolved ``config.yaml`` and ``train.log`` (rank 0 writes)."""
    if run_dir is None:
        name = cfg.train.run_name or config_name or "run"
        run_dir = reserve_dir(Path(cfg.train.out_dir), name) if dist.is_main \
            else Path(cfg.train.out_dir) / name
    run_dir = Path(run_dir)
    if dist.enabled:  # every rank must agree on the folder rank 0 picked
        import torch

        obj = [str(run_dir)]
        torch.distributed.broadcast_object_list(obj, src=0)
        run_dir = Path(obj[0])
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        attach_log_file(run_dir)
    return run_dir
