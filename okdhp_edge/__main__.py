"""``okdhp <command> [options]`` (or ``python -m okdhp_edge <command>``): the one door.

Commands::

    okdhp quickstart                 the whole journey on synthetic data
    okdhp train --config CFG [section.key=value ...]
    okdhp bench [run] --zoo ZOO ...  (bench run | merge | compare | calibration)
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

import sys
from typing import Optional

from okdhp_edge.utils.cli import console_entry, dispatch, run_cli

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
    return dispatch(argv, COMMANDS, "okdhp", __doc__.split("\n", 1)[1].strip())


cli = console_entry(main)  # the `okdhp` console script


if __name__ == "__main__":
    run_cli(main)
