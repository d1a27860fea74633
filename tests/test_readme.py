"""The README as a front door that stays true: its generated tables equal what the code
generates, every ``okdhp`` command in it parses into its request (the slow test runs the
journey's commands as written), and its Python compiles."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_cli import all_requests

README = (ROOT / "README.md").read_text()


def _block(marker: str) -> str:
    """The lines between ``<!-- generated from MARKER ...-->`` and ``<!-- end -->``."""
    found = re.search(rf"<!-- generated from {re.escape(marker)}.*?-->\n(.*?)\n<!-- end -->",
                      README, re.S)
    assert found, f"no generated block from {marker} in README.md"
    return found.group(1)


def readme_commands() -> list[list[str]]:
    """Every command of the README's bash blocks, continuation lines joined, comments cut."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(words)
    return out


def _request_of(argv: list[str]):
    """(request class, its argv) of ``okdhp ...`` or ``... -m okdhp_edge.train ...``."""
    requests = all_requests()
    if "okdhp_edge.train" in argv:
        return requests["train"], argv[argv.index("okdhp_edge.train") + 1:]
    words = argv[1:]
    if " ".join(words[:2]) in requests:
        return requests[" ".join(words[:2])], words[2:]
    if words[0] in requests:
        return requests[words[0]], words[1:]
    return requests[f"{words[0]} run"], words[1:]  # bench's default sub-command


def test_generated_tables_are_the_codes():
    from okdhp_edge.__main__ import COMMANDS
    from okdhp_edge.targets import backends_markdown
    from okdhp_edge.utils.cli import commands_markdown

    assert _block("okdhp_edge/targets.py") == backends_markdown()
    assert _block("okdhp_edge/__main__.py") == commands_markdown("okdhp", COMMANDS)


def test_every_readme_command_is_a_valid_request():
    """A renamed or dropped option, a bad value or an unknown training key in the README
    fails here (each training command's overrides are loaded into its config too)."""
    from okdhp_edge.config import load_config

    commands = [c for c in readme_commands() if c[0] == "okdhp" or "okdhp_edge.train" in c]
    assert len(commands) >= 10
    for argv in commands:
        request, rest = _request_of(argv)
        req = request.parse(rest)
        assert req is not None, argv
        if request.COMMAND == "okdhp train":
            load_config(ROOT / req.config, list(req.overrides))


def test_readme_python_compiles():
    for block in re.findall(r"```python\n(.*?)```", README, re.S):
        compile(block, "README.md", "exec")


def test_the_front_door_is_short():
    assert README.count("\n") <= 170


@pytest.mark.slow
def test_readme_journey_runs_as_written(tmp_path):
    """The journey and the torch-free deployment, every command as the README writes it,
    in a fresh folder (``okdhp`` run as ``python -m okdhp_edge``, the same door); the
    training commands that need COCO, MPII or several GPUs are parsed only (above). The
    fleet it names is one host: an OpenSSH server on 127.0.0.1 started here."""
    import shutil

    import yaml

    from tests.bench.sshd import fleet_host, start_sshd

    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    server = start_sshd(tmp_path / "sshd")
    sshd = next(server)
    try:
        host = fleet_host(sshd, "sshbox", tmp_path / "host")
        (tmp_path / "fleet.yaml").write_text(yaml.safe_dump({"fleet_version": 1,
                                                             "hosts": [host]}))
        _run_journey(tmp_path)
    finally:
        server.close()  # stops the server
    assert (tmp_path / "deploy" / "hg4_ov" / "bundle.yaml").is_file()
    assert list((tmp_path / "bench" / "reports" / "jetson-orin-nano").glob("quickstart.json"))


def _run_journey(tmp_path: Path) -> None:
    """Every runnable ``okdhp`` command of the README, in order, in ``tmp_path``."""
    runnable = [c for c in readme_commands() if c[0] == "okdhp"
                and not (c[1] == "train" and "configs/quickstart.yaml" not in c)
                and c[1] != "models"]
    for argv in runnable:
        words = [str(p) for w in argv[1:] for p in (sorted(tmp_path.glob(w)) if "*" in w
                                                     else [w])]
        proc = subprocess.run([sys.executable, "-m", "okdhp_edge", *words], cwd=tmp_path,
                              capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, (argv, proc.stderr[-3000:])
