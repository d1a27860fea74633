"""The graceful stop of a run: SIGINT/SIGTERM ask it to stop after the iteration and write
a checkpoint, within a deadline."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, Callable, Optional

log = logging.getLogger("okdhp_edge.training.trainer")


class StopSignals:
    """While entered, the first SIGINT/SIGTERM sets :attr:`requested` (the run finishes its
    iteration, writes a checkpoint and stops). If the process has not ended ``deadline_s``
    after it (an iteration that does not finish: a machine starved of cores), it says so and
    exits with 128 + the signal; a second signal exits at once. ``on_expire`` names what
    is lost, for the message."""

    def __init__(self, deadline_s: float, where: Callable[[], str] = lambda: "") -> None:
        self.deadline_s, self.where = deadline_s, where
        self.requested = False
        self._old: dict[int, Any] = {}
        self._timer: Optional[threading.Timer] = None

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: the caller's handlers stay
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        if self.requested:
            log.error("signal %d again: exiting now, without a checkpoint (%s)", signum,
                      self.where())
            os._exit(128 + signum)
        self.requested = True
        log.warning("signal %d: stopping after this iteration and writing a checkpoint "
                    "(at most %g s; a second signal exits at once)", signum, self.deadline_s)
        self._timer = threading.Timer(self.deadline_s, self._expire, (signum,))
        self._timer.daemon = True
        self._timer.start()

    def _expire(self, signum: int) -> None:
        log.error("no checkpoint within %g s of signal %d (the iteration did not finish): "
                  "exiting without one (%s)", self.deadline_s, signum, self.where())
        os._exit(128 + signum)
