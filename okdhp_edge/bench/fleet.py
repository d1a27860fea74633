"""``okdhp bench --fleet FLEET.yaml --bundles SET``: one bundle set benched on every device of
a fleet from this machine, brought back as one comparison.

The wheel of this checkout is built once; for each host, in parallel: the bundle set is
copied (reused when that set is already there), the torch-free package installed in a venv
there (reused when the wheel's sha256 matches), ``okdhp bench --bundles`` run there with
this request's options, its report fetched back and verified (strict schema, the set's zoo
and students, the device name); then ``bench compare`` writes the table and chart across
devices, and ``fleet.json`` says what each host came to. A host that is down or fails is one
line in the result; the others go on.

SSH is the system's OpenSSH client (``ssh``), not a Python SSH library: it honours the
user's ``~/.ssh/config``, agent and jump hosts, adds no dependency, and with ``BatchMode``
it never asks for (nor could store) a password: keys only. Host keys are learned on first
contact into ``<out>/known_hosts`` (``StrictHostKeyChecking=accept-new``) and checked after.

Nothing is left running on a host when this command is killed: the remote bench runs in a
process group of its own beside a watcher that reads the SSH channel; when the channel
closes (the local ssh ended, whatever ended it) the watcher stops the group (TERM, then
KILL after 5 s), and the bench's workers die with their parent."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import shlex
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from okdhp_edge.records import Fleet, FleetHost, FleetHostResult, FleetRun, read_record
from okdhp_edge.utils.cli import UsageError
from okdhp_edge.utils.io import atomic_write_bytes, atomic_write_text, sha256_file
from okdhp_edge.utils.proc import last_line

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 10


class HostFailed(Exception):
    """A host's step failed: the stage and one line of why."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage, self.reason = stage, reason


# lines that say a command failed without saying why (tar's summary after its errors)
_NO_REASON = ("Exiting with failure status due to previous errors",)


def _last_line(text: str) -> str:
    """The line that says why: one naming a full disk, else the last that says something."""
    return last_line(text, skip=_NO_REASON, prefer=("No space left on device",),
                     default="no output", limit=1000)


