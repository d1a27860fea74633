"""The one door: ``okdhp <command>`` (``python -m okdhp_edge``) over the Python API."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from okdhp_edge import api
from okdhp_edge.errors import UsageError
from tests.conftest import ROOT

REPORT = ROOT / "bench" / "reports" / "amd-epyc-2c-avx512bf16" / "quickstart.json"


def all_requests() -> dict:
    """``okdhp <command> [<sub-command>]`` -> its request class, every command of the
    door's tables (a command whose main is not a request's names its sub-commands)."""
    import importlib
    import inspect

    from okdhp_edge.__main__ import COMMANDS

    out = {}
    for name, command in COMMANDS.items():
        module = importlib.import_module(command.target.partition(":")[0])
        subs = getattr(module, "COMMANDS", None)
        for sub, c in (subs.items() if subs else [("", command)]):
            main = c.main()
            request = inspect.getclosurevars(main).nonlocals.get("request")
            assert request is not None, f"okdhp {name} {sub}: its main is not a request's"
            out[f"{name} {sub}".strip()] = request
    return out


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


def _few_rows(tmp_path) -> Path:
    """The published quickstart report with its PyTorch and ONNX Runtime fp32 rows only:
    each row's paired intervals are resampled over 300 images (~0.15 s a row, ~3 s for
    the whole report's in every process that picks)."""
    data = json.loads(REPORT.read_text())
    data["rows"] = [r for r in data["rows"] if r["precision"] == "fp32"
                    and r["backend"] in ("torch", "onnxruntime")]
    path = tmp_path / "quickstart.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.skipif(not REPORT.is_file(), reason="no published quickstart report here")
def test_zoo_pick_through_the_door_matches_the_api(tmp_path):
    path = _few_rows(tmp_path)
    proc = _okdhp("zoo", "pick", "--report", str(path), "--max-latency-ms", "1.5", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    p = api.pick(path, 1.5)
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


def test_every_command_is_a_typed_request_with_show(capsys):
    """``okdhp <command> --show`` prints every key of every command (for train also the
    100 training keys), under the okdhp name."""
    from okdhp_edge.__main__ import main

    requests = all_requests()
    assert len(requests) == 17, sorted(requests)
    for name, request in requests.items():
        assert main([*name.split(), "--show"]) == 0
        out = capsys.readouterr().out
        assert request.COMMAND == f"okdhp {name}".removesuffix(" run"), name  # run: default
        assert out.startswith(f"{request.COMMAND}: keys"), name
        assert all(f"  {k.name} " in out for k in request.keys()), name
    main(["train", "--show"])
    assert "training keys (101;" in capsys.readouterr().out


def test_api_keywords_are_the_command_keys(tmp_path):
    """api.bench and api.pick take the keys of ``okdhp bench`` and ``okdhp zoo pick``:
    the same names, the same checks."""
    with pytest.raises(UsageError, match="calib_images .--calib-images.: expected a whole "
                                         "number >= 1"):
        api.bench(tmp_path / "zoo", calib_images=0)
    with pytest.raises(UsageError, match="max_ap_drop .--max-ap-drop.: .* points of AP"):
        api.pick(REPORT, 1.5, max_ap_drop=2)


def test_bench_threads_cannot_exceed_the_machine(tmp_path):
    with pytest.raises(UsageError, match="threads .--threads. 999: this machine has"):
        api.bench(tmp_path / "zoo", threads=999)


def test_bench_cores_are_checked_against_this_process(tmp_path):
    """--cores names CPUs this process may run on; a list it may not is refused in one line
    (big, little and all always resolve: a one-cluster CPU's big cluster is all of it)."""
    with pytest.raises(UsageError, match=r"cores \(--cores\) 0-4096: CPU\(s\) .* are not "
                                         "available to this process"):
        api.bench(tmp_path / "zoo", cores="0-4096")
    with pytest.raises(UsageError, match="give big, little, all or CPU numbers"):
        api.bench(tmp_path / "zoo", cores="fastest")


@pytest.mark.skipif(not REPORT.is_file(), reason="no published quickstart report here")
def test_pick_refuses_an_emulated_report_unless_asked(tmp_path):
    """A report measured under QEMU user mode has the emulator's latencies: zoo pick and
    api.pick refuse it, --allow-emulated picks from it anyway."""
    few = _few_rows(tmp_path)
    data = json.loads(few.read_text())
    data["device"]["board"] = {"machine": "aarch64", "cpu_arch": "x86",
                               "emulated": "aarch64 user space on AMD EPYC (QEMU user mode)"}
    path = tmp_path / "emulated.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UsageError, match="measured under emulation .*--allow-emulated"):
        api.pick(path, 100.0)
    assert api.pick(path, 100.0, allow_emulated=True).choice is not None
    proc = _okdhp("zoo", "pick", "--report", str(path), "--max-latency-ms", "100")
    assert proc.returncode == 2 and "measured under emulation" in proc.stderr, proc.stderr
    # a comparison across devices says which device's timings are an emulator's
    from okdhp_edge.bench.compare import combine
    from okdhp_edge.bench.report import load_report

    table = combine([load_report(few), load_report(path)])
    assert table.count(" (emulated) |") == sum(r.status == "ok" for r in load_report(path).rows)
    assert "was emulated (aarch64 user space on AMD EPYC" in table


def test_evaluate_refuses_the_oracles_options_for_a_student(tmp_path):
    """--det-file, --det-thr, --input-size and --sigma are the oracle's: given with
    --student they were ignored (a NaN detection file never read); now refused."""
    proc = _okdhp("evaluate", "--student", str(tmp_path / "s.yaml"), "--det-file", "d.json",
                  "--sigma", "3")
    assert proc.returncode == 2 and "det_file (--det-file), sigma (--sigma): the oracle's" \
        in proc.stderr, proc.stderr
