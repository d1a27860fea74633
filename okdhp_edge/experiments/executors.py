"""Where an experiment's runs train: this machine's processes (``local``, the default), or
jobs through submitit (``slurm``: a SLURM cluster; ``submitit-local``: the same job
protocol in local processes, to try a sweep before a cluster).

submitit (facebookincubator/submitit) is a small pure-Python package that pickles a call,
submits it with ``sbatch`` and reads its result back; Ray would bring a cluster runtime
(about 545 MB and 9 processes for ``ray.init()`` here, advertising a non-loopback address)
to do what one ``sbatch`` per run does. A job is keyed by its run (its folder under the work
dir), writes its logs under ``<work_dir>/jobs/<job id>_*`` (named in the run's result), and
a job that ends without a result (an allocation's time limit, a node lost, a kill) is
submitted again up to ``retries`` times: the run resumes from its last checkpoint
(``last.pt``), as a local run does after a stop."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from okdhp_edge.grammar import option
from okdhp_edge.utils.cli import UsageError
from okdhp_edge.utils.proc import kill_tree, last_line

log = logging.getLogger("okdhp_edge.experiments")
EXECUTORS = ("local", "slurm", "submitit-local")
POLL_S = 2.0


@dataclass(frozen=True)
class Scheduler:
    """Where the runs go and, for a scheduler, what each job asks of it."""

    executor: str = option("local", "where runs train: local (this machine's processes, "
                           "--jobs at a time), slurm (a job per run through submitit), or "
                           "submitit-local (submitit's protocol in local processes)",
                           choices=EXECUTORS)
    partition: Optional[str] = option(None, "SLURM partition (default: the cluster's)")
    time_min: int = option(24 * 60, "a job's time limit, minutes (a run past it is "
                           "resubmitted and resumes)", minimum=1, maximum=60 * 24 * 30)
    gpus_per_task: int = option(0, "GPUs each job asks for", minimum=0, maximum=64)
    cpus_per_task: int = option(0, "CPUs each job asks for (0: the spec's train.threads, "
                                "or 1)", minimum=0, maximum=1024)
    mem_gb: Optional[float] = option(None, "memory each job asks for, GB", minimum=0,
                                     above=True)
    retries: int = option(2, "times a job that ended without a result is submitted again "
                          "(it resumes from its checkpoint)", minimum=0, maximum=20)

    @property
    def pooled(self) -> bool:
        """Runs in this machine's process pool (the path with no submitit at all)."""
        return self.executor == "local"


@dataclass
class Job:
    """One run submitted through submitit: its key, the call, its job and the tries left."""

    key: str
    call: tuple[Callable[..., Any], tuple]
    job: Any
    retries: int
    tries: int = 1

    def info(self) -> dict[str, Any]:
        """Where its logs are (the run's result records it: reachable from the report)."""
        paths = self.job.paths
        return {"executor_job_id": str(self.job.job_id), "tries": self.tries,
                "stdout": str(paths.stdout), "stderr": str(paths.stderr)}


