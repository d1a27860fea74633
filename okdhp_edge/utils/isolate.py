"""Work in a process of its own: a service object in a spawned worker, called from the parent.

Every native library the kit drives (torch, ONNX Runtime, OpenVINO, NNCF, LiteRT's runtime
and converter, ExecuTorch, matplotlib) brings its own threads, allocators and copies of
absl, protobuf and XNNPACK. In one address space a crash of any of them ends the whole run
and everything it had measured. A :class:`Worker` holds one such piece of work in a
process started with ``spawn`` (no inherited thread state, no CUDA context), and turns its
death into an exception the parent can file as one row's failure:

- :class:`WorkerDied`: the process ended (a signal, an exit) or a call ran past its
  timeout (the worker is killed), with the stage it was in and the last lines it logged;
- an exception the service raised comes back as itself (or as ``RuntimeError`` with its
  text when it cannot be pickled); what the service logs at WARNING and above is logged
  again by the parent, the rest goes to the worker's log file.

A worker never outlives its parent: the kernel kills it when the parent dies
(``PR_SET_PDEATHSIG``), a watcher thread ends it if that could not be set, and ``close``
(also on ``with`` exit) ends it for good. No torch.
"""

from __future__ import annotations

import ctypes
import faulthandler
import importlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from okdhp_edge.errors import OkdhpError
from okdhp_edge.utils.proc import alive, last_line

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
LOG_TAIL_LINES = 8
CLOSE_WAIT_S = 5.0
_INIT, _CLOSE = "__init__", "__close__"


class WorkerDied(OkdhpError, RuntimeError):
    """A worker process ended (signal, exit) or timed out during ``stage``.

    Attributes:
        stage: what the parent had asked of it (``load``, ``time``, ``convert``...).
        signal: the signal's name (``SIGSEGV``) where a signal ended it, else None.
        exitcode: its exit status where it exited, else None.
        timeout_s: the timeout it ran past (it was killed), else None.
        log_tail: the last lines of its log (faulthandler's traceback among them).
    """

    def __init__(self, stage: str, signal_name: Optional[str] = None,
                 exitcode: Optional[int] = None, timeout_s: Optional[float] = None,
                 log_tail: tuple[str, ...] = ()) -> None:
        self.stage, self.signal, self.exitcode = stage, signal_name, exitcode
        self.timeout_s, self.log_tail = timeout_s, tuple(log_tail)
        super().__init__(self.summary())

    def summary(self) -> str:
        """One line: how it ended, in which stage, and its last log line."""
        if self.timeout_s is not None:
            how = f"worker stopped after its {self.timeout_s:g} s timeout"
        elif self.signal:
            how = f"worker killed by {self.signal}"
        else:
            how = f"worker exited with status {self.exitcode}"
        last = _last_words(self.log_tail)
        return f"{how} during {self.stage}" + (f" ({last[:240]})" if last else "")


def signal_name(exitcode: Optional[int]) -> Optional[str]:
    """``SIGSEGV`` for a process ended by signal 11 (multiprocessing's exitcode -11)."""
    if exitcode is None or exitcode >= 0:
        return None
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def log_tail(path: Optional[Path], lines: int = LOG_TAIL_LINES) -> tuple[str, ...]:
    """The lines of a worker's log that say how it ended: faulthandler's report (the fatal
    error and the innermost frames of the thread that faulted) where there is one, else
    the last ``lines`` lines (() where there is no log)."""
    if path is None or not Path(path).is_file():
        return ()
    with open(path, "rb") as fh:
        fh.seek(max(0, Path(path).stat().st_size - 32768))
        text = fh.read().decode("utf-8", "replace").splitlines()
    fatal = [i for i, ln in enumerate(text) if ln.startswith("Fatal Python error")]
    if fatal:
        block = [ln for ln in text[fatal[-1]:] if ln.strip()]
        return tuple(block[:lines])
    return tuple(text[-lines:])


