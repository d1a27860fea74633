"""``python -m okdhp_edge.bench`` / ``okdhp bench``: see :data:`okdhp_edge.bench.command.USAGE`."""

from __future__ import annotations

from typing import Optional

from okdhp_edge.bench.command import USAGE, parser, run_bench
from okdhp_edge.bench.report import write_report
from okdhp_edge.utils.cli import console_entry, run_cli, setup_logging

__doc__ = USAGE


def main(argv: Optional[list[str]] = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        from okdhp_edge.bench.compare import main as compare_main

        return compare_main(argv[1:])
    if argv and argv[0] == "merge":
        from okdhp_edge.bench.merge import main as merge_main

        return merge_main(argv[1:])
    if argv and argv[0] == "calibration":
        from okdhp_edge.bench.calibration import main as calibration_main

        setup_logging()
        return calibration_main(argv[1:])
    args = parser().parse_args(argv)
    setup_logging()
    from okdhp_edge.utils.io import check_writable

    check_writable(args.out_root)  # before the measuring, not after it
    rep = run_bench(args, argv)
    paths = write_report(rep, args.out_root / rep.device_id)
    for k in ("json", "md", "png"):
        print(f"{k}: {paths[k]}")
    return 0


cli = console_entry(main)  # the console script: as python -m, one-line errors


if __name__ == "__main__":
    run_cli(main)
