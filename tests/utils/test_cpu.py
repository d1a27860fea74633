"""CPU facts and the thread governor of train.threads=0 (a shared machine)."""

import subprocess
import sys
import time

import pytest

from okdhp_edge.utils import cpu


def test_governor_gives_a_core_up_to_a_neighbour_and_takes_it_back(monkeypatch):
    """Decisions from CPU time: other processes' share = machine busy time minus this
    process tree's, per interval."""
    clock = {"t": 0.0, "busy": 0, "ours": 0}
    hz = cpu.os.sysconf("SC_CLK_TCK")
    monkeypatch.setattr(cpu.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(cpu, "_stat_jiffies", lambda: (clock["busy"], 0))
    monkeypatch.setattr(cpu, "_processes",
                        lambda: {cpu.os.getpid(): (1, clock["ours"], "python")})
    gov = cpu.ThreadGovernor(2, interval_s=10)

    def tick(ours_cores, others_cores):
        clock["t"] += 10
        clock["ours"] += int(ours_cores * 10 * hz)
        clock["busy"] += int((ours_cores + others_cores) * 10 * hz)
        return gov.update()

    assert tick(2.0, 0.0) is None  # first sample: nothing to compare with
    assert tick(2.0, 0.05) is None and gov.threads == 2  # idle machine: never changes
    assert tick(1.3, 0.7) == 1  # a neighbour on a core
    assert tick(1.0, 1.0) is None and gov.threads == 1
    assert tick(1.0, 0.1) == 2  # it left
    gov4 = cpu.ThreadGovernor(4, interval_s=10)
    clock.update(t=0.0, busy=0, ours=0)
    gov = gov4
    tick(4.0, 0.0)
    assert tick(2.0, 2.0) == 2  # two busy neighbours on four cores


@pytest.mark.skipif(not cpu.Path("/proc/stat").is_file(), reason="needs Linux /proc")
def test_governor_sees_a_real_busy_process():
    """A spinning process outside this tree shows up as other processes' load (whatever
    else the machine runs only adds to it), and the count drops to leave it a core."""
    import os
    import signal

    gov = cpu.ThreadGovernor(2, interval_s=0.0)
    gov.update()
    # detached (its parent, the shell, exits): not a descendant of this process
    out = subprocess.run(["sh", "-c", f"'{sys.executable}' -c 'while True: pass' "
                          ">/dev/null 2>&1 & echo $!"], capture_output=True, text=True)
    pid = int(out.stdout.strip())
    try:
        time.sleep(0.3)
        gov.update()  # restart the window once the spinner runs
        time.sleep(1.5)
        gov.update()
        assert gov.threads == 1 and gov.others >= 0.6
    finally:
        os.kill(pid, signal.SIGKILL)


def test_int8_dot_product_flags_and_the_bench_hint(monkeypatch, caplog):
    """VNNI (x86) or dotprod (Arm) counts as an int8 dot product; without one, a bench that
    quantizes for OpenVINO says once that the overflow fix exists, and not when it is set."""
    import logging

    from okdhp_edge.bench import command as bench_cli

    cpu.cpu_info.cache_clear()
    try:
        for flags, has in ((["avx2", "fma"], False), (["avx2", "avx_vnni"], True),
                           (["avx512f", "avx512_vnni"], True), (["asimd", "asimddp"], True)):
            monkeypatch.setattr(cpu, "cpu_info", lambda f=flags: ("test cpu", frozenset(f)))
            assert cpu.cpu_has_int8_dot() is has, flags
    finally:
        monkeypatch.undo()
        cpu.cpu_info.cache_clear()
    monkeypatch.setattr(cpu, "cpu_has_int8_dot", lambda: False)  # the options read it there
    base = ["--zoo", "z", "--backends", "onnxruntime,openvino", "--precisions", "fp32,int8"]
    with caplog.at_level(logging.INFO, logger="okdhp_edge.bench"):
        bench_cli._targets(bench_cli.BenchRequest.parse(base))
        assert "--int8-overflow-fix enable" in caplog.text
        caplog.clear()
        bench_cli._targets(bench_cli.BenchRequest.parse(base + ["--int8-overflow-fix", "enable"]))
        bench_cli._targets(bench_cli.BenchRequest.parse(base[:3] + ["onnxruntime"] + base[4:]))
        assert "overflow" not in caplog.text
