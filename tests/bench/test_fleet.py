"""``okdhp bench --fleet``: a bundle set benched on SSH hosts from one command, against a
real OpenSSH server on 127.0.0.1 (tests/bench/sshd.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from okdhp_edge.bench.report import load_report
from tests.bench.arm_guest import QEMU_CPU, arm_guest
from tests.bench.sshd import fleet_host, free_port, start_sshd
from tests.conftest import okdhp

FAST = ["--threads", "1", "--min-iters", "10", "--min-time", "0.05", "--warmup-time", "0.05",
        "--rounds", "2", "--batch", "1", "--no-accuracy"]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    yield from start_sshd(tmp_path_factory.mktemp("sshd"))


@pytest.fixture(scope="module")
def bundle_set(tiny_zoo, tmp_path_factory):
    from okdhp_edge.export.bundles import export_all

    return export_all(tiny_zoo, tmp_path_factory.mktemp("fleet") / "set",
                      ("onnxruntime", "openvino"), ("fp32",))


def _fleet(path: Path, *hosts: dict) -> Path:
    path.write_text(yaml.safe_dump({"fleet_version": 1, "hosts": list(hosts)}))
    return path


def test_each_failing_host_is_one_line_and_the_others_go_on(sshd, bundle_set, tmp_path):
    fleet = _fleet(tmp_path / "fleet.yaml",
                   fleet_host(sshd, "down", tmp_path / "w1", port=free_port()),
                   fleet_host(sshd, "wrong-key", tmp_path / "w2", key=str(sshd.other_key)),
                   fleet_host(sshd, "no-python", tmp_path / "w3", python="/nonexistent/python3"))
    res = okdhp("bench", "--bundles", bundle_set, "--fleet", fleet, "--out-root",
                tmp_path / "out", *FAST)
    assert res.returncode == 1, res.stderr
    run = json.loads((tmp_path / "out" / "fleet" / "fleet.json").read_text())
    why = {h["name"]: (h["status"], h["stage"], h["reason"]) for h in run["hosts"]}
    assert why["down"][:2] == ("failed", "connect") and "Connection refused" in why["down"][2]
    assert "Permission denied" in why["wrong-key"][2]
    assert why["no-python"][2] == "/nonexistent/python3: not found on the host (exit 127)"
    assert "0 of 3 hosts benched" in res.stdout
    # the host keys it met are kept beside the results; never a password anywhere
    assert (tmp_path / "out" / "fleet" / "known_hosts").is_file()


def test_a_fleet_needs_a_bundle_set(tmp_path):
    res = okdhp("bench", "--zoo", tmp_path, "--fleet", tmp_path / "f.yaml")
    assert res.returncode == 2 and "--bundles" in res.stderr


def test_a_fleet_file_is_read_strictly(bundle_set, tmp_path):
    bad = tmp_path / "fleet.yaml"
    bad.write_text(yaml.safe_dump({"fleet_version": 1, "hosts": [
        {"name": "a", "address": "x", "prot": 22}]}))
    res = okdhp("bench", "--bundles", bundle_set, "--fleet", bad, "--out-root", tmp_path)
    assert res.returncode != 0 and "prot" in res.stderr and "port" in res.stderr


@pytest.mark.slow  # installs the package in a fresh venv on the host (~1 min from pip's cache)
def test_a_fleet_benches_the_set_on_a_real_ssh_host_as_a_local_bench_does(
        sshd, bundle_set, tmp_path):
    fleet = _fleet(tmp_path / "fleet.yaml", fleet_host(sshd, "sshbox", tmp_path / "host"))
    t0 = time.time()
    first = okdhp("bench", "--bundles", bundle_set, "--fleet", fleet, "--out-root",
                  tmp_path / "out", *FAST)
    cold = time.time() - t0
    assert first.returncode == 0, first.stdout + first.stderr
    remote = load_report(tmp_path / "out" / "fleet" / "sshbox" / "tiny.json")
    local = okdhp("bench", "--bundles", bundle_set, "--device-name", "here", "--out-root",
                  tmp_path / "local", *FAST)
    assert local.returncode == 0, local.stderr
    here = load_report(tmp_path / "local" / "here" / "tiny.json")
    rows = {(r.student, r.backend, r.precision): r for r in remote.rows if r.status == "ok"}
    same = {(r.student, r.backend, r.precision): r for r in here.rows if r.status == "ok"}
    assert rows.keys() == same.keys() and len(rows) >= 4  # (bf16 rows where the CPU has it)
    for k, r in rows.items():  # the same machine: the same latency within its noise
        ratio = r.latency("median") / same[k].latency("median")
        assert 1 / 3 < ratio < 3, (k, ratio)
    assert (tmp_path / "out" / "fleet" / "compare.md").is_file()
    assert not _remote_benches(tmp_path / "host")  # nothing left running there
    # a second run reuses the set and the venv
    t0 = time.time()
    again = okdhp("bench", "--bundles", bundle_set, "--fleet", fleet, "--out-root",
                  tmp_path / "out", *FAST)
    assert again.returncode == 0 and "reused bundles, venv" in again.stdout
    assert time.time() - t0 < cold


@pytest.mark.slow
def test_killing_the_fleet_command_leaves_nothing_running_on_the_host(
        sshd, bundle_set, tmp_path):
    work = tmp_path / "host"
    fleet = _fleet(tmp_path / "fleet.yaml", fleet_host(sshd, "sshbox", work))
    slow = ["--threads", "1", "--min-time", "30", "--rounds", "1", "--no-accuracy"]
    proc = subprocess.Popen([sys.executable, "-m", "okdhp_edge", "bench", "--bundles",
                             str(bundle_set), "--fleet", str(fleet), "--out-root",
                             str(tmp_path / "out"), *slow], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # the bench and at least one row's worker running there: killed mid-bench
        assert _wait_for(lambda: len(_remote_benches(work)) >= 2, 300), \
            "the remote bench never started its rows"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _wait_for(lambda: not _remote_benches(work), 20), _remote_benches(work)


@pytest.mark.slow  # installs the package in the Arm user space, under QEMU (~3 min)
def test_the_arm_user_space_is_a_second_fleet_member_its_report_marked_emulated(
        bundle_set, tmp_path):
    with arm_guest(tmp_path / "guest") as guest:
        server = start_sshd(tmp_path / "sshd", chroot=guest.rootfs, env={"QEMU_CPU": QEMU_CPU})
        sshd = next(server)
        try:
            fleet = _fleet(tmp_path / "fleet.yaml", fleet_host(sshd, "x86box", tmp_path / "host"),
                           fleet_host(sshd, "armbox", Path(guest.fleet) / "arm",
                                 port=sshd.chroot_port, python=guest.python,
                                 pip=["--no-index", "--find-links", guest.wheels],
                                 bench=["--min-iters", "3", "--rounds", "1"]))
            res = okdhp("bench", "--bundles", bundle_set, "--fleet", fleet, "--out-root",
                        tmp_path / "out", *FAST)
        finally:
            server.close()  # stops sshd
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "out" / "fleet"
    arm, x86 = (load_report(out / name / "tiny.json") for name in ("armbox", "x86box"))
    assert arm.emulated and "aarch64" in arm.emulated and not x86.emulated
    assert arm.device["machine"] == "aarch64" and x86.device["machine"] == "x86_64"
    ok = {(r.student, r.backend, r.precision) for r in arm.rows if r.status == "ok"}
    fp32 = {(r.student, r.backend, r.precision) for r in x86.rows
            if r.status == "ok" and r.precision == "fp32"}
    assert fp32 and fp32 <= ok, (fp32, ok)  # every fp32 row measured on "Arm" too
    # the emulated member is said to be one wherever its timings appear
    assert "armbox (emulated)" in (out / "compare.md").read_text()
    assert "x86box (emulated)" not in (out / "compare.md").read_text()
    run = json.loads((out / "fleet.json").read_text())
    assert {h["name"]: bool(h.get("emulated")) for h in run["hosts"]} == {
        "armbox": True, "x86box": False}
    assert "EMULATED" in res.stdout


def _remote_benches(work: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(work / "venv")], capture_output=True, text=True)
    return [ln for ln in out.stdout.splitlines() if "pgrep" not in ln]


def _wait_for(cond, seconds: float) -> bool:
    end = time.time() + seconds
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.5)
    return False
