"""Training throughput alone and beside one busy neighbour, per thread / wait-policy setting:
the measurement behind the trainer's CPU defaults (issue: graceful on a busy machine).

    python benchmarks/contention.py --config configs/quickstart.yaml --out contention.jsonl

Each cell is one short training run (``--iters`` iterations per epoch, two epochs, no
validation, no zoo); its figure is the second epoch's images/s as the trainer logs it (the
first epoch pays for start-up). The neighbour is one process spinning on a core, started
before the run and killed after it. Cells run interleaved (setting x neighbour, then again
for each ``--repeats``), so that a drift of the machine affects every setting alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# name -> (environment, training overrides); None removes a variable. An empty
# OMP_WAIT_POLICY is libgomp's own default (spin a while, then sleep) and stops the kit
# from choosing one.
SETTINGS: dict[str, tuple[dict[str, str | None], list[str]]] = {
    "torch2": ({"OMP_WAIT_POLICY": ""}, ["train.threads=2"]),  # torch's defaults here
    "passive2": ({"OMP_WAIT_POLICY": "PASSIVE"}, ["train.threads=2"]),
    "spin10k2": ({"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000"}, ["train.threads=2"]),
    "threads1": ({"OMP_WAIT_POLICY": ""}, ["train.threads=1"]),
    "kit": ({"OMP_WAIT_POLICY": None}, []),  # the kit's defaults, nothing set by the user
}


def one_run(config: str, env: dict[str, str | None], overrides: list[str], iters: int,
            busy: bool) -> tuple[float, int]:
    """Second-epoch images/s of one short training run, and its thread count then."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "okdhp_edge.train", "--config", config, "--no-zoo",
               "train.epochs=2", f"train.max_iters_per_epoch={iters}", "train.val_every=100",
               "train.warmup_iters=0", f"train.out_dir={tmp}", *overrides]
        full_env = {**os.environ, **{k: v for k, v in env.items() if v is not None}}
        for k in [k for k, v in env.items() if v is None]:
            full_env.pop(k, None)
        spin = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            subprocess.run(cmd, env=full_env, check=True, capture_output=True, timeout=1800)
        finally:
            if spin:
                spin.kill()
                spin.wait()
        (metrics,) = Path(tmp).glob("*/metrics.jsonl")
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        last = [r for r in rows if r.get("epoch") == 2][-1]
        return float(last["images_per_s"]), int(last.get("threads", 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/quickstart.yaml")
    ap.add_argument("--iters", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--out", default="contention.jsonl")
    args = ap.parse_args()
    names = [s for s in args.settings.split(",") if s]
    with open(args.out, "a") as f:
        for rep in range(args.repeats):
            for name in names:
                for busy in (False, True):
                    env, ov = SETTINGS[name]
                    ips, threads = one_run(args.config, env, ov, args.iters, busy)
                    row = {"setting": name, "busy_neighbour": busy, "repeat": rep,
                           "images_per_s": round(ips, 1), "threads_at_end": threads}
                    print(json.dumps(row), flush=True)
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