class SubmititPool:
    """Runs as submitit jobs; a job that ends without a result is submitted again. Used as
    a context manager: leaving it by an exception (a refusal, Ctrl-C) cancels every job
    that has no result yet."""

    def __init__(self, sched: Scheduler, folder: Path, cpus: int) -> None:
        try:
            import submitit
        except ImportError:
            raise UsageError(f"executor {sched.executor} needs submitit: pip install "
                             "'okdhp_edge[cluster]'") from None
        if sched.executor == "slurm" and shutil.which("sbatch") is None:
            raise UsageError("executor slurm: no sbatch on PATH (run this on a SLURM "
                             "login node, or use --executor local)")
        cluster = "slurm" if sched.executor == "slurm" else "local"
        self.ex = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
        params: dict[str, Any] = {"timeout_min": sched.time_min, "name": "okdhp",
                                  "cpus_per_task": sched.cpus_per_task or cpus,
                                  "tasks_per_node": 1, "nodes": 1}
        if sched.executor == "slurm":
            params.update(slurm_partition=sched.partition,
                          slurm_gpus_per_task=sched.gpus_per_task or None,
                          mem_gb=sched.mem_gb)
        self.ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
        self.sched, self.slurm = sched, cluster == "slurm"
        self._gone: dict[str, int] = {}
        self._open: dict[str, Job] = {}  # submitted, no result taken yet

    def __enter__(self) -> SubmititPool:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is not None:
            self.cancel(list(self._open.values()))

    def submit(self, key: str, fn: Callable[..., Any], *args: Any) -> Job:
        job = Job(key, (fn, args), self.ex.submit(fn, *args), self.sched.retries)
        log.info("%s: submitted as job %s", key, job.job.job_id)
        self._open[key] = job
        return job

    def wait_any(self, jobs: list[Job]) -> list[tuple[Job, Any]]:
        """Block until at least one job has its result; (job, result) of those. A job
        that ended without one is submitted again (its run resumes), or, out of retries,
        raises UsageError naming its logs."""
        while True:
            done = []
            for j in jobs:
                if self._ended(j):
                    res = self._result(j)
                    if res is not None:
                        done.append((j, res))
            if done:
                for j, _ in done:
                    self._open.pop(j.key, None)
                return done
            time.sleep(POLL_S)

    def _ended(self, j: Job) -> bool:
        if j.job.paths.result_pickle.exists():
            return True
        if not self.slurm:
            return j.job.done()
        # without slurmdbd, sacct knows nothing: a job gone from the queue has ended
        out = subprocess.run(["squeue", "-h", "-j", str(j.job.job_id), "-o", "%T"],
                             capture_output=True, text=True)
        gone = out.returncode != 0 or not out.stdout.strip()
        self._gone[j.key] = self._gone.get(j.key, 0) + 1 if gone else 0
        return self._gone[j.key] >= 2  # twice: a job between states is not mistaken

    def wait_all(self, jobs: list[Job]) -> dict[str, Any]:
        """Every job's result by its key (see :meth:`wait_any`)."""
        left, out = list(jobs), {}
        while left:
            for j, res in self.wait_any(left):
                out[j.key] = res
                left.remove(j)
        return out

    def _result(self, j: Job) -> Optional[Any]:
        """The job's result, or None after submitting it again. (Without a result file the
        job is not asked for one: submitit would wait on sacct, which knows nothing without
        slurmdbd.)"""
        if not j.job.paths.result_pickle.exists():
            return self._again(j, f"no result; its log ends: {_tail(j.job.paths.stderr)}")
        try:
            return j.job.result()
        except Exception as exc:  # noqa: BLE001 - the run raised in the job
            return self._again(j, last_line(str(exc), default=type(exc).__name__))

    def _again(self, j: Job, why: str) -> None:
        """Submit ``j`` again (its run resumes from its checkpoint), or, out of retries,
        UsageError naming its logs."""
        if j.tries > j.retries:
            raise UsageError(f"{j.key}: job {j.job.job_id} ended without a result {j.tries} "
                             f"times ({why}); logs: {j.job.paths.stderr}")
        log.warning("%s: job %s ended without a result (%s): submitted again, the run "
                    "resumes from its checkpoint (try %d of %d)", j.key, j.job.job_id, why,
                    j.tries + 1, j.retries + 1)
        fn, args = j.call
        j.job, j.tries = self.ex.submit(fn, *args), j.tries + 1
        self._gone.pop(j.key, None)
        return None

    def cancel(self, jobs: list[Job], grace_s: float = 2.0) -> None:
        """Cancel ``jobs``. A local job still running after ``grace_s`` is killed with
        every process under it: submitit ends it with SIGINT, which a process started with
        SIGINT ignored (a background job of a shell script, a test worker) ignores too."""
        for j in jobs:
            try:
                j.job.cancel(check=False)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        local = [p for j in jobs if not self.slurm
                 and (p := getattr(j.job, "_process", None)) is not None]  # noqa: SLF001
        deadline = time.monotonic() + grace_s
        while any(p.poll() is None for p in local) and time.monotonic() < deadline:
            time.sleep(0.1)
        for proc in local:
            if proc.poll() is None:
                kill_tree(proc.pid)
                proc.wait()


def _tail(path: Path) -> str:
    """The last line a job wrote to ``path`` (its stderr: submitit's own lines; the run's
    progress goes to its progress.log)."""
    try:
        return last_line(path.read_text(errors="replace"), default="empty log")
    except OSError:
        return "no log"
