"""``okdhp bench``: measure a zoo, bundles or a plan (``run``, the default, so ``okdhp
bench --zoo Z`` runs it), and work on the reports it writes."""

from __future__ import annotations

import sys
from typing import Optional

from okdhp_edge.utils.cli import Command, console_entry, dispatch, run_cli

COMMANDS = {
    "run": Command("okdhp_edge.bench.command", "measure latency, memory and accuracy of every "
                   "student on each backend and precision"),
    "merge": Command("okdhp_edge.bench.merge", "join reports of one device (zoos of any "
                     "family) into one"),
    "compare": Command("okdhp_edge.bench.compare", "chart one zoo across devices"),
    "calibration": Command("okdhp_edge.bench.calibration", "measure INT8 calibration "
                           "recipes (accuracy and latency per recipe)"),
    "parity": Command("okdhp_edge.bench.parity", "check that a bundle set computes here what "
                      "it computed on another device"),
}


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return dispatch(argv, COMMANDS, "okdhp bench", __doc__, default="run")


cli = console_entry(main)  # the console script: as python -m, one-line errors


if __name__ == "__main__":
    run_cli(main)
