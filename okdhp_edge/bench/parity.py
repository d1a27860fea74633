"""``okdhp bench parity``: does a bundle set compute on this device what it computed on
another? Every bundle of the set runs on seeded inputs and, with ``--images``, on real crops
(people give heatmaps real peaks; noise has none); ``--out FILE.npz`` keeps the inputs and
each bundle's heatmaps. ``--against REF.npz`` runs REF's own inputs (so image decoding and
cropping are not compared, only the runtime) and judges each bundle's heatmaps against REF's
with its precision's parity bounds (:data:`okdhp_edge.targets.TOLERANCE`): exit 0 when every
bundle agrees, 1 when one differs or is missing. No torch: it runs where the bundles run.

The ``.npz`` holds ``input/<h>x<w>`` [N, 3, h, w] float32 per input size,
``heatmaps/<bundle path>`` [N, K, h', w'] per bundle, and ``meta`` (JSON: the device and
board it ran on, and per bundle its student, backend, precision and input key)."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from okdhp_edge.evaluation.parity import parity
from okdhp_edge.grammar import Request, option
from okdhp_edge.targets import TOLERANCE
from okdhp_edge.utils.cli import UsageError, request_main
from okdhp_edge.utils.io import atomic_write_bytes

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class ParityRequest(Request):
    """Run a bundle set on fixed inputs and keep its heatmaps (``--out``), or judge them
    against another device's (``--against``)."""

    COMMAND: ClassVar[str] = "okdhp bench parity"

    bundles: Path = option(help="a bundle set (okdhp zoo export --all)")
    out: Optional[Path] = option(None, "write the inputs and this device's heatmaps here "
                                 "(.npz)")
    against: Optional[Path] = option(None, "a file --out wrote on another device: run its "
                                     "inputs here and judge this device's heatmaps against its")
    images: Optional[Path] = option(None, "a folder of images whose crops join the seeded "
                                    "inputs (without --against): whole images, or --ann's "
                                    "person boxes")
    ann: Optional[Path] = option(None, "with --images: a COCO keypoints JSON whose person "
                                 "boxes are cropped (a person gives every joint a peak)")
    random_inputs: int = option(2, "seeded random inputs (without --against)", minimum=0,
                                maximum=64)
    max_images: int = option(4, "at most this many images of --images", minimum=0,
                             maximum=64)
    threads: int = option(1, "CPU threads of each runtime", minimum=1)

    def check(self) -> None:
        if not (self.out or self.against):
            raise UsageError(f"{self.COMMAND} needs --out (keep the heatmaps), --against "
                             "(judge them against another device's), or both")
        if self.against and self.images:
            raise UsageError("images (--images): with --against the inputs are the "
                             "reference's own")
        if self.ann and not self.images:
            raise UsageError("ann (--ann): goes with --images (the folder of its images)")


@dataclass(frozen=True)
class Verdict:
    """One bundle's heatmaps here against the reference's."""

    bundle: str
    precision: str
    passed: bool
    max_abs_heatmap_err: Optional[float] = None
    mean_kpt_disp_px: Optional[float] = None
    joints_compared: int = 0
    reason: str = ""

    def line(self) -> str:
        if self.max_abs_heatmap_err is None:
            return f"{self.bundle}: FAILED: {self.reason}"
        err, disp = TOLERANCE[self.precision]
        return (f"{self.bundle} ({self.precision}): max heatmap err "
                f"{self.max_abs_heatmap_err:.3g} (bound {err:g}), mean keypoint shift "
                f"{self.mean_kpt_disp_px:.3g} px over {self.joints_compared} joints (bound "
                f"{disp:g}): {'ok' if self.passed else 'DIFFERS'}")


def _input_key(hw: tuple[int, int]) -> str:
    return f"input/{hw[0]}x{hw[1]}"


def _crop_list(folder: Path, ann: Optional[Path], limit: int
               ) -> list[tuple[Path, Optional[tuple[float, ...]]]]:
    """(image file, person box or None for the whole image), at most ``limit``."""
    if ann is None:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UsageError(f"images (--images) {folder}: no .jpg or .png files")
        return [(f, None) for f in files[:limit]]
    try:
        data = json.loads(ann.read_text())
        names = {im["id"]: im["file_name"] for im in data["images"]}
        people = [(folder / names[a["image_id"]], tuple(float(v) for v in a["bbox"]))
                  for a in data["annotations"] if a.get("num_keypoints", 1) > 0]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"ann (--ann) {ann}: not a COCO keypoints file ({exc})") from None
    if not people:
        raise UsageError(f"ann (--ann) {ann}: no annotated person")
    return people[:limit]


def _image_crops(req: ParityRequest, pipeline: Any) -> list[np.ndarray]:
    """Crops of ``--images`` (whole images, or ``--ann``'s person boxes), preprocessed as the
    bundle does. Each [3, h, w]."""
    import cv2

    assert req.images is not None
    crops = []
    for f, box in _crop_list(req.images, req.ann, req.max_images):
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise UsageError(f"{f}: not a readable image")
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        x, _, _ = pipeline.preprocess(rgb, box or (0.0, 0.0, float(rgb.shape[1]),
                                                   float(rgb.shape[0])))
        crops.append((x.transpose(0, 3, 1, 2) if pipeline.nhwc else x)[0].copy())
    return crops


