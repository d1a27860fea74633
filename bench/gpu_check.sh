#!/usr/bin/env bash
# What only a GPU shows, in one bounded run (a lent NVIDIA machine without network):
#   1. the quickstart journey with CUDA training (amp auto = bf16), bench and pick
#   2. PyTorch CUDA latency (fp32, fp16) of the reference zoo student_zoo/synthetic_full
#   3. training throughput of the quickstart network: bf16 / fp16 (grad scaler) / fp32
#   4. DistributedDataParallel on one GPU (torchrun --nproc_per_node=1, nccl)
#   5. the COCO-size unbalanced network's AMP speed-up (benchmarks/test_bench_train.py -k gpu)
#   6. several training processes sharing the GPU (what an ablation on a GPU would get)
#   7. (issue 27) training-step throughput, MFU and peak memory of the COCO unbalanced network
#      at batch 32 / 64 and of the quickstart network, bf16, eager vs torch.compile vs CUDA
#      graphs (benchmarks/train_throughput.py), and DDP over one GPU with the compiled step
#   8. (issue 39) quantization-aware fine-tuning of the fp32 run on the GPU, 20 iterations
#      (PT2E fake quantization on CUDA; needs okdhp_edge[qat]: its reason is printed if not)
# Each step has its own time limit and a failed step does not stop the others.
# Usage: OUT=/some/dir bash bench/gpu_check.sh   (writes OUT/log.txt, OUT/summary.txt,
# OUT/gpu_check.tar.gz); STEPS="ddp_one_gpu pytest_gpu" runs only those steps. Needs the
# weights of student_zoo/synthetic_full and, where pycocotools is missing, its wheel in .whl/.
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
# DEVICE=cpu and a short ITERS try the script's plumbing on a machine without a GPU
export PY RUNS=${RUNS:-/tmp/gpu_runs} W=${WORKERS:-6} DEVICE=${DEVICE:-cuda}
export ITERS=${ITERS:-"train.epochs=2 train.max_iters_per_epoch=60 train.val_every=100"}
STEPS=${STEPS:-all}
DEADLINE=${DEADLINE:-430}  # seconds for all steps: later steps are skipped or cut short
# (on an H100 on 2026-11-26 all steps but the quickstart took about 400 s; the quickstart
# trained 24 s per epoch, about 3 min before its bench: STEPS=quickstart DEADLINE=360)
T0=$(date +%s)
step() {  # step NAME SECONDS CMD... (CMD may be a function of this script)
  local name=$1 limit=$2; shift 2
  [[ $STEPS == all || " $STEPS " == *" $name "* ]] || return 0
  local left=$(( DEADLINE - ($(date +%s) - T0) ))
  if (( left < 20 )); then
    echo "=== $name skipped: ${left} s left of the ${DEADLINE} s deadline"
    echo "$name skipped" >> "$OUT/steps.txt"; return 0
  fi
  (( limit > left )) && limit=$left
  echo "=== [$(( $(date +%s) - T0 )) s] $name (limit ${limit} s): $*"
  local s=$(date +%s)
  timeout --signal=TERM --kill-after=10 "$limit" bash -c '"$@"' _ "$@"
  local rc=$?
  echo "=== $name rc=$rc in $(( $(date +%s) - s )) s"
  echo "$name rc=$rc $(( $(date +%s) - s ))s" >> "$OUT/steps.txt"
}
train() {  # train RUN_NAME OVERRIDES... (ITERS unquoted: several overrides)
  local name=$1; shift
  # shellcheck disable=SC2086
  $PY -m okdhp_edge.train --config configs/quickstart.yaml --no-zoo "train.device=$DEVICE" \
    "data.workers=$W" "train.out_dir=$RUNS" "train.run_name=$name" $ITERS "$@"
}
conc() {  # four runs at once, 3 loader workers each; a time-out stops all four
  trap 'kill $(jobs -p) 2>/dev/null' TERM
  for i in 1 2 3 4; do
    W=3 train "conc$i" "train.seed=$i" > "$RUNS/conc$i.out" 2>&1 &
  done
  wait
  wait
}
export -f train conc
mkdir -p "$RUNS"

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
  --format=csv || true
$PY -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, \
'cuda', torch.version.cuda, torch.cuda.get_device_name(), \
'bf16', torch.cuda.is_bf16_supported())"
nproc