def _last_words(tail: tuple[str, ...]) -> str:
    """The fatal error and its innermost frame outside Python's standard library (the code
    that called into the fault), or the last non-empty line."""
    if tail and tail[0].startswith("Fatal Python error"):
        import sysconfig

        stdlib = f'File "{sysconfig.get_paths()["stdlib"]}'
        frames = [ln.strip() for ln in tail if ln.strip().startswith("File ")]
        frame = next((f for f in frames if not f.startswith(stdlib)), frames[0] if frames
                     else "")
        return tail[0] + (f" at {frame}" if frame else "")
    return last_line(tail, limit=10_000)


def vm_kb(field: str = "VmHWM", pid: Optional[int] = None) -> Optional[int]:
    """A memory figure of ``/proc/<pid>/status`` in kB (``VmHWM``: the resident high-water
    mark; ``VmRSS``: resident now), or None where /proc lacks it."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def resolve(path: str) -> Any:
    """The object an import path ``package.module:Name`` names."""
    module, _, name = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def import_path(obj: Any) -> str:
    """``module:qualname`` of a class or function (what :func:`resolve` reads back)."""
    return f"{obj.__module__}:{obj.__qualname__}"


# ----------------------------------------------------------------------- the child side


class _Relay(logging.Handler):
    """Keeps the worker's records for the parent to log again: the kit's own warnings, and
    any library's errors (a library's warnings stay in the worker's log)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.name.startswith("okdhp_edge"):
            self.records.append((record.levelno, record.name, record.getMessage()))

    def take(self) -> list[tuple[int, str, str]]:
        out, self.records = self.records, []
        return out


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies; a watcher thread ends it
    where that cannot be asked (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):
        from okdhp_edge.utils.proc import exit_with

        exit_with(parent, every_s=0.5)
    if os.getppid() != parent:  # the parent died before the ask
        os._exit(1)


def _setup_child(parent: int, log_path: Optional[str]) -> _Relay:
    """A worker's process settings: dies with its parent, its own process group (a kill of
    the worker reaches what it starts), SIGINT left to the parent, stdout and stderr (the
    native libraries' too) and faulthandler's tracebacks in its log file."""
    _die_with_parent(parent)
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    faulthandler.enable(all_threads=True)
    relay = _Relay()
    root = logging.getLogger()
    root.handlers[:] = [logging.StreamHandler(sys.stderr), relay]
    root.handlers[0].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: "
                                                    "%(message)s"))
    root.setLevel(logging.INFO)
    return relay


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception type can fail to pickle
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _serve(conn: Any, parent: int, service: str, log_path: Optional[str]) -> None:
    """The worker's loop: build the service on ``__init__``, then call its methods until
    ``__close__`` or the parent's end of the pipe closes."""
    relay = _setup_child(parent, log_path)
    obj: Any = None
    while True:
        try:
            method, args, kwargs = conn.recv()
        except (EOFError, OSError):
            break
        if method == _CLOSE:
            break
        try:
            if method == _INIT:
                obj, value = resolve(service)(*args, **kwargs), None
            else:
                value = getattr(obj, method)(*args, **kwargs)
            reply = ("ok", value)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
            traceback.print_exc()
            reply = ("error", _picklable(exc))
        conn.send((*reply, relay.take()))
    conn.close()  # the work is sent: whatever the libraries' teardown does, it is done


# ----------------------------------------------------------------------- the parent side

LOG_DIR_PREFIX = "okdhp-worker-"  # + the parent's pid: its workers' log folder


