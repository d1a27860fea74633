#!/usr/bin/env bash
# `make arm-check`: the torch-free runtime on aarch64, under QEMU user mode.
#
# Builds (or reuses) a Debian bookworm arm64 user space with Python 3.11, installs the plain
# package there from aarch64 wheels only (no torch), makes a bundle set on this x86 machine
# (ONNX Runtime, OpenVINO and LiteRT; fp32 and int8), and checks on "Arm" that
#   1. every bundle's heatmaps match x86's within its precision's parity bounds
#      (`okdhp bench parity --against`), and
#   2. `okdhp bench --bundles` runs there and its report is marked emulated (its timings
#      are QEMU's, never a device's; `zoo pick` refuses it unless --allow-emulated).
# A negative control follows: one bundle's Arm heatmaps perturbed must fail the check.
#
# QEMU_CPU names the emulated core (default cortex-a76, a Raspberry Pi 5 / RK3588 big core;
# `max` would enable SVE2/SME paths no board takes). The guest is shown that core's Arm
# /proc/cpuinfo: ONNX Runtime's aarch64 build dies at import on the host's x86 one.
# Downloads are cached in $OKDHP_ARM_CACHE (default ~/.cache/okdhp_edge/arm64); the user
# space takes about 1 GB there. Needs root (debootstrap, chroot, mounts) and the Debian and
# PyPI registries on a first run. Docs: docs/arm.md.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PY:-$REPO/.venv/bin/python}
OKDHP=${OKDHP:-$REPO/.venv/bin/okdhp}
CACHE=${OKDHP_ARM_CACHE:-$HOME/.cache/okdhp_edge/arm64}
export QEMU_CPU=${QEMU_CPU:-cortex-a76}
SUITE=bookworm
ROOTFS=$CACHE/rootfs-$SUITE
WHEELS=$CACHE/wheels
WORK=$(mktemp -d /tmp/okdhp-arm-check.XXXXXX)
T0=$(date +%s)

