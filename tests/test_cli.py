"""The one door: ``okdhp <command>`` (``python -m okdhp_edge``) over the Python API."""

import json
import subprocess
import sys

import pytest

from okdhp_edge import api
from okdhp_edge.errors import UsageError
from tests.conftest import ROOT

REPORT = ROOT / "bench" / "reports" / "amd-epyc-2c-avx512bf16" / "quickstart.json"


def _okdhp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "okdhp_edge", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def test_help_lists_exactly_the_commands_that_run():
    """``okdhp --help`` is generated from the table the dispatcher runs: every command it
    lists exists, and no other is listed."""
    from okdhp_edge.__main__ import COMMANDS

    proc = _okdhp("--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: okdhp <command>")
    listed = [line.split()[0] for line in proc.stdout.split("commands:\n")[1].split("\n\n")[0]
              .splitlines() if line.startswith("  ") and not line.startswith("   ")]
    assert listed == list(COMMANDS)
    for command in COMMANDS.values():
        assert callable(command.main())


def test_unknown_command_names_the_closest():
    proc = _okdhp("trian", "--config", "x.yaml")
    assert proc.returncode == 2 and "did you mean 'train'" in proc.stderr
    assert "Traceback" not in proc.stderr
    # a word close to no command is not a misspelling of one: every command is listed
    from okdhp_edge.__main__ import COMMANDS

    far = _okdhp("nope")
    assert far.returncode == 2 and "did you mean" not in far.stderr
    assert all(c in far.stderr for c in COMMANDS)


@pytest.mark.skipif(not REPORT.is_file(), reason="no published quickstart report here")
def test_zoo_pick_through_the_door_matches_the_api():
    proc = _okdhp("zoo", "pick", "--report", str(REPORT), "--max-latency-ms", "1.5", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    p = api.pick(REPORT, 1.5)
    assert (out["choice"]["student"], out["choice"]["backend"], out["choice"]["precision"]) \
        == (p.choice.student, p.choice.backend, p.choice.precision)
    assert [r["student"] for r in out["frontier"]] == [r.student for r in p.frontier]


def test_api_bench_refuses_an_unknown_option_before_measuring(tmp_path):
    with pytest.raises(UsageError, match="did you mean 'min_time'"):
        api.bench(tmp_path / "zoo", min_tme=1.0)


def test_sub_commands_share_the_door_grammar(capsys):
    """``okdhp bench <sub>`` is dispatched like ``okdhp <command>``: a typo names the closest
    sub-command, and an option-first argv runs the default (``run``)."""
    from okdhp_edge.__main__ import main

    with pytest.raises(UsageError, match="did you mean 'compare'"):
        main(["bench", "comapre", "a.json"])
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: okdhp bench <command>") and "calibration" in out
    with pytest.raises(SystemExit):
        main(["bench", "run", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: okdhp bench") and "--zoo ZOO" in out
