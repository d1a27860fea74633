"""The bench knows its neighbours: the CPU other processes use while it times, and the
--busy policy (a real neighbour: a process outside this test's tree spinning on a core)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from okdhp_edge.bench.load import LoadMonitor
from okdhp_edge.bench.timing import TimingConfig, interleaved
from okdhp_edge.errors import MachineBusy
from okdhp_edge.utils.cpu import cpu_snapshot

# serial: these assert what a quiet machine looks like (make test runs them apart)
pytestmark = [pytest.mark.skipif(cpu_snapshot() is None, reason="no /proc here"),
              pytest.mark.serial]

CFG = TimingConfig(warmup_iters=1, warmup_s=0.0, min_iters=3, min_time_s=0.6, rounds=2)


@pytest.fixture
def neighbour():
    """One process spinning on a core, re-parented away from this test (not our tree)."""
    out = subprocess.run(["sh", "-c", f"{sys.executable} -c 'while True: pass' "
                                      ">/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True).stdout
    pid = int(out)
    time.sleep(0.3)
    yield pid
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # the test ended it already
        pass


def _work() -> None:
    time.sleep(0.01)


def test_a_quiet_block_is_not_flagged():
    mon = LoadMonitor("warn")
    interleaved({"a": _work}, CFG, monitor=mon)
    stats = mon.stats("a")
    assert stats["busy"] is False and stats["others_cores_max"] < 0.25


def test_warn_flags_the_rows_a_neighbour_shared_and_names_it(neighbour):
    mon = LoadMonitor("warn")
    interleaved({"a": _work}, CFG, monitor=mon)
    stats = mon.stats("a")
    assert stats["busy"] is True and stats["others_cores_max"] > 0.6
    assert f"pid {neighbour}" in mon.culprit_text(stats["others_cores_max"])
    assert mon.record(1)["busy_rows"] == 1


def test_refuse_stops_before_measuring(neighbour):
    mon = LoadMonitor("refuse", probe_s=0.3)
    with pytest.raises(MachineBusy, match=f"pid {neighbour}"):
        mon.check_quiet()


def test_wait_times_once_the_neighbour_leaves(neighbour):
    mon = LoadMonitor("wait", probe_s=0.2, max_wait_s=30)
    subprocess.Popen(["sh", "-c", f"sleep 1; kill -9 {neighbour}"])
    interleaved({"a": _work}, CFG, monitor=mon)
    assert mon.waited_s >= 0.6 and mon.stats("a")["busy"] is False


def test_wait_is_bounded_for_the_whole_run_and_says_what_it_does_next(neighbour, caplog):
    """A neighbour that never leaves: the run waits its budget once, then times every
    remaining block without waiting (flagged), instead of waiting again before each."""
    mon = LoadMonitor("wait", probe_s=0.2, max_wait_s=1.0)
    t0 = time.monotonic()
    with caplog.at_level("WARNING"):
        interleaved({"a": _work, "b": _work}, CFG, monitor=mon)
    assert time.monotonic() - t0 < 1.0 + 0.5 + 4 * CFG.min_time_s  # one budget, not four
    assert 1.0 <= mon.waited_s < 1.5
    assert mon.stats("a")["busy"] and mon.stats("b")["busy"]
    said = [r.getMessage() for r in caplog.records if "without waiting" in r.getMessage()]
    assert len(said) == 1 and "timing every remaining block" in said[0]
