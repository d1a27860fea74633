"""``okdhp <command> [options]`` (or ``python -m okdhp_edge <command>``): the one door.

Each command's options are a typed request (:mod:`okdhp_edge.grammar`): ``--flag value``
and ``key=value`` alike, the same names as the Python API's keywords (:mod:`okdhp_edge.api`).
Errors are one line; the exit status is the error's (:mod:`okdhp_edge.errors`).
"""

from __future__ import annotations

import sys
from typing import Optional

from okdhp_edge.utils.cli import Command, console_entry, dispatch, run_cli

INTRO = """Train an OKDHP multi-branch network into a zoo of students, bench them per device
and runtime, pick the one to deploy under a latency budget, export it torch-free."""

# the commands of the door: what `okdhp --help` lists and what runs each
COMMANDS = {
    "quickstart": Command("okdhp_edge.quickstart", "the whole journey on synthetic data: "
                          "train a zoo, bench it, print the pick"),
    "train": Command("okdhp_edge.train", "train a multi-branch network and write its "
                     "student zoo (--config CFG, section.key=value)"),
    "bench": Command("okdhp_edge.bench.__main__", "measure a zoo on this device: run "
                     "(the default), merge, compare, calibration"),
    "zoo": Command("okdhp_edge.zoo", "list, pick, export: browse a zoo, pick a student "
                   "under a latency budget, export torch-free bundles"),
    "evaluate": Command("okdhp_edge.evaluate", "score a student, or the codec oracle, on a "
                        "dataset"),
    "visualize": Command("okdhp_edge.visualize", "draw a student's predictions"),
    "models": Command("okdhp_edge.models.__main__", "parameters and MACs of a registered "
                      "model"),
    "synthetic": Command("okdhp_edge.data.synthetic", "write a synthetic pose dataset"),
    "experiments": Command("okdhp_edge.experiments", "ablation, qat, render: the method's "
                           "ablations and their reports"),
}


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return dispatch(argv, COMMANDS, "okdhp", INTRO)


cli = console_entry(main)  # the `okdhp` console script


if __name__ == "__main__":
    run_cli(main)
