"""``okdhp evaluate``: score a student, or the codec oracle, on COCO / MPII / synthetic data
(:class:`EvaluateRequest`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from okdhp_edge.data.formats import DATASET_FORMATS
from okdhp_edge.evaluation.datasets import build_eval_dataset
from okdhp_edge.evaluation.inference import oracle_heatmap_fn, predict, score
from okdhp_edge.evaluation.pckh import pckh_table
from okdhp_edge.evaluation.uncertainty import interval_text
from okdhp_edge.grammar import Request, option
from okdhp_edge.utils.cli import UsageError, console_entry, request_main, run_cli
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


# the keys only the codec oracle reads (a student's preprocessing is its manifest's)
ORACLE_ONLY = ("det_file", "det_thr", "input_size", "sigma")


@dataclass(frozen=True)
class EvaluateRequest(Request):
    """Scores a student (``--student PATH/student.yaml``: on its report split, or on
    ``--dataset/--ann/--images``), or the codec oracle (``--oracle``: the ground truth run
    through crop, encode, decode and back-projection; needs ``--dataset``, ``--ann`` and
    ``--images``, and ``--headboxes`` for MPII)."""

    COMMAND: ClassVar[str] = "okdhp evaluate"

    student: Optional[Path] = option(None, "student.yaml of a zoo student")
    oracle: bool = option(False, "score the ground truth run through crop, encode, decode, "
                          "back-project")
    dataset: Optional[str] = option(None, "the dataset format", choices=tuple(DATASET_FORMATS))
    ann: str = option("", "the annotation file")
    images: str = option("", "the image folder")
    headboxes: str = option("", "MPII's head boxes")
    det_file: str = option("", "person detections (COCO results)")
    det_thr: float = option(0.0, "detection score threshold", minimum=0, maximum=1)
    input_size: tuple[int, int] = option((192, 256), "the oracle's input size", minimum=16,
                                         maximum=4096, metavar=("W", "H"))
    sigma: float = option(2.0, "the oracle's heatmap sigma", minimum=0, above=True)
    flip: Optional[bool] = option(None, "flip test (default: the student's config)")
    batch_size: int = option(32, "images per batch", minimum=1, maximum=4096)
    out: Optional[Path] = option(None, "write the metrics as JSON")

    def check(self) -> None:
        if bool(self.student) == self.oracle:
            raise UsageError("evaluate needs one of --student or --oracle")
        if self.oracle and not (self.dataset and self.ann and self.images):
            raise UsageError("--oracle needs --dataset, --ann and --images")
        oracle_only = [k.label for k in self.keys() if k.name in ORACLE_ONLY
                       and getattr(self, k.name) != k.default]
        if self.student and oracle_only:
            raise UsageError(f"{', '.join(oracle_only)}: the oracle's; a student is "
                             "evaluated with its own preprocessing and ground-truth boxes "
                             "(its manifest), so these would be ignored")


def run(args: EvaluateRequest) -> int:
    """Score, print the metrics, write them with ``--out``."""
    if args.student:
        from okdhp_edge.students import evaluate_student

        res = evaluate_student(args.student, dataset=args.dataset, ann=args.ann,
                               images=args.images, headboxes=args.headboxes, flip=args.flip,
                               batch_size=args.batch_size)
    else:
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


main = request_main(EvaluateRequest, run)
cli = console_entry(main)  # the console script: as python -m, one-line errors


if __name__ == "__main__":
    run_cli(main)
