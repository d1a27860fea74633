"""``okdhp <command> [options]`` (or ``python -m okdhp_edge <command>``): the one door.

Commands::

    okdhp quickstart                 the whole journey on synthetic data
    okdhp train --config CFG [section.key=value ...]
    okdhp bench --zoo ZOO [...]      (bench merge | compare | calibration ...)
    okdhp zoo list|pick|export ...
    okdhp evaluate --student S ...
    okdhp visualize --student S ...
    okdhp models [NAME ...]
    okdhp synthetic ...
    okdhp experiments run|report ...

Each command is the module of the same name (``python -m okdhp_edge.train`` ... keep
working); ``okdhp <command> --help`` lists its options. Errors are one line; the exit
status is the error's (:mod:`okdhp_edge.errors`).
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional

from okdhp_edge.schema import closest
from okdhp_edge.utils.cli import UsageError, console_entry, run_cli

# command -> the module whose main(argv) runs it
COMMANDS = {
    "quickstart": "okdhp_edge.quickstart",
    "train": "okdhp_edge.train",
    "bench": "okdhp_edge.bench.__main__",
    "zoo": "okdhp_edge.zoo",
    "evaluate": "okdhp_edge.evaluate",
    "visualize": "okdhp_edge.visualize",
    "models": "okdhp_edge.models.__main__",
    "synthetic": "okdhp_edge.data.synthetic",
    "experiments": "okdhp_edge.experiments",
}


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.split("\n", 1)[1].strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise UsageError(f"unknown command '{command}'; did you mean "
                         f"'{closest(command, list(COMMANDS))}'? (okdhp --help lists them)")
    return importlib.import_module(COMMANDS[command]).main(rest)


cli = console_entry(main)  # the `okdhp` console script


if __name__ == "__main__":
    run_cli(main)
