#!/usr/bin/env bash
# a small trained light zoo, then both decoder forms in fp32 and int8 with accuracy (AMD EPYC 2c)
set -euo pipefail
cd "$(dirname "$0")/../../../.."  # the checkout
W=${W:-/tmp/lightacc}
rm -rf $W; mkdir -p $W
T0=$(date +%s)
.venv/bin/okdhp train --config configs/synthetic_light.yaml "data.root=$W/data" "train.out_dir=$W/runs" "zoo.root=$W/zoo" zoo.name=light_small data.synthetic_num_train=800 data.synthetic_num_val=150 \
  "data.input_size=[96,128]" model.width_mult=0.5 "model.decoder_widths=[32,64]" model.fau_width=32 train.epochs=24 "train.lr_steps=[18,22]" loss.ramp_epochs=4 train.val_every=6 train.batch_size=32 train.threads=0 >> $W/log 2>&1
echo "trained in $(( $(date +%s) - T0 )) s"
.venv/bin/okdhp bench --zoo $W/zoo/light_small --backends torch,onnxruntime,openvino,litert,executorch --precisions fp32,int8 --decoder both --min-time 0.3 --rounds 2 --out-root $W/reports >> $W/log 2>&1
echo "done in $(( $(date +%s) - T0 )) s"
