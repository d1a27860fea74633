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


def test_a_missing_zoo_is_one_line_in_every_command(tmp_path):
    """No zoo.yaml where --zoo points: one line naming the path, exit 1, no traceback."""
    for cmd in (["okdhp_edge.bench", "--zoo"], ["okdhp_edge.bench", "calibration", "--zoo"],
                ["okdhp_edge.zoo", "list", "--zoo"]):
        proc = subprocess.run([sys.executable, "-m", *cmd, str(tmp_path / "none")],
                              capture_output=True, text=True)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip() == f"error: {tmp_path / 'none'}: manifest not found"