def remove_stale_log_dirs() -> list[Path]:
    """Delete the workers' log folders that parents killed before their cleanup left in the
    temporary folder (their pid is gone); a live parent's are left alone."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{LOG_DIR_PREFIX}*-*"):
        owner = folder.name[len(LOG_DIR_PREFIX):].split("-", 1)[0]
        if not owner.isdigit() or alive(int(owner), None):
            continue
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed



class Worker:
    """A service object (``module:Class``, built with ``args``) in a process of its own.

    The process is a fresh interpreter (``python -m okdhp_edge.utils.isolate``), as
    multiprocessing's ``spawn`` would start, but without re-running the caller's main
    module: a user's script without an ``if __name__ == "__main__":`` guard works as
    written. ``call(method, *args, stage=...)`` runs ``method`` there and returns its
    result; see the module for what a death, a timeout or an exception becomes.
    ``timeout_s`` bounds each call (``None``: no bound); ``log_dir`` holds the worker's log
    file (a temporary folder removed on close where none is given)."""

    def __init__(self, service: str, *args: Any, name: str = "worker",
                 timeout_s: Optional[float] = 600.0, log_dir: Optional[Path] = None,
                 **kwargs: Any) -> None:
        from multiprocessing import Pipe

        self.name, self.timeout_s = name, timeout_s
        if log_dir is None:
            remove_stale_log_dirs()
        self._own_dir = None if log_dir else tempfile.mkdtemp(
            prefix=f"{LOG_DIR_PREFIX}{os.getpid()}-")
        folder = Path(log_dir or self._own_dir)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        self.log_path = folder / f"{safe}-{os.getpid()}-{id(self):x}.log"
        self._conn, child = Pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p or os.getcwd() for p in sys.path if p == "" or Path(p).is_dir()))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "okdhp_edge.utils.isolate", str(child.fileno()),
             str(os.getpid()), service, str(self.log_path)],
            pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL)
        child.close()
        self.closed = False
        try:
            self.call(_INIT, *args, stage="start", **kwargs)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, method: str, *args: Any, stage: str, timeout_s: Optional[float] = None,
             **kwargs: Any) -> Any:
        """``method(*args, **kwargs)`` of the service, in the worker."""
        if self.closed:
            raise WorkerDied(stage, exitcode=self.proc.returncode,
                             log_tail=("the worker was closed",))
        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            self._conn.send((method, args, kwargs))
        except (BrokenPipeError, OSError):
            raise self._died(stage) from None
        kind, value, records = self._wait(stage, limit)
        for level, name, message in records:
            logging.getLogger(name).log(level, "%s [%s]", message, self.name)
        if kind == "error":
            raise value
        return value

    def _wait(self, stage: str, limit: Optional[float]) -> tuple[str, Any, list]:
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            try:
                if self._conn.poll(0.1):
                    return self._conn.recv()
            except (EOFError, OSError):
                raise self._died(stage) from None
            if self.proc.poll() is not None:
                if self._conn.poll(0):  # it answered, then ended
                    continue
                raise self._died(stage)
            if deadline is not None and time.monotonic() > deadline:
                self._kill()
                raise WorkerDied(stage, timeout_s=limit, log_tail=log_tail(self.log_path))

    def _died(self, stage: str) -> WorkerDied:
        try:
            code = self.proc.wait(CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:  # still running: it is killed below
            code = None
        err = WorkerDied(stage, signal_name(code), code if code and code > 0 else None,
                         log_tail=log_tail(self.log_path))
        self._kill()
        return err

    def _kill(self) -> None:
        """SIGKILL the worker's process group (it and whatever it started)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        try:
            self.proc.wait(CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:  # in uninterruptible sleep: let it be
            log.warning("worker %s (pid %d) did not end after SIGKILL", self.name,
                        self.proc.pid)
        self._release()

    def _release(self) -> None:
        self.closed = True
        self._conn.close()
        if self._own_dir:
            import shutil

            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def close(self) -> None:
        """Ask the worker to end; kill it if it does not within a few seconds."""
        if self.closed:
            return
        try:
            self._conn.send((_CLOSE, (), {}))
            self.proc.wait(CLOSE_WAIT_S)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):  # killed below
            pass
        self._kill()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def call_isolated(function: Any, *args: Any, stage: str, timeout_s: Optional[float] = 600.0,
                  **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` in a spawned process of its own (``function``: an
    importable function or its ``module:name``); raises :class:`WorkerDied` if that process
    dies or runs past ``timeout_s``."""
    path = function if isinstance(function, str) else import_path(function)
    with Worker(import_path(_Call), path, name=stage, timeout_s=timeout_s) as w:
        return w.call("run", *args, stage=stage, **kwargs)


class _Call:
    """The service of :func:`call_isolated`: one function, called by ``run``."""

    def __init__(self, path: str) -> None:
        self.function = resolve(path)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)


def _main(argv: list[str]) -> None:
    """``python -m okdhp_edge.utils.isolate FD PARENT SERVICE LOG``: a worker's process."""
    from multiprocessing.connection import Connection

    fd, parent, service, log_path = argv
    _serve(Connection(int(fd)), int(parent), service, log_path or None)


if __name__ == "__main__":
    _main(sys.argv[1:])