@dataclass
class Remote:
    """One host reached through ``ssh`` (BatchMode: keys only)."""

    host: FleetHost
    known_hosts: Path
    procs: list[subprocess.Popen]  # the ssh clients running, stopped on an interrupt
    lock: threading.Lock

    def argv(self, command: str) -> list[str]:
        h = self.host
        opts = ["-p", str(h.port), "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
                "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=accept-new", "-o", "ServerAliveInterval=15",
                "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR"]
        if h.key:
            opts += ["-i", str(Path(h.key).expanduser()), "-o", "IdentitiesOnly=yes"]
        target = f"{h.user}@{h.address}" if h.user else h.address
        return ["ssh", *opts, target, command]

    def run(self, command: str, stage: str, stdin: Optional[bytes] = None,
            timeout_s: Optional[float] = None, hold: bool = False) -> str:
        """``command`` on the host (a POSIX shell line); its stdout, or HostFailed naming
        ``stage`` and the last line ssh or the command wrote. ``hold``: the channel's input
        stays open until the command ends (a remote watcher reading it learns when this
        side goes away)."""
        proc = subprocess.Popen(self.argv(command), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with self.lock:
            self.procs.append(proc)
        try:
            out, err = _held(proc, timeout_s) if hold else proc.communicate(stdin, timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise HostFailed(stage, f"no answer within {timeout_s:.0f} s") from None
        finally:
            with self.lock:
                self.procs.remove(proc)
        if proc.returncode != 0:
            text = err.decode(errors="replace") or out.decode(errors="replace")
            raise HostFailed(stage, _ssh_reason(proc.returncode, text))
        return out.decode(errors="replace")


def _held(proc: subprocess.Popen, timeout_s: Optional[float]) -> tuple[bytes, bytes]:
    """(stdout, stderr) of ``proc`` read to the end while its stdin stays open."""
    import concurrent.futures as cf

    assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
    with cf.ThreadPoolExecutor(2) as pool:
        out, err = pool.submit(proc.stdout.read), pool.submit(proc.stderr.read)
        proc.wait(timeout_s)
        result = out.result(), err.result()
    proc.stdin.close()
    return result


def _ssh_reason(code: int, text: str) -> str:
    """One line for a failed ssh: the host unreachable, the key refused, or the command's
    own last line (with its exit status)."""
    line = _last_line(text)
    if code == 255:
        return line if line.startswith("ssh:") else f"ssh: {line}"
    return f"{line} (exit {code})"


def _wheel(work: Path) -> Path:
    """The wheel of this checkout, built once (``pip wheel --no-deps``)."""
    import sys

    import okdhp_edge

    src = Path(okdhp_edge.__file__).resolve().parents[1]
    if not (src / "pyproject.toml").is_file():
        raise UsageError(f"bench --fleet builds the wheel from a source checkout; "
                         f"{src} has no pyproject.toml (install with pip install -e)")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                           str(work), str(src)], capture_output=True, text=True)
    wheels = sorted(work.glob("okdhp_edge-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise UsageError(f"building the wheel failed: {_last_line(proc.stderr)}")
    return wheels[0]


def wheel_digest(wheel: Path) -> str:
    """sha256 of a wheel's contents (each member's name and bytes, in name order): two
    builds of the same code differ in their zip timestamps, not here."""
    import hashlib
    import zipfile

    h = hashlib.sha256()
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            h.update(name.encode() + b"\0" + hashlib.sha256(z.read(name)).digest())
    return h.hexdigest()


def _tar(folder: Path) -> bytes:
    """``folder``'s files as an uncompressed tar stream (model files barely compress)."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(folder, arcname=".")
    return buf.getvalue()


@dataclass
class Shipment:
    """What every host receives: the wheel and the bundle set, with their digests (the
    wheel's of its contents: :func:`wheel_digest`)."""

    wheel: Path
    wheel_sha: str
    bundles: Path
    set_tar: bytes
    set_sha: str
    zoo: str
    students: list[str]


def _ship(req: Any, work: Path) -> Shipment:
    from okdhp_edge.runtime.bundle import read_set

    idx = read_set(req.bundles)  # verified here before it travels
    wheel = _wheel(work)
    return Shipment(wheel, wheel_digest(wheel), req.bundles, _tar(req.bundles),
                    sha256_file(req.bundles / "bundles.yaml"), idx.zoo,
                    list(dict.fromkeys(e.student for e in idx.bundles)))


def _q(path: str) -> str:
    return shlex.quote(path)


def _prepare(remote: Remote, ship: Shipment) -> list[str]:
    """The bundle set and the venv on the host, each reused when it is already the one
    shipped; what was reused."""
    h, reused = remote.host, []
    w = h.work
    probe = (f"mkdir -p {_q(w)} && cd {_q(w)} && command -v {_q(h.python)} >/dev/null || "
             f"{{ echo '{h.python}: not found on the host' >&2; exit 127; }}; "
             f"cat bundles/{ship.set_sha[:16]}/.complete venv/.okdhp-wheel 2>/dev/null; true")
    have = remote.run(probe, "connect", timeout_s=60).split()
    d = f"bundles/{ship.set_sha[:16]}"
    if ship.set_sha in have:
        reused.append("bundles")
    else:
        remote.run(f"cd {_q(w)} && rm -rf {d}.partial && mkdir -p {d}.partial && "
                   f"tar xf - -C {d}.partial && rm -rf {d} && mv {d}.partial {d} && "
                   f"echo {ship.set_sha} > {d}/.complete", "bundles", stdin=ship.set_tar)
    if ship.wheel_sha in have:
        reused.append("venv")
        return reused
    name = ship.wheel.name
    pip = " ".join(shlex.quote(a) for a in h.pip)
    remote.run(f"cd {_q(w)} && mkdir -p wheels && cat > wheels/{name}.partial && "
               f"mv wheels/{name}.partial wheels/{name} && rm -rf venv && "
               f"{_q(h.python)} -m venv venv && venv/bin/pip install -q {pip} wheels/{name} "
               f"&& echo {ship.wheel_sha} > venv/.okdhp-wheel", "install",
               stdin=ship.wheel.read_bytes())
    return reused


def _remote_bench(remote: Remote, ship: Shipment, req: Any, run_id: str) -> str:
    """``okdhp bench --bundles`` on the host, stopped there if this side goes away; the
    remote path of its report."""
    h = remote.host
    one = dataclasses.replace(req, fleet=None, bundles=Path(f"bundles/{ship.set_sha[:16]}"),
                              out_root=Path(f"reports/{run_id}"), device_name=h.name)
    argv = " ".join(shlex.quote(a) for a in [*one.argv(), *h.bench])
    # the bench in a group of its own (a simple command put in the background, so that $!
    # is the bench itself: setsid makes it its group's leader); the watcher reads the
    # channel (fd 3: a background list's stdin is /dev/null otherwise) and stops the group
    # when it closes (this command killed): nothing outlives us on the host
    line = (f"cd {_q(h.work)} && mkdir -p reports || exit 1; exec 3<&0; "
            f"setsid venv/bin/okdhp bench {argv} < /dev/null > reports/{run_id}.log 2>&1 "
            f"3<&- & p=$!; (cat <&3 >/dev/null; kill -TERM -- -$p 2>/dev/null; sleep 5; "
            f"kill -KILL -- -$p 2>/dev/null) 2>/dev/null & w=$!; exec 3<&-; wait $p; rc=$?; "
            f"kill $w 2>/dev/null; [ $rc = 0 ] || tail -n 3 reports/{run_id}.log >&2; "
            f"exit $rc")
    remote.run(line, "bench", hold=True)
    return f"reports/{run_id}/{h.name}/{ship.zoo}.json"


def _fetch(remote: Remote, ship: Shipment, rel: str, out: Path, run_id: str
           ) -> tuple[Path, Optional[str]]:
    """The host's report, fetched, verified and written under ``out/<name>/``, and why its
    timings are emulated (None: a device's); the host's copy removed."""
    from okdhp_edge.bench.report import load_report

    h = remote.host
    data = remote.run(f"cd {_q(h.work)} && cat {_q(rel)}", "fetch").encode()
    dest = out / h.name / Path(rel).name
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".fetched")
    tmp.write_bytes(data)
    try:
        rep = load_report(tmp)
    except Exception as exc:  # noqa: BLE001 - a bad report is that host's failure
        raise HostFailed("fetch", f"its report does not read: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    problems = [p for p, bad in (
        (f"zoo {rep.zoo}, not {ship.zoo}", rep.zoo != ship.zoo),
        (f"device {rep.device_id}, not {h.name}", rep.device_id != h.name),
        ("other students", [s.name for s in rep.students] != ship.students),
        ("no row measured", not any(r.status == "ok" for r in rep.rows))) if bad]
    if problems:
        raise HostFailed("fetch", "its report is not this set's: " + "; ".join(problems))
    atomic_write_bytes(dest, data)
    remote.run(f"cd {_q(h.work)} && rm -rf reports/{run_id} reports/{run_id}.log", "fetch")
    return dest, rep.emulated


def _one_host(remote: Remote, ship: Shipment, req: Any, out: Path, run_id: str
              ) -> FleetHostResult:
    t0, reused = time.time(), []
    try:
        reused = _prepare(remote, ship)
        rel = _remote_bench(remote, ship, req, run_id)
        dest, emulated = _fetch(remote, ship, rel, out, run_id)
    except HostFailed as exc:
        log.warning("%s: failed at %s: %s", remote.host.name, exc.stage, exc.reason)
        return FleetHostResult(remote.host.name, "failed", exc.stage,
                               round(time.time() - t0, 1), exc.reason, reused=reused)
    log.info("%s: report fetched (%s reused)", remote.host.name, ", ".join(reused) or "nothing")
    return FleetHostResult(remote.host.name, "ok", "done", round(time.time() - t0, 1),
                           report=str(dest), reused=reused, emulated=emulated)


def run_fleet(req: Any) -> FleetRun:
    """Bench ``req.bundles`` on every host of ``req.fleet`` (see the module); the run's
    record, also written to ``<out_root>/fleet/fleet.json`` beside the compared reports."""
    fleet = read_record(Fleet, req.fleet)
    out = req.out_root / "fleet"
    out.mkdir(parents=True, exist_ok=True)
    t0, run_id = time.time(), time.strftime("%Y%m%d-%H%M%S")
    procs: list[subprocess.Popen] = []
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="okdhp-fleet-") as tmp:
        ship = _ship(req, Path(tmp))
        log.info("fleet: %d hosts; wheel %s, bundle set %s (%.1f MB)", len(fleet.hosts),
                 ship.wheel.name, req.bundles, len(ship.set_tar) / 1e6)
        remotes = [Remote(h, out / "known_hosts", procs, lock) for h in fleet.hosts]
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(remotes))
        try:
            futures = [pool.submit(_one_host, r, ship, req, out, run_id) for r in remotes]
            results = [f.result() for f in futures]
        except BaseException:
            with lock:  # interrupted: end every ssh; the hosts' watchers stop their benches
                for p in procs:
                    p.kill()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    run = FleetRun(FleetRun.VERSION, req.command(), str(req.bundles), ship.wheel_sha,
                   results, round(time.time() - t0, 1))
    _write(out, run)
    return run


