"""Child processes that end with the process they work for, and what a process said last."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Iterable, Optional

log = logging.getLogger(__name__)


def start_time(pid: int) -> Optional[str]:
    """The kernel's start time of ``pid`` (to tell it from a later process with the same
    pid), or None where /proc is not there or the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def alive(pid: int, started: Optional[str]) -> bool:
    """Whether process ``pid`` (started at ``started``) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or start_time(pid) == started


def exit_with(pid: int, every_s: float = 1.0,
              on_exit: Optional[Callable[[], None]] = None) -> None:
    """Watch ``pid`` from a daemon thread and end this process (``on_exit``, default
    ``os._exit(0)``) within ``every_s`` once it is gone. For data workers started from a
    fork server: their parent is the server, not the trainer, so PyTorch's own check of the
    parent never fires when the trainer is killed, and server and workers would wait on
    each other forever."""
    started = start_time(pid)

    def watch() -> None:
        while alive(pid, started):
            time.sleep(every_s)
        (on_exit or (lambda: os._exit(0)))()

    threading.Thread(target=watch, daemon=True, name=f"exit-with-{pid}").start()


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process under it (the tree read first, then all killed)."""
    import signal

    from okdhp_edge.utils.cpu import process_tree

    for p in process_tree(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def last_line(text: str | Iterable[str], *, skip: Iterable[str] = (),
              prefer: Iterable[str] = (), default: str = "", limit: int = 200) -> str:
    """The line of a process's output (a text or its lines) that says why it ended: the
    last non-empty one containing none of ``skip``, or the last containing one of
    ``prefer`` if any does (a full disk named before the lines it caused); ``default`` if
    none; cut to ``limit`` characters."""
    lines = text.splitlines() if isinstance(text, str) else list(text)
    skip, prefer = tuple(skip), tuple(prefer)
    said = [ln.strip() for ln in lines if ln.strip() and not any(s in ln for s in skip)]
    preferred = [ln for ln in said if any(p in ln for p in prefer)]
    return (preferred or said or [default])[-1][:limit]
