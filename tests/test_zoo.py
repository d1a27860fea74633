"""The zoo CLI: the constrained pick on a bench report (exit codes, JSON)."""

import json
import subprocess
import sys


def test_pick_cli_exit_codes(report, tiny_zoo):
    base = [sys.executable, "-m", "okdhp_edge.zoo", "pick", "--report",
            str(report / "tiny.json")]
    ok = subprocess.run(base + ["--max-latency-ms", "1000", "--json"], capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["choice"]["student"] in ("hg2", "hg3")
    none = subprocess.run(base + ["--max-latency-ms", "0.000001"], capture_output=True, text=True)
    assert none.returncode == 1 and "closest" in none.stdout