def _write(out: Path, run: FleetRun) -> None:
    """``fleet.json``, ``fleet.md`` and, from the reports fetched, ``compare.md`` and its
    chart."""
    import json

    from okdhp_edge.bench.compare import combine
    from okdhp_edge.bench.report import chart, load_report

    atomic_write_text(out / "fleet.json", json.dumps(run.to_dict(), indent=2) + "\n")
    atomic_write_text(out / "fleet.md", "\n".join(fleet_lines(run)) + "\n")
    reports = [load_report(Path(h.report)) for h in run.hosts if h.report]
    if reports:
        chart(reports, out / "compare_pareto.png")
        atomic_write_text(out / "compare.md", combine(reports))


def fleet_lines(run: FleetRun) -> list[str]:
    """One line per host: its report, or where and why it failed."""
    lines = []
    for h in run.hosts:
        if h.status == "ok":
            reuse = f"; reused {', '.join(h.reused)}" if h.reused else ""
            emu = f" (EMULATED: {h.emulated}; not a device's timings)" if h.emulated else ""
            lines.append(f"{h.name}: ok in {h.wall_s:.0f} s{reuse}: {h.report}{emu}")
        else:
            lines.append(f"{h.name}: FAILED at {h.stage} after {h.wall_s:.0f} s: {h.reason}")
    ok = sum(h.status == "ok" for h in run.hosts)
    lines.append(f"{ok} of {len(run.hosts)} hosts benched in {run.wall_s:.0f} s")
    return lines
