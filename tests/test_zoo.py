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
    # every row's memory was measured in its worker: a budget no model fits picks nothing
    choice = json.loads(ok.stdout)["choice"]
    assert 0 < choice["model_memory_mb"] < choice["peak_memory_mb"]
    tight = okdhp(*base, "--max-latency-ms", "1000", "--max-memory-mb", "0.01")
    assert tight.returncode == 1 and "no student meets the budget" in tight.stdout
    fits = okdhp(*base, "--max-latency-ms", "1000", "--max-memory-mb", "100000")
    assert fits.returncode == 0 and "process peak" in fits.stdout


def test_a_missing_zoo_is_one_line_in_every_command(tmp_path):
    """No zoo.yaml where --zoo points: one line naming the path, exit 1, no traceback."""
    for cmd in (["bench", "--zoo"], ["bench", "calibration", "--zoo"], ["zoo", "list", "--zoo"]):
        proc = okdhp(*cmd, str(tmp_path / "none"))
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip() == f"error: {tmp_path / 'none'}: manifest not found"


def test_a_refused_export_leaves_no_out_folder(tiny_zoo, tmp_path):
    """TensorRT is unavailable here: the export is refused in one line, and the --out
    folder it would have written is not left behind, empty."""
    from tests.conftest import okdhp

    out = tmp_path / "deploy"
    res = okdhp("zoo", "export", "--zoo", tiny_zoo, "--student", "hg2", "--backend",
                "tensorrt", "--out", out)
    assert res.returncode != 0 and "unavailable" in res.stderr and not out.exists()
    assert res.stderr.strip().splitlines()[-1].startswith("error: tensorrt fp32 unavailable")
