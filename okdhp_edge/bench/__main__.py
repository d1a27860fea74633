"""``python -m okdhp_edge.bench`` / ``okdhp bench``: see :data:`okdhp_edge.bench.command.USAGE`.

Sub-commands, in the door's one grammar (:func:`okdhp_edge.utils.cli.dispatch`): ``run``
(measure a zoo, bundles or a plan; the default, so ``okdhp bench --zoo Z`` runs it),
``merge``, ``compare``, ``calibration``.
"""

from __future__ import annotations

import sys
from typing import Optional

from okdhp_edge.bench.command import USAGE
from okdhp_edge.utils.cli import console_entry, dispatch, run_cli

__doc__ = USAGE

COMMANDS = {
    "run": "okdhp_edge.bench.command",
    "merge": "okdhp_edge.bench.merge",
    "compare": "okdhp_edge.bench.compare",
    "calibration": "okdhp_edge.bench.calibration",
}


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return dispatch(argv, COMMANDS, "okdhp bench", USAGE, default="run")


cli = console_entry(main)  # the console script: as python -m, one-line errors


if __name__ == "__main__":
    run_cli(main)
