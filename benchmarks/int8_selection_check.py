"""INT8 recipes compared on the selection split, the split on which a default may be chosen
(bench reports score the report split): each student's fp32 file and its INT8 file under
each recipe, run by one backend, scored on the held-out selection persons, with every
difference's paired 95% interval over the selection images: each recipe against fp32, and
each later recipe against the first.

    python benchmarks/int8_selection_check.py --zoo student_zoo/synthetic_light \\
        --backend onnxruntime --recipes ort_quantizer=ort ort_quantizer=nncf
    python benchmarks/int8_selection_check.py --zoo student_zoo/synthetic_full \\
        --backend openvino --recipes method=default method=minmax

A recipe is ``field=value[,field=value]`` of :class:`okdhp_edge.convert.quantize.QuantRecipe`
(300 calibration crops unless ``num_images`` says otherwise). INT8 files are built under
``--work-dir/<student>/<recipe>`` (reused when their recipe and sha256 check out). One
thread; accuracy only. Prints a Markdown table and writes ``--out`` (JSON) atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def parse_recipe(text: str) -> dict[str, Any]:
    """``method=minmax,num_images=300`` -> {"method": "minmax", "num_images": 300}."""
    out: dict[str, Any] = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        out[key] = int(value) if value.isdigit() else value
    return out


def student_rows(d: Path, man: Any, backend: str, recipes: list[str], work: Path
                 ) -> dict[str, Any]:
    """fp32 and each recipe's INT8 of one student: value, and difference from fp32 with
    its paired interval, on the selection split."""
    from okdhp_edge.bench.run import file_accuracy
    from okdhp_edge.convert.quantize import QuantRecipe
    from okdhp_edge.evaluation.datasets import training_split
    from okdhp_edge.evaluation.uncertainty import paired_delta

    dataset = training_split(man, "select")
    _, base = file_accuracy(d / "student.yaml", man, backend, "fp32", None, None, dataset)
    out = {"fp32": {"value": base["value"]}}
    first = None
    for text in recipes:
        recipe = QuantRecipe(**{"num_images": 300, **parse_recipe(text)})
        folder = work / man.name / text.replace("=", "-").replace(",", "+")
        _, acc = file_accuracy(d / "student.yaml", man, backend, "int8", folder, recipe,
                               dataset)
        ci = paired_delta(acc.get("units"), base.get("units"), acc.get("bootstrap"))
        out[text] = {"value": acc["value"], "delta": acc["value"] - base["value"],
                     "delta_ci95": None if ci is None else [ci.low, ci.high]}
        if first is None:
            first = acc
            continue
        ci = paired_delta(acc.get("units"), first.get("units"), acc.get("bootstrap"))
        out[text]["minus_first"] = acc["value"] - first["value"]  # the first recipe's file
        out[text]["minus_first_ci95"] = None if ci is None else [ci.low, ci.high]
    return out


def _cell(value: float, ci: Any) -> str:
    return f"{value:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else f"{value:+.4f}"


def main() -> None:
    from okdhp_edge.manifest import zoo_students
    from okdhp_edge.utils.io import atomic_write_json

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", type=Path, required=True)
    p.add_argument("--backend", required=True)
    p.add_argument("--recipes", nargs="+", required=True)
    p.add_argument("--work-dir", type=Path, default=Path("runs/int8_selection"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    table = {man.name: student_rows(d, man, args.backend, args.recipes, args.work_dir)
             for d, man in zoo_students(args.zoo)}
    print("| student | fp32 | " + " | ".join(f"{r} - fp32" for r in args.recipes) + " |")
    print("|---|---|" + "---|" * len(args.recipes))
    for name, row in table.items():
        cells = [_cell(row[r]["delta"], row[r]["delta_ci95"]) for r in args.recipes]
        print(f"| {name} | {row['fp32']['value']:.4f} | " + " | ".join(cells) + " |")
    if len(args.recipes) > 1:  # each later recipe against the first, paired
        print("\n| student | " + " | ".join(f"{r} - {args.recipes[0]}"
                                             for r in args.recipes[1:]) + " |")
        print("|---|" + "---|" * (len(args.recipes) - 1))
        for name, row in table.items():
            cells = [_cell(row[r]["minus_first"], row[r]["minus_first_ci95"])
                     for r in args.recipes[1:]]
            print(f"| {name} | " + " | ".join(cells) + " |")
    out = args.out or args.work_dir / f"{args.zoo.name}_{args.backend}.json"
    atomic_write_json(out, {"zoo": str(args.zoo), "backend": args.backend,
                            "split": "selection", "rows": table})
    print(f"json: {out}")


if __name__ == "__main__":
    main()
