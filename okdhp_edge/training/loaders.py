"""The training and evaluation data loaders of a run: a resumable, sharded epoch sampler,
persistent workers started from a fork server, one thread each, that exit with the trainer,
and the start-up estimate of how many workers the step needs."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
import time
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from okdhp_edge.data.dataset import TopDownDataset, collate_skip_none

log = logging.getLogger("okdhp_edge.training.trainer")


class EpochSampler(Sampler[tuple[int, int]]):
    """Shuffled order that depends only on (seed, epoch); sharded across ranks; can skip
    the samples a resumed run already consumed in this epoch. Yields ``(epoch, index)``
    keys (see ``TopDownDataset.__getitem__``): the epoch reaches persistent data workers
    through the sampler, so one set of workers serves the whole run."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _indices(self) -> list[int]:
        perm = np.random.default_rng((self.seed, 7919, self.epoch)).permutation(self.n).tolist()
        per_rank = math.ceil(self.n / self.world)
        perm += perm[: per_rank * self.world - self.n]
        return perm[self.rank::self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, i) for i in self._indices()[self.skip:]])

    def __len__(self) -> int:
        return math.ceil(self.n / self.world) - self.skip


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """While data workers start, a ``python script.py`` caller's ``__main__`` does not
    name its file: multiprocessing would run the script again in each worker (its fork
    server too) to rebuild ``__main__``, and a script that calls :func:`okdhp_edge.api.train`
    without an ``if __name__ == "__main__":`` guard would start its training again there
    and die. The workers need nothing of it: the datasets, collate and init functions are
    okdhp_edge's. A ``python -m`` caller (a module ``__spec__``) is left as it is."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or getattr(main, "__spec__", None) is not None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


class _Loader(DataLoader):
    """A DataLoader whose workers start without re-running a caller's script."""

    def __iter__(self) -> Any:
        with _main_script_hidden():
            return super().__iter__()


class RunLoaders:
    """The loaders of one run, made once: the training loader and one per evaluated split.
    Their workers persist: where they are spawned (runs under the ablation runner; the
    default on Python >= 3.14 is forkserver) starting them every epoch took a plain hg2
    epoch of the ablation from 3.9 s to 5.3 s, an OKDHP epoch from 9.1 s to 9.7 s."""

    def __init__(self, train_set: TopDownDataset, sampler: EpochSampler, batch_size: int,
                 eval_batch_size: int, workers: int, pin_memory: bool) -> None:
        self.train_set, self.sampler = train_set, sampler
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.workers, self.pin_memory = workers, pin_memory
        self._train: Optional[DataLoader] = None
        self._eval: dict[int, DataLoader] = {}
        self._init = functools.partial(_worker_init, os.getpid())

    def train(self, epoch: int, skip_samples: int) -> DataLoader:
        """The training loader, positioned at ``epoch`` after ``skip_samples``."""
        self.sampler.set_epoch(epoch, skip_samples)
        if self._train is None:
            self._train = _Loader(
                self.train_set, batch_size=self.batch_size, sampler=self.sampler,
                num_workers=self.workers, collate_fn=collate_skip_none, drop_last=True,
                pin_memory=self.pin_memory, persistent_workers=self.workers > 0,
                worker_init_fn=self._init, multiprocessing_context=_context(self.workers))
        return self._train

    def evaluation(self, dataset: TopDownDataset) -> DataLoader:
        """The loader of an evaluated split: one per split, its workers kept between
        validations (the loader holds its dataset, so the id stays that dataset's)."""
        key = id(dataset)
        if key not in self._eval:
            self._eval[key] = _Loader(
                dataset, batch_size=self.eval_batch_size, shuffle=False,
                num_workers=self.workers, collate_fn=collate_skip_none,
                persistent_workers=self.workers > 0, worker_init_fn=self._init,
                multiprocessing_context=_context(self.workers))
        return self._eval[key]

    def close(self) -> None:
        """Drop the loaders (their workers exit)."""
        self._train, self._eval = None, {}


def log_loader_needs(train_set: TopDownDataset, dcfg: Any, cuda: bool,
                     samples: int = 8) -> None:
    """One core's loader rate, measured on a few training samples, and the workers the
    target rate needs (``data.target_rate``; 1000 images/s on CUDA by default)."""
    n = min(samples, len(train_set))
    if n == 0:
        return
    t0 = time.perf_counter()
    for i in range(n):
        train_set[(0, i)]
    rate = n / max(time.perf_counter() - t0, 1e-9)
    target = dcfg.target_rate or (1000.0 if cuda else 0.0)
    if not target:
        log.info("loader: %.0f samples/s per core (%dx%d)", rate, *dcfg.input_size)
        return
    need = math.ceil(target / rate)
    level = logging.WARNING if dcfg.workers < need else logging.INFO
    log.log(level, "loader: %.0f samples/s per core (%dx%d): %d workers feed %.0f images/s "
            "(data.workers=%d)", rate, *dcfg.input_size, need, target, dcfg.workers)


def _context(workers: int) -> Optional[str]:
    """Start data workers from a fork server where there is one: a plain fork of a process
    that has run OpenCV's thread pool can deadlock in the child (seen with data.workers=0
    then 1 in one process), and since the workers persist the one-off start-up is cheap.
    The fork server imports this module (torch, OpenCV, the datasets) before it forks
    anything, so each worker starts with them imported: the server, which has run no
    thread pool, pays the imports once instead of every worker (a train and an eval loader
    of one worker each, 3 tiny epochs after the process had imported them: 2.8-3.5 s to
    1.6-1.7 s on a 2-core EPYC)."""
    import multiprocessing as mp

    if workers <= 0 or "forkserver" not in mp.get_all_start_methods():
        return None
    # "__main__" stays: a class of the user's script in a dataset unpickles in the worker
    mp.get_context("forkserver").set_forkserver_preload(["__main__", __name__])
    return "forkserver"


def _worker_init(trainer_pid: int, _worker_id: int) -> None:
    """Data workers decode and warp on one thread each (no oversubscription of the cores
    the training step uses), and exit on their own once the trainer is gone (a SIGKILL
    runs no clean-up in the trainer)."""
    import cv2

    from okdhp_edge.utils.proc import exit_with

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    exit_with(trainer_pid)
