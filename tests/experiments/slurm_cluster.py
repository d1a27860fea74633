"""A single-node SLURM for the sweep tests, from Debian's ``slurm-wlm`` and ``munge``
(apt-get install slurm-wlm munge), started and stopped by the fixture.

Loopback only: slurmctld and slurmd bind every address, so they run in a network namespace
of their own whose only interface is ``lo``; the commands that talk to them (sbatch, squeue,
the ablation that calls them) enter it through :attr:`SlurmCluster.enter`. munge speaks over
a Unix socket in the test's folder; the configuration is ``SLURM_CONF`` there, nothing is
written under /etc. No accounting database (slurmdbd): the executor tells a job's end by
its leaving the queue."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "unshare", "nsenter")


@dataclass(frozen=True)
class SlurmCluster:
    conf: Path
    anchor: int  # the process holding the network namespace

    @property
    def enter(self) -> list[str]:
        """The prefix that runs a command inside the cluster's network namespace."""
        return ["nsenter", f"--net=/proc/{self.anchor}/ns/net", "--"]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str) -> str:
        return subprocess.run([*self.enter, *argv], env=self.env, capture_output=True,
                              text=True, check=True, timeout=60).stdout


def _conf(d: Path) -> str:
    return f"""ClusterName=okdhp
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
NodeName=localhost NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def single_node_slurm(d: Path) -> Iterator[SlurmCluster]:
    """Start munge, slurmctld and slurmd in a loopback-only network namespace; yield the
    cluster; stop every process it started."""
    missing = [n for n in DAEMONS if shutil.which(n) is None and
               not Path(f"/usr/sbin/{n}").is_file()]
    if missing:
        pytest.skip(f"no {', '.join(missing)}: apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("a SLURM of its own needs root here (its daemons run as SlurmUser root)")
    for sub in ("munge", "state", "spool"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(d / "munge", 0o700)
    subprocess.run(["mungekey", "-c", "-k", str(d / "munge" / "munge.key")], check=True)
    (d / "slurm.conf").write_text(_conf(d))
    anchor = subprocess.Popen(["unshare", "--net", "--", "sleep", "infinity"])
    started = []
    try:
        cluster = SlurmCluster(d / "slurm.conf", anchor.pid)
        time.sleep(0.2)
        cluster.run("ip", "link", "set", "lo", "up")
        # a second address on lo, routing nowhere: getaddrinfo (AI_ADDRCONFIG) finds no
        # address for "localhost" where only 127.0.0.1 is configured
        cluster.run("ip", "addr", "add", "10.254.254.1/32", "dev", "lo")
        m = d / "munge"
        subprocess.run([*cluster.enter, "munged", f"--socket={m}/munge.sock",
                        f"--key-file={m}/munge.key", f"--pid-file={m}/munged.pid",
                        f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed",
                        "--force"], check=True)
        started.append(m / "munged.pid")
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([*cluster.enter, daemon, "-f", str(cluster.conf)], env=cluster.env,
                           check=True, timeout=60)
            started.append(d / f"{daemon}.pid")
            time.sleep(0.5)
        _wait_idle(cluster)
        yield cluster
    finally:
        for pid_file in reversed(started):
            _stop(pid_file)
        anchor.kill()
        anchor.wait()


def _wait_idle(cluster: SlurmCluster) -> None:
    for _ in range(60):
        try:
            if "idle" in cluster.run("sinfo", "-h", "-o", "%T"):
                return
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the SLURM node did not become idle in 30 s")


def _stop(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
