#!/bin/bash
# The CUDA path on a machine with one GPU, its own CUDA build of PyTorch and no network, in under
# 8 minutes: install vrnn over that PyTorch without fetching anything, run the CUDA tests (the
# fast paths against their literal per-step readings on the GPU, bf16 against float32, the
# particle filter, training from the command line), the benchmark's training rows at the speech
# and paper-speech sizes, and a few hundred steps of `vrnn train --preset paper` on speech in
# fp32 and bf16, printing steps per second and the bound.
#
# Prepare on a machine with a package registry, in the repository's root (both folders are
# git-ignored there by these lines and travel with the tree):
#   echo /.whl/ >> .git/info/exclude; echo /.speech/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl soundfile==0.13.1 cffi==1.17.1 pycparser==2.22
#   mkdir -p .speech && cp -r /usr/share/asterisk/sounds/en_US_f_Allison .speech/
# Then there:  OUT=/some/folder bash benchmarks/gpu_check.sh   (everything it writes goes to $OUT)
#
# Status: ran on an NVIDIA H200 on 2026-12-04 in 160 s (docs/PERFORMANCE.md, "GPU").
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
log() { echo "== $(date -u +%H:%M:%S) $*"; }

log "install (no network): carried wheels, then vrnn over the machine's torch"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
# vrnn itself from the tree, never resolving dependencies (torch stays the machine's own)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python3 - <<'PY' || exit 1
import torch, soundfile, vrnn
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NONE")
print("bf16", torch.cuda.is_bf16_supported(), "vrnn", vrnn.__version__, "soundfile",
      soundfile.__version__)
assert torch.cuda.is_available(), "no CUDA device"
PY
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"

log "CUDA tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 \
  | tee "$OUT/tests.txt" | tail -5

log "benchmark: training rows at the speech and paper-speech sizes in fp32 and bf16, both rates"
timeout 150 python3 -m vrnn.bench --device cuda --configs speech,paper-speech --no-evaluation \
  --no-generation --no-scaling --no-compile --repeats 6 --particle-configs none \
  --precision fp32,bf16 \
  --json "$OUT/benchmark-cuda.json" --markdown "$OUT/benchmark-cuda.md" 2>&1 | tail -25
python3 - <<'PY' | tee "$OUT/bf16_rate.txt"
import time, torch
for dtype in (torch.float32, torch.bfloat16):
    a = torch.randn(8192, 8192, device="cuda", dtype=dtype); b = torch.randn_like(a)
    for _ in range(3): a @ b
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(10): a @ b
    torch.cuda.synchronize(); dt = (time.perf_counter() - t) / 10
    print(f"{dtype}: {2 * 8192**3 / dt / 1e12:.0f} TFLOP/s (8192^3 torch.mm, TF32 "
          f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'})")
PY

DATA=.speech/en_US_f_Allison
[ -d "$DATA" ] || DATA=speech
for p in fp32 bf16; do
  log "vrnn train --preset paper on speech, 300 updates, $p"
  timeout 75 python3 -m vrnn train --data "$DATA" --model vrnn-gauss --preset paper \
    --batch-size 128 --max-steps 300 --val-interval 100 --val-max-sequences 64 --device cuda \
    --precision $p --out "$OUT/paper-$p" --overwrite --no-progress --no-tensorboard 2>&1 \
    | tail -4
  python3 - "$OUT/paper-$p/metrics.csv" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["train_bound"]]
if len(rows) > 10:
    a, b = rows[len(rows) // 5], rows[-1]
    rate = (int(b["step"]) - int(a["step"])) / (float(b["elapsed_s"]) - float(a["elapsed_s"]))
    print(f"steps per second {rate:.2f} (after the first fifth); last train bound "
          f"{float(b['train_bound']):.1f} nats per window")
valid = [r for r in csv.DictReader(open(sys.argv[1])) if r["valid_bound"]]
if valid:
    print(f"last validation bound {float(valid[-1]['valid_bound']):.1f} nats per sequence")
PY
done
log "done"
