"""``okdhp train --config CFG [section.key=value ...] [--resume RUN_DIR]``
``okdhp train --qat-from RUN_DIR [--config CFG] [qat.key=value ...]``

Trains an OKDHP multi-branch network (or a plain baseline with ``model.name=hg2`` etc.)
and writes the run folder and the student zoo. Under ``torchrun`` it trains with
DistributedDataParallel. SIGINT/SIGTERM write a checkpoint; ``--resume`` continues.
``--qat-from`` fine-tunes a trained multi-branch run quantization-aware (its students
fake-quantized int8, the FAU ensemble in float teaching them; the ``qat:`` section) and
writes a zoo of quantization-aware students (``<run>-qat``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from okdhp_edge.config import load_config
from okdhp_edge.grammar import Request, option
from okdhp_edge.utils.cli import UsageError, console_entry, request_main, run_cli

log = logging.getLogger("okdhp_edge.train")


@dataclass(frozen=True)
class TrainRequest(Request):
    """Trains an OKDHP multi-branch network (or a plain baseline with ``model.name=hg2``)
    and writes the run folder and the student zoo. The training keys are the config's
    (``section.key=value`` after the options; ``--show`` lists all of them). Under
    ``torchrun`` it trains with DistributedDataParallel. SIGINT/SIGTERM write a checkpoint;
    ``--resume`` continues. ``--qat-from`` fine-tunes a trained multi-branch run
    quantization-aware (the ``qat:`` section) into a zoo of quantization-aware students."""

    COMMAND: ClassVar[str] = "okdhp train"

    config: Optional[Path] = option(None, "YAML overrides of the defaults")
    resume: Optional[Path] = option(None, "continue a run from RUN_DIR/last.pt with "
                                    "RUN_DIR/config.yaml", metavar="RUN_DIR")
    qat_from: Optional[Path] = option(None, "fine-tune the trained run RUN_DIR "
                                      "quantization-aware: its config.yaml, then --config and "
                                      "the overrides (qat.epochs, qat.lr, qat.kd, ...)",
                                      metavar="RUN_DIR")
    zoo: bool = option(True, "write the student zoo (--no-zoo: the run only)")
    overrides: tuple[str, ...] = option((), "training keys, section.key=value", positional=True,
                                        metavar="SECTION.KEY=VALUE")

    def check(self) -> None:
        if self.resume and self.qat_from:
            raise UsageError("--resume continues a run (a QAT run too); --qat-from starts "
                             "one: give one of them")

    @classmethod
    def show_more(cls) -> list[str]:
        from okdhp_edge.config import config_keys

        keys = config_keys()
        lines = ["", f"training keys ({len(keys)}; section.key=value, or in the --config "
                 "YAML):"]
        for key, tp, default, note in keys:
            lines.append(f"  {key:<32} {tp}, default {default!r}" + (f": {note}" if note
                                                                      else ""))
        return lines


def run(args: TrainRequest) -> int:
    """Train (or resume, or fine-tune QAT), then print where the zoo and the run are."""
    if args.qat_from:
        cfg = _qat_config(args)
    elif args.resume:
        if args.resume.is_dir():  # a killed first checkpoint write leaves a torn temporary
            from okdhp_edge.utils.io import remove_stale_temporaries

            remove_stale_temporaries(args.resume)
        if not (args.resume / "last.pt").is_file():
            raise UsageError(f"--resume {args.resume}: no checkpoint there (the run stopped "
                             "before its first one); start it again without --resume")
        cfg = load_config(args.resume / "config.yaml", list(args.overrides))
    else:
        cfg = load_config(args.config, list(args.overrides))
    from okdhp_edge import api

    name = args.config.stem if args.config and not args.qat_from else ""
    result = api.train(cfg, config_name=name, resume=args.resume, write_zoo=args.zoo)
    if result.zoo is not None:
        print(f"zoo: {result.zoo}")
    if result.is_main:
        print(f"run: {result.run_dir}")
    return 0


main = request_main(TrainRequest, run)


def _qat_config(args: TrainRequest) -> Any:
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
