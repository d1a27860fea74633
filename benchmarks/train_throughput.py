"""Training-step throughput of a config's network: images/s, model FLOPs utilisation and
peak memory, eager against torch.compile modes, on synthetic tensors (no data loading: the
loader is measured by benchmarks/test_bench_loader.py). The step is the trainer's own: forward
and the OKDHP loss terms through ``compiled_terms``, backward, Adam (fused on CUDA).

    python benchmarks/train_throughput.py \
        --config configs/coco/okdhp_unbalanced_2_4_6_256x192.yaml \
        --batches 32,64 --modes off,default,reduce-overhead --amp bf16 --out results.jsonl

MFU = 3 x forward FLOPs per image x images/s / the device's peak (``--peak-tflops``; the
H100/H200 SXM dense bf16 peak, 989 TFLOP/s, by default).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from okdhp_edge.config import load_config
from okdhp_edge.data.formats import get_spec
from okdhp_edge.families import is_multi_branch
from okdhp_edge.losses import okdhp_terms, plain_terms
from okdhp_edge.models.info import count_macs
from okdhp_edge.models.registry import create_model, model_kwargs_from_config
from okdhp_edge.training.device import compiled_terms


def measure(cfg, batch: int, mode: str, amp: str, device: torch.device, steps: int,
            peak_tflops: float) -> dict:
    joints = get_spec(cfg.data.dataset).num_joints
    model = create_model(cfg.model.name, **model_kwargs_from_config(cfg.model, joints))
    w, h = cfg.data.input_size
    flops = 2 * count_macs(model, (w, h))  # forward, one image, fp32 count
    model = model.to(device).to(memory_format=torch.channels_last).train()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
    plain = not is_multi_branch(cfg.model.name)

    def terms(x, t, wt):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x)
        return plain_terms(out, t, wt) if plain else okdhp_terms(out, t, wt, cfg.loss)

    fn = compiled_terms(terms, mode, device)
    s = cfg.data.heatmap_stride
    x = torch.randn(batch, 3, h, w, device=device).contiguous(memory_format=torch.channels_last)
    t = torch.rand(batch, joints, h // s, w // s, device=device)
    wt = torch.ones(batch, joints, device=device)

    def step():
        mse, ens, kl = fn(x, t, wt)
        (mse + ens + 2.0 * kl).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(3):  # compile and warm-up
        step()
    sync()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = (time.perf_counter() - t0) / steps
    ips = batch / dt
    return {"config": cfg.model.name, "batch": batch, "mode": mode, "amp": amp,
            "device": str(device), "images_per_s": ips, "step_ms": dt * 1e3,
            "warmup_s": warm, "gflop_per_image_train": 3 * flops / 1e9,
            "mfu": 3 * flops * ips / (peak_tflops * 1e12),
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30
            if device.type == "cuda" else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--batches", default="32,64")
    p.add_argument("--modes", default="off,default,reduce-overhead")
    p.add_argument("--amp", default="bf16", choices=("off", "bf16", "fp16"))
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--out", default=None, help="append JSON lines here")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    cfg = load_config(args.config, args.overrides)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for batch in (int(b) for b in args.batches.split(",")):
        for mode in args.modes.split(","):
            try:
                res = measure(cfg, batch, mode, args.amp, device, args.steps, args.peak_tflops)
            except Exception as exc:  # noqa: BLE001 - one failing mode does not stop the rest
                res = {"batch": batch, "mode": mode, "error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(res), flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
