"""Selection-split AP of the OpenVINO INT8 files that the calibration experiment built
(NNCF's default ranges against min-max) beside fp32: the split on which a default method may
be chosen (the calibration report scores the report split).

    python benchmarks/int8_selection_check.py [--zoo student_zoo/synthetic_full]
        [--work-dir runs/calibration/synthetic_full]

Needs the experiment's work folder (``python -m okdhp_edge.bench calibration --zoo Z
--backends openvino --images 300 --methods default,minmax``). Accuracy only; one thread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    import openvino as ov

    from okdhp_edge.export.exporter import selection_validation
    from okdhp_edge.manifest import zoo_students

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", type=Path, default=Path("student_zoo/synthetic_full"))
    p.add_argument("--work-dir", type=Path, default=Path("runs/calibration/synthetic_full"))
    args = p.parse_args()
    core, out = ov.Core(), {}
    for _, man in zoo_students(args.zoo):
        items, _, metric = selection_validation(man)
        base = args.work_dir / man.name
        for tag, xml in (("fp32", base / "fp32/openvino_fp32/model.xml"),
                         ("default", base / "openvino-default-300/openvino_int8/model.xml"),
                         ("minmax", base / "openvino-minmax-300/openvino_int8/model.xml")):
            if not xml.is_file():
                print(f"{man.name} {tag}: {xml} missing (run the calibration experiment)")
                continue
            compiled = core.compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                            "INFERENCE_NUM_THREADS": 1})
            key = f"{man.name}/{tag}"
            out[key] = metric(compiled, items)
            print(f"{key}: {out[key]:.4f}", flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