def _inputs_for(req: ParityRequest, pipeline: Any, hw: tuple[int, int]) -> np.ndarray:
    """The inputs of one input size: seeded noise, then the images' crops. [N, 3, h, w]"""
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((req.random_inputs, 3, *hw)).astype(np.float32)]
    if req.images:
        parts.append(np.stack(_image_crops(req, pipeline)))
    x = np.concatenate(parts)
    if not len(x):
        raise UsageError("no inputs: give --random-inputs above 0 or --images")
    return x


def _run(pipeline: Any, x: np.ndarray) -> np.ndarray:
    """Heatmaps of ``x`` [N, 3, h, w], one image per call as the bench runs them (in the
    file's own layout)."""
    from okdhp_edge.backends.base import run_one_by_one

    fed = x.transpose(0, 2, 3, 1) if pipeline.nhwc else x
    return np.asarray(run_one_by_one(pipeline.runner, fed), np.float32)


def run_set(req: ParityRequest, inputs: Optional[dict[str, np.ndarray]] = None
            ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every bundle of the set on ``inputs`` (made from the request when None): the arrays
    of the ``.npz`` and its meta."""
    from okdhp_edge.bench.device import device_id, fingerprint
    from okdhp_edge.runtime.bundle import load_bundle, read_set

    idx = read_set(req.bundles)
    arrays: dict[str, np.ndarray] = {} if inputs is None else dict(inputs)
    fp = fingerprint(req.threads)
    meta: dict[str, Any] = {"device_id": device_id(fp), "board": fp["board"], "bundles": {}}
    for e in idx.bundles:
        pipeline = load_bundle(req.bundles / e.path, threads=req.threads)
        try:
            w, h = pipeline.input_size
            key = _input_key((h, w))
            if key not in arrays:
                if inputs is not None:
                    raise UsageError(f"{e.path}: the reference has no inputs of {h}x{w}")
                arrays[key] = _inputs_for(req, pipeline, (h, w))
            arrays[f"heatmaps/{e.path}"] = _run(pipeline, arrays[key])
        finally:
            pipeline.runner.close()
        meta["bundles"][e.path] = {"student": e.student, "backend": e.backend,
                                   "precision": e.precision, "input": key,
                                   "stride": pipeline.codec.stride}
        log.info("%s: %d inputs run", e.path, len(arrays[key]))
    return arrays, meta


def save(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.array(json.dumps(meta)), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and meta of a ``.npz`` written by :func:`save` (no pickles)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != "meta"}
            meta = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{path}: not a file written by {ParityRequest.COMMAND} --out "
                         f"({exc})") from None
    return arrays, meta


def judge(ref: dict[str, np.ndarray], ref_meta: dict[str, Any],
          here: dict[str, np.ndarray], meta: dict[str, Any]) -> list[Verdict]:
    """Each bundle of the reference judged on this run's heatmaps of it."""
    out = []
    for path, info in ref_meta["bundles"].items():
        prec = info["precision"]
        key = f"heatmaps/{path}"
        if key not in here or path not in meta["bundles"]:
            out.append(Verdict(path, prec, False, reason="not in this run's bundle set"))
            continue
        if here[key].shape != ref[key].shape:
            out.append(Verdict(path, prec, False, reason=f"heatmaps of shape "
                               f"{here[key].shape}, the reference's {ref[key].shape}"))
            continue
        st = parity(ref[key], here[key], int(info["stride"]))
        err, disp = TOLERANCE[prec]
        ok = st["max_abs_heatmap_err"] <= err and st["mean_kpt_disp_px"] <= disp
        out.append(Verdict(path, prec, ok, st["max_abs_heatmap_err"], st["mean_kpt_disp_px"],
                           st["joints_compared"]))
    return out


def run(req: ParityRequest) -> int:
    ref = ref_meta = None
    if req.against:
        ref, ref_meta = load(req.against)
    inputs = {k: v for k, v in ref.items() if k.startswith("input/")} if ref else None
    arrays, meta = run_set(req, inputs)
    if req.out:
        save(req.out, arrays, meta)
        print(f"heatmaps of {len(meta['bundles'])} bundles on {meta['device_id']}: {req.out}")
    if ref is None or ref_meta is None:
        return 0
    verdicts = judge(ref, ref_meta, arrays, meta)
    print(f"{meta['device_id']} against {ref_meta['device_id']} ({req.against}):")
    for v in verdicts:
        print("  " + v.line())
    bad = [v for v in verdicts if not v.passed]
    print(f"{len(verdicts) - len(bad)} of {len(verdicts)} bundles agree"
          + (f"; differ: {', '.join(v.bundle for v in bad)}" if bad else ""))
    return 1 if bad else 0


main = request_main(ParityRequest, run)
