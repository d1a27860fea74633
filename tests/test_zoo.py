"""The zoo CLI: the constrained pick on a bench report (exit codes, JSON)."""

import json

from tests.conftest import okdhp


def test_pick_cli_exit_codes(report, tiny_zoo):
    base = ["zoo", "pick", "--report", str(report / "tiny.json")]
    ok = okdhp(*base, "--max-latency-ms", "1000", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["choice"]["student"] in ("hg2", "hg3")
    none = okdhp(*base, "--max-latency-ms", "0.000001")
    assert none.returncode == 1 and "closest" in none.stdout


def test_a_missing_zoo_is_one_line_in_every_command(tmp_path):
    """No zoo.yaml where --zoo points: one line naming the path, exit 1, no traceback."""
    for cmd in (["bench", "--zoo"], ["bench", "calibration", "--zoo"], ["zoo", "list", "--zoo"]):
        proc = okdhp(*cmd, str(tmp_path / "none"))
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip() == f"error: {tmp_path / 'none'}: manifest not found"
