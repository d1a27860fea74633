"""``python -m okdhp_edge.train --config CFG [key=value ...] [--resume RUN_DIR]``
``python -m okdhp_edge.train --qat-from RUN_DIR [--config CFG] [qat.key=value ...]``

Trains an OKDHP multi-branch network (or a plain baseline with ``model.name=hg2`` etc.)
and writes the run folder and the student zoo. Under ``torchrun`` it trains with
DistributedDataParallel. SIGINT/SIGTERM write a checkpoint; ``--resume`` continues.
``--qat-from`` fine-tunes a trained multi-branch run quantization-aware (its students
fake-quantized int8, the FAU ensemble in float teaching them; the ``qat:`` section) and
writes a zoo of quantization-aware students (``<run>-qat``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Optional

from okdhp_edge.config import load_config
from okdhp_edge.utils.cli import UsageError, console_entry, run_cli, setup_logging

log = logging.getLogger("okdhp_edge.train")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m okdhp_edge.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="YAML overrides of the defaults")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue a run from RUN_DIR/last.pt with RUN_DIR/config.yaml")
    p.add_argument("--qat-from", type=Path, metavar="RUN_DIR",
                   help="fine-tune the trained run RUN_DIR quantization-aware: its config.yaml, "
                        "then --config and the overrides (qat.epochs, qat.lr, qat.kd, ...)")
    p.add_argument("--no-zoo", action="store_true", help="do not write the student zoo")
    p.add_argument("overrides", nargs="*", help="section.key=value")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging()
    if args.resume and args.qat_from:
        raise UsageError("--resume continues a run (a QAT run too); --qat-from starts one: "
                         "give one of them")
    if args.qat_from:
        cfg = _qat_config(args)
    elif args.resume:
        if args.resume.is_dir():  # a killed first checkpoint write leaves a torn temporary
            from okdhp_edge.utils.io import remove_stale_temporaries

            remove_stale_temporaries(args.resume)
        if not (args.resume / "last.pt").is_file():
            raise UsageError(f"--resume {args.resume}: no checkpoint there (the run stopped "
                             "before its first one); start it again without --resume")
        cfg = load_config(args.resume / "config.yaml", args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
    from okdhp_edge import api

    name = args.config.stem if args.config and not args.qat_from else ""
    run = api.train(cfg, config_name=name, resume=args.resume, write_zoo=not args.no_zoo)
    if run.zoo is not None:
        print(f"zoo: {run.zoo}")
    if run.is_main:
        print(f"run: {run.run_dir}")
    return 0


def _qat_config(args: argparse.Namespace) -> Any:
    run = args.qat_from
    for need in ("config.yaml", "last.pt"):
        if not (run / need).is_file():
            raise UsageError(f"--qat-from {run}: no {need} there (a trained run's folder "
                             "holds both)")
    return load_config(args.config, [*args.overrides, f"qat.from_run={run}"],
                       base=run / "config.yaml")


cli = console_entry(main)  # the console script: as python -m, one-line errors


if __name__ == "__main__":
    run_cli(main)