tput() {  # tput CONFIG BATCHES: images/s, MFU, peak memory per compile mode
  $PY benchmarks/train_throughput.py --config "$1" --batches "$2" --amp bf16 --device "$DEVICE" \
    --modes off,default,reduce-overhead --steps 20 --out "$OUT/throughput.jsonl"
}
export -f tput
step throughput_coco 240 tput configs/coco/okdhp_unbalanced_2_4_6_256x192.yaml 32,64
step throughput_quickstart 120 tput configs/quickstart.yaml 128,256
step data 60 $PY -m okdhp_edge.data.synthetic --out data/synthetic --num-train 3000 \
  --num-val 300 --workers 8
step train_bf16 90 train amp_bf16 train.amp=bf16
step train_fp16 90 train amp_fp16 train.amp=fp16
# shellcheck disable=SC2086
step ddp_one_gpu 90 $PY -m torch.distributed.run --standalone --nproc_per_node=1 \
  -m okdhp_edge.train --config configs/quickstart.yaml --no-zoo "train.device=$DEVICE" \
  "data.workers=$W" "train.out_dir=$RUNS" train.run_name=ddp1 $ITERS
# shellcheck disable=SC2086
step ddp_compiled 120 $PY -m torch.distributed.run --standalone --nproc_per_node=1 \
  -m okdhp_edge.train --config configs/quickstart.yaml --no-zoo "train.device=$DEVICE" \
  "data.workers=$W" "train.out_dir=$RUNS" train.run_name=ddp1_compiled \
  train.compile=reduce-overhead $ITERS
step bench_cuda 120 $PY -m okdhp_edge.bench --zoo student_zoo/synthetic_full \
  --backends torch,tensorrt --torch-device "$DEVICE" --precisions fp32,fp16 \
  --min-time 1.0 --min-iters 50 --rounds 2
step quickstart 330 $PY -m okdhp_edge.quickstart "data.workers=$W"
step train_fp32 60 train amp_off train.amp=off
step qat 150 $PY -m okdhp_edge.train --qat-from "$RUNS/amp_off" --no-zoo \
  "train.device=$DEVICE" "train.out_dir=$RUNS" qat.epochs=1 train.max_iters_per_epoch=20
step train_hg4_bf16 60 train hg4_bf16 model.name=hg model.num_stacks=4
step pytest_gpu 90 $PY -m pytest -q -p no:cacheprovider benchmarks/test_bench_train.py -k gpu \
  --benchmark-only --benchmark-json="$OUT/bench_train_gpu.json" -o addopts=""
step concurrent_4 90 conc

$PY - "$RUNS" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path
runs = Path(sys.argv[1])
print(f"{'run':24s} {'epoch':>5s} {'img/s':>8s} {'AP (select, best head)':>24s}")
for d in sorted(p for p in runs.iterdir() if p.is_dir()):
    m = d / "metrics.jsonl"
    if not m.is_file():
        print(f"{d.name:24s} no metrics"); continue
    recs = [json.loads(x) for x in m.read_text().splitlines() if x.strip()]
    last = recs[-1]
    sel = [v for r in recs for v in r.get("select", {}).values()]
    print(f"{d.name:24s} {last['epoch']:5d} {last['images_per_s']:8.1f} "
          f"{max(sel) if sel else float('nan'):24.3f}")
EOF
if [[ -f $OUT/throughput.jsonl ]]; then
  $PY - "$OUT/throughput.jsonl" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
for r in map(json.loads, open(sys.argv[1])):
    if "error" in r:
        print(f"batch {r['batch']:4d} {r['mode']:16s} error: {r['error'][:80]}"); continue
    print(f"{r['config']:6s} batch {r['batch']:4d} {r['mode']:16s} {r['images_per_s']:9.1f} img/s "
          f"MFU {100 * r['mfu']:5.1f}%  peak {r['peak_mem_gib'] or 0:6.1f} GiB  "
          f"warm-up {r['warmup_s']:6.1f} s")
EOF
fi
if [[ -f $OUT/bench_train_gpu.json ]]; then
  $PY - "$OUT/bench_train_gpu.json" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    print(f"{b['name']:58s} median {b['stats']['median'] * 1e3:8.2f} ms  {b['extra_info']}")
EOF
fi
cat "$OUT/steps.txt"
# shellcheck disable=SC2046
tar czf "$OUT/gpu_check.tar.gz" bench/reports student_zoo/*/*.yaml student_zoo/*/*/*.yaml \
  $(find runs "$RUNS" -name metrics.jsonl -o -name train.log -o -name config.yaml \
    -o -name '*.out' 2>/dev/null) 2>/dev/null
echo "total $(( $(date +%s) - T0 )) s"
