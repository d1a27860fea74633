"""INT8 with the final heatmap convolution kept in fp32 (``--int8-keep-head``) on every
student of a zoo, both CPU backends, default calibration (300 training-split crops): report-
split accuracy and, for OpenVINO, the selection split (where a default may be chosen).

    python bench/int8_keep_head_check.py [--zoo student_zoo/synthetic_full]
        [--work-dir runs/calibration_keephead]

Compare with the ``default @ 300`` cells of the calibration report. Accuracy only; one
thread per runner, so it may share the machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from okdhp_edge.bench.calibration import _measure
    from okdhp_edge.evaluation.datasets import report_dataset
    from okdhp_edge.export.quantize import QuantRecipe
    from okdhp_edge.manifest import zoo_students

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", type=Path, default=Path("student_zoo/synthetic_full"))
    p.add_argument("--work-dir", type=Path, default=Path("runs/calibration_keephead"))
    args = p.parse_args()
    members = zoo_students(args.zoo)
    dataset = report_dataset(members[0][1])
    out = {}
    for d, man in members:
        for backend in ("openvino", "onnxruntime"):
            cell = _measure(d / "student.yaml", man, backend, "int8",
                            args.work_dir / man["name"] / backend, QuantRecipe(keep_head=True),
                            dataset)
            key = f"{man['name']}/{backend}"
            out[key] = {k: cell.get(k) for k in ("value", "select_value",
                                                 "higher_precision_layers")}
            print(key, out[key], flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
