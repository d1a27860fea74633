"""Evaluate a student, or the codec oracle, on COCO / MPII / synthetic data.

``python -m okdhp_edge.evaluate --oracle --dataset coco --ann FILE --images DIR``
``python -m okdhp_edge.evaluate --oracle --dataset mpii --ann FILE --images DIR --headboxes F``
``python -m okdhp_edge.evaluate --student PATH/student.yaml [--dataset ... --ann ...
--images ...] [--flip] [--out FILE]``
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Optional

from okdhp_edge.data.formats import FORMATS
from okdhp_edge.evaluation.datasets import build_eval_dataset
from okdhp_edge.evaluation.inference import oracle_heatmap_fn, predict, score
from okdhp_edge.evaluation.pckh import pckh_table
from okdhp_edge.evaluation.uncertainty import interval_text
from okdhp_edge.utils.cli import UsageError, console_entry, count, number, run_cli, setup_logging
from okdhp_edge.utils.io import atomic_write_json

log = logging.getLogger(__name__)


def format_metrics(res: dict[str, Any]) -> str:
    """Human-readable metrics."""
    ci = res.get("ci95")
    span = "" if not ci else (f"\n{res['metric']} 95% interval over the "
                              f"{res['bootstrap']['units']} {res['bootstrap']['unit']}s:"
                              + interval_text(ci))
    if res["metric"] == "AP":
        keys = ("AP", "AP50", "AP75", "APm", "APl", "AR")
        return "  ".join(f"{k} {res[k]:.4f}" for k in keys) + span
    return pckh_table(res, 0.5) + f"\nPCKh@0.1 {res['PCKh@0.1']:.2f}" + span


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m okdhp_edge.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--oracle", action="store_true",
                      help="score the ground truth run through crop, encode, decode, back-project")
    what.add_argument("--student", type=Path, help="student.yaml of a zoo student")
    p.add_argument("--dataset", choices=tuple(FORMATS), default=None)
    p.add_argument("--ann", type=str, default="")
    p.add_argument("--images", type=str, default="")
    p.add_argument("--headboxes", type=str, default="")
    p.add_argument("--det-file", type=str, default="", help="person detections (COCO results)")
    p.add_argument("--det-thr", type=number(0), default=0.0)
    p.add_argument("--input-size", type=count(16), nargs=2, default=(192, 256), metavar=("W", "H"))
    p.add_argument("--sigma", type=number(0, above=True), default=2.0)
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test (student default: its config)")
    p.add_argument("--batch-size", type=count(1), default=32)
    p.add_argument("--out", type=Path, help="write the metrics as JSON")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging()
    if args.student:
        from okdhp_edge.students import evaluate_student

        res = evaluate_student(args.student, dataset=args.dataset, ann=args.ann,
                               images=args.images, headboxes=args.headboxes, flip=args.flip,
                               batch_size=args.batch_size)
    else:
        if not (args.dataset and args.ann and args.images):
            raise UsageError("--oracle needs --dataset, --ann and --images")
        ds = build_eval_dataset(args.dataset, args.ann, args.images,
                                {"input_size": tuple(args.input_size), "sigma": args.sigma},
                                headboxes=args.headboxes,
                                det_file=args.det_file, det_thr=args.det_thr)
        preds = predict(ds, oracle_heatmap_fn(ds), batch_size=args.batch_size)
        res = score(ds, preds, headboxes=ds.headboxes)
        res["oracle"] = True
    print(format_metrics(res))
    if args.out:
        atomic_write_json(args.out, res)
        log.info("wrote %s", args.out)
    return 0


cli = console_entry(main)  # the console script: as python -m, one-line errors


if __name__ == "__main__":
    run_cli(main)