say() { printf '[arm-check %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
die() { say "FAILED: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and bind mounts)"
[ -x "$PY" ] || die "$PY not found: run 'make .venv/.installed' first"

host_tools() {
  if ! command -v debootstrap >/dev/null || [ ! -x /usr/bin/qemu-aarch64-static ]; then
    say "installing qemu-user-static, binfmt-support and debootstrap (apt)"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static binfmt-support \
      debootstrap >/dev/null
  fi
  [ -e /proc/sys/fs/binfmt_misc/status ] ||
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
  grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
    die "the qemu-aarch64 binfmt handler is not enabled"
}

user_space() {
  if [ -x "$ROOTFS/opt/venv/bin/python" ]; then
    say "user space: reusing $ROOTFS"
    return
  fi
  say "user space: debootstrap --arch=arm64 $SUITE (first run: ~240 MB download)"
  rm -rf "$ROOTFS.partial"
  mkdir -p "$CACHE"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$ROOTFS.partial" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 ||
    die "debootstrap failed: see $CACHE/debootstrap.log"
  chroot "$ROOTFS.partial" /usr/bin/python3 -m venv /opt/venv
  mv "$ROOTFS.partial" "$ROOTFS"
}

wheels() {
  say "wheels: the package (pure Python) and its aarch64 dependencies into $WHEELS"
  mkdir -p "$WHEELS" "$WORK/dist"
  # an earlier run's package wheel has the same name: pip would resolve its (older)
  # dependencies instead of this one's
  rm -f "$WHEELS"/okdhp_edge-*.whl
  "$PY" -m pip wheel -q --no-deps -w "$WORK/dist" "$REPO"
  # every manylinux tag the guest's glibc (2.36) accepts: one --platform alone silently
  # resolves old releases
  local plats=(--platform manylinux2014_aarch64)
  for m in $(seq 17 36); do plats+=(--platform "manylinux_2_${m}_aarch64"); done
  "$PY" -m pip download -q -d "$WHEELS" --only-binary=:all: --python-version 3.11 \
    --implementation cp --abi cp311 "${plats[@]}" "$WORK"/dist/*.whl 2>/dev/null ||
    die "pip download of the aarch64 wheels failed"
}

MOUNTS=()
bind() {  # bind SRC DST(in rootfs) [--rbind]
  [ -e "$ROOTFS$2" ] || mkdir -p "$ROOTFS$2"
  mount "${3:---bind}" "$1" "$ROOTFS$2"
  MOUNTS=("$ROOTFS$2" "${MOUNTS[@]}")
}
cleanup() {
  for m in "${MOUNTS[@]}"; do umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

guest_cpuinfo() {  # the emulated core's /proc/cpuinfo, one block per host core
  local part
  case "$QEMU_CPU" in
    cortex-a72) part=0xd08 feats="fp asimd evtstrm crc32 cpuid" ;;
    cortex-a76) part=0xd0b feats="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
    neoverse-n1) part=0xd0c feats="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs" ;;
    *) die "QEMU_CPU=$QEMU_CPU: give cortex-a72, cortex-a76 or neoverse-n1" ;;
  esac
  for i in $(seq 0 $(( $(nproc) - 1 ))); do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$i" "$feats"
    printf 'CPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: %s\nCPU revision\t: 1\n\n' "$part"
  done
}

enter() {  # run a command in the guest with a clean environment (the host's PIP_* stay out)
  env -i PATH=/opt/venv/bin:/usr/bin:/bin HOME=/root LANG=C.UTF-8 QEMU_CPU="$QEMU_CPU" \
    /usr/sbin/chroot "$ROOTFS" "$@"
}

bundle_set() {
  # trained enough that a person's crop gives every joint a heatmap peak (the keypoints
  # compared are the joints whose x86 peak is above 0.2): about 30 s on 2 cores
  # --allow-parity-failure: an INT8 file whose parity against PyTorch fp32 fails on noise
  # inputs is still shipped (its record says so); what this script checks is Arm against x86
  say "x86: a small zoo (2 hourglass students, 64x48) and its bundle set (onnxruntime, openvino, litert; fp32, int8)"
  "$OKDHP" synthetic --out "$WORK/data" --num-train 600 --num-val 32 --seed 3 \
    --image-size 128 96 --workers 0 >"$WORK/x86.log" 2>&1
  "$OKDHP" train --config configs/quickstart.yaml "data.root=$WORK/data" \
    "train.out_dir=$WORK/runs" "zoo.root=$WORK/zoo" zoo.name=armcheck \
    "data.input_size=[64,48]" data.workers=1 model.depth=1 "model.branches=[1,2]" \
    train.epochs=8 train.batch_size=16 train.threads=0 \
    >>"$WORK/x86.log" 2>&1 || die "training the zoo failed: $(tail -3 "$WORK/x86.log")"
  "$OKDHP" zoo export --zoo "$WORK/zoo/armcheck" --all --out "$WORK/set" \
    --backends onnxruntime,openvino,litert --precisions fp32,int8 --calib-images 16 \
    --allow-parity-failure \
    >>"$WORK/x86.log" 2>&1 || die "exporting the bundle set failed: $(tail -3 "$WORK/x86.log")"
}

one_at_a_time() {  # one check per user space; mounts a killed run left are undone
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock -n 9 || { say "another arm-check holds $CACHE: waiting"; flock 9; }
  awk -v r="$ROOTFS/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

main() {
  one_at_a_time
  host_tools
  user_space
  wheels
  bundle_set
  "$OKDHP" bench parity --bundles "$WORK/set" --out "$WORK/x86.npz" --random-inputs 2 \
    --images "$WORK/data/images/val" --max-images 6 \
    --ann "$WORK/data/annotations/person_keypoints_val.json" \
    >>"$WORK/x86.log" 2>&1 || die "x86 heatmaps: $(tail -3 "$WORK/x86.log")"

  guest_cpuinfo >"$WORK/cpuinfo"
  bind /proc /proc --rbind
  bind "$WORK/cpuinfo" /proc/cpuinfo
  bind /sys /sys --rbind
  bind /dev /dev --rbind
  bind "$WHEELS" /wheels
  bind "$WORK" /work
  say "guest ($QEMU_CPU): installing the package from aarch64 wheels only (no torch)"
  local whl
  whl=/work/dist/$(basename "$WORK"/dist/okdhp_edge-*.whl)
  enter pip install -q --no-index --find-links /wheels "$whl"
  enter pip install -q --no-index --force-reinstall --no-deps "$whl"  # this commit's code
  enter python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)" ||
    die "torch is installed in the guest: the plain package must not pull it"
  say "guest: $(enter python -c 'from okdhp_edge.utils.board import read_board; print(read_board().describe())')"

  say "guest: heatmaps of every bundle against x86's"
  enter okdhp bench parity --bundles /work/set --against /work/x86.npz --out /work/arm.npz |
    tee "$WORK/parity.txt" || die "Arm and x86 disagree (above)"
  say "guest: okdhp bench --bundles (timings are QEMU's: the report says emulated)"
  enter okdhp bench --bundles /work/set --backends onnxruntime,openvino,litert \
    --precisions fp32,int8 --no-accuracy --min-iters 3 --min-time 0.01 \
    --warmup-time 0.01 --warmup-iters 1 --rounds 1 --out-root /work/reports \
    >"$WORK/guest-bench.log" 2>&1 || die "guest bench failed: $(tail -5 "$WORK/guest-bench.log")"
  "$PY" - "$WORK" <<'EOF' || die "the guest's report"
import sys
from pathlib import Path
from okdhp_edge.bench.report import load_report
from okdhp_edge.errors import UsageError
from okdhp_edge import api
(path,) = Path(sys.argv[1], "reports").glob("*/armcheck.json")
rep = load_report(path)
ok = [r for r in rep.rows if r.status == "ok"]
bad = [f"{r.label}: {r.reason}" for r in rep.rows if r.status != "ok"]
assert rep.emulated, f"{path}: not marked emulated"
assert not bad, f"rows not measured under emulation: {bad}"
try:
    api.pick(path, 1e6)
    raise SystemExit(f"{path}: zoo pick accepted an emulated report")
except UsageError:
    pass
print(f"[arm-check] report {path.parent.name}/{path.name}: {len(ok)} rows, emulated: {rep.emulated}")
EOF

  say "negative control: one bundle's Arm heatmaps perturbed must fail the check"
  "$PY" - "$WORK" <<'EOF' || die "the negative control"
import sys
from pathlib import Path
from okdhp_edge.bench.parity import load, save
work = Path(sys.argv[1])
arrays, meta = load(work / "arm.npz")
victim = sorted(meta["bundles"])[0]
arrays[f"heatmaps/{victim}"] = arrays[f"heatmaps/{victim}"] + 0.3  # past every bound
save(work / "arm-perturbed.npz", arrays, meta)
(work / "victim").write_text(victim)
EOF
  if "$OKDHP" bench parity --bundles "$WORK/set" --against "$WORK/arm-perturbed.npz" \
      >"$WORK/negative.txt" 2>&1; then
    die "a perturbed bundle ($(cat "$WORK/victim")) passed the check"
  fi
  grep -q "differ: $(cat "$WORK/victim")" "$WORK/negative.txt" ||
    die "the perturbed bundle was not the one named: $(tail -2 "$WORK/negative.txt")"
  say "negative control: $(tail -1 "$WORK/negative.txt")"
  say "passed: $(tail -1 "$WORK/parity.txt") (QEMU_CPU=$QEMU_CPU)"
}

# `arm_check.sh prepare`: the user space and this checkout's aarch64 wheels, ready for another
# use of the guest (the fleet test benches it over SSH: tests/bench/test_fleet.py); it prints
# the user space's and the wheels' folders. `arm_check.sh cpuinfo`: the guest's /proc/cpuinfo.
case "${1:-check}" in
  check) main ;;
  prepare) one_at_a_time; host_tools; user_space; wheels; echo "rootfs=$ROOTFS"; echo "wheels=$WHEELS" ;;
  cpuinfo) guest_cpuinfo ;;
  *) die "usage: $0 [check|prepare|cpuinfo]" ;;
esac
