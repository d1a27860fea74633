"""``python -m okdhp_edge.visualize --student PATH/student.yaml --image IMG [--box x y w h]
[--backend onnxruntime|openvino] --out OUT.png``: draw the predicted skeleton, keypoints
coloured by confidence."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import cv2
import numpy as np

from okdhp_edge.data.dataset import read_image
from okdhp_edge.data.keypoints import COCO_17, MPII_16
from okdhp_edge.grammar import Request, option
from okdhp_edge.targets import BASELINE, TARGETS, get_target
from okdhp_edge.utils.cli import UsageError, console_entry, request_main, run_cli
from okdhp_edge.utils.io import atomic_write_bytes


def draw_pose(image: np.ndarray, kpts: np.ndarray, skeleton, thr: float = 0.2,
              box: Optional[tuple] = None) -> np.ndarray:
    """Draw keypoints [K, 3] on an RGB image; colour goes from red (low) to green (high)
    confidence; limbs between joints both above ``thr``."""
    out = image.copy()
    scale = max(1, int(round(max(image.shape[:2]) / 320)))
    if box is not None:
        x, y, w, h = (int(v) for v in box)
        cv2.rectangle(out, (x, y), (x + w, y + h), (255, 255, 0), scale)
    conf = np.clip(kpts[:, 2], 0, 1)
    for a, b in skeleton:
        if conf[a] > thr and conf[b] > thr:
            cv2.line(out, tuple(int(v) for v in kpts[a, :2]), tuple(int(v) for v in kpts[b, :2]),
                     (255, 255, 255), 2 * scale, cv2.LINE_AA)
    for (x, y, c) in kpts:
        c = float(np.clip(c, 0, 1))
        color = (int(255 * (1 - c)), int(255 * c), 0)
        cv2.circle(out, (int(x), int(y)), 3 * scale, color, -1, cv2.LINE_AA)
        cv2.circle(out, (int(x), int(y)), 3 * scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def _cpu_backends() -> list[str]:
    """The backends with an fp32 target that runs on this machine's CPU."""
    return [b for b, p in TARGETS if p == "fp32" and TARGETS[(b, p)].device in ("cpu", "host")]


@dataclass(frozen=True)
class VisualizeRequest(Request):
    """Draws a student's keypoints on an image (the person in ``--box``, default the whole
    image), run on one backend's fp32 file, written as PNG."""

    COMMAND: ClassVar[str] = "okdhp visualize"

    student: Path = option(help="student.yaml of a zoo student")
    image: Path = option(help="the image")
    out: Path = option(help="the PNG written")
    box: Optional[tuple[float, float, float, float]] = option(
        None, "the person's box (default: the whole image)", metavar=("X", "Y", "W", "H"))
    backend: str = option(BASELINE[0], "the backend it runs on", choices=tuple(_cpu_backends()))
    flip: bool = option(False, "flip test")

    def check(self) -> None:
        if self.box is not None and (self.box[2] <= 0 or self.box[3] <= 0):
            raise UsageError("--box needs a positive width and height")


def run(args: VisualizeRequest) -> int:
    """Run the student on the image and write the drawing."""
    from okdhp_edge.manifest import load_student_manifest
    from okdhp_edge.runtime import make_runner
    from okdhp_edge.runtime.pipeline import KeypointPipeline

    man = load_student_manifest(args.student)
    image = read_image(args.image)
    h, w = image.shape[:2]
    box = tuple(args.box) if args.box else (0.0, 0.0, float(w), float(h))
    fmt = get_target(args.backend, "fp32").export
    if fmt is None:  # the student itself (PyTorch)
        path = str(args.student)
    else:
        from okdhp_edge.export.exporter import export_student

        entry = export_student(args.student, formats=(fmt,)).formats[fmt]
        if not entry.available:
            raise UsageError(f"{fmt} unavailable here: {entry.reason}")
        path = str(args.student.parent / "export" / entry.file)
    runner = make_runner(args.backend, "fp32", threads=1)
    runner.load(path)
    kpts = KeypointPipeline(runner, man.preprocessing)(image, box, flip=args.flip)
    runner.close()
    skeleton = (MPII_16 if man.architecture.num_joints == 16 else COCO_17).skeleton
    vis = draw_pose(image, kpts, skeleton, box=box)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    atomic_write_bytes(args.out, buf.tobytes())
    print(f"wrote {args.out} ({args.backend}, {man.name})")
    return 0


main = request_main(VisualizeRequest, run)
cli = console_entry(main)  # the console script: as python -m, one-line errors


if __name__ == "__main__":
    run_cli(main)
