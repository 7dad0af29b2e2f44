#!/usr/bin/env bash
# scripts/gpu-smoke.sh -- the GPU run book: trains with a prebuilt CUDA `pretext` on this machine's
# GPU and reports whether the GPU did the work and whether it waited for data.
#
#   scripts/gpu-smoke.sh PRETEXT_BINARY [STEPS]
#
# Needs: an NVIDIA driver (nvidia-smi), the CUDA 13 libraries the binary links (see
# scripts/cuda-env.sh: LD_LIBRARY_PATH must reach libcudart.so.13, libcublas.so.13,
# libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13), and this repository's pipelines/ and data/.
# No Rust. Build the binary elsewhere with `source scripts/cuda-env.sh` and
# `cargo build --release --features cuda`.
#
# Six runs on cuda:0:
#   1. quickstart:   the built-in BERT MLM pipeline as it is (2 layers, hidden 128);
#   2. encoder:      the same corpus through an encoder of 6 layers, hidden 512, seq_len 128 (the
#                    size whose data wait should stay under 1%), for STEPS steps (default 300);
#   3. encoder-4x256: the CPU benchmarks' encoder shape (4 layers, hidden 256, 4 heads, seq_len
#                    128, batch 32, MLM), STEPS steps;
#   4. decoder-4x256: the CPU benchmarks' GPT-2-style decoder shape (pipelines/causal_best_fit.yaml,
#                    4 layers, hidden 256, 4 heads, seq_len 128, batch 32), STEPS steps;
#   5. repeat-a, repeat-b: the quickstart twice for 40 steps, whose losses must agree (dropout
#                    masks are drawn on the GPU from a per-forward seed).
# For each: device, step time, tokens/s, data-wait share, peak GPU memory (nvidia-smi, sampled
# every 100 ms) and the loss at the end. Exits non-zero when a run failed or did not train on the
# GPU.
set -euo pipefail

bin=${1:?usage: gpu-smoke.sh PRETEXT_BINARY [STEPS]}
steps=${2:-300}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! command -v nvidia-smi > /dev/null || ! nvidia-smi -L > /dev/null 2>&1; then
  echo "FAIL: no NVIDIA GPU here (nvidia-smi finds none)" >&2
  exit 1
fi
nvidia-smi -L

status=0
run() { # name, pipeline, extra --set arguments...
  local name=$1 pipeline=$2
  shift 2
  local log="$work/$name.log" mem="$work/$name.mem"
  # Peak memory: sample the GPU's used memory while the run lives.
  (while true; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 >> "$mem" 2>/dev/null; sleep 0.1; done) &
  local sampler=$!
  local before
  before=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 | head -1)
  set +e
  "$bin" train "$pipeline" --run-dir "$work/$name" --quiet \
    --set train.device=cuda:0 --set "train.checkpoint.dir=$work/$name" "$@" > "$log" 2>&1
  local rc=$?
  set -e
  kill "$sampler" 2> /dev/null || true
  wait "$sampler" 2> /dev/null || true
  local peak
  peak=$(sort -n "$mem" 2> /dev/null | tail -1)
  echo "== $name"
  if [ $rc -ne 0 ]; then
    echo "FAIL: exit code $rc"
    cat "$log"
    status=1
    return
  fi
  # The summary line: "trained steps A..B of N on DEVICE in Ts: loss X → Y; R tokens/s; waited for data P% of the time"
  local summary
  summary=$(grep -m1 '^trained steps' "$log" || true)
  echo "$summary"
  # Step time: the median over the logged intervals of (data wait + compute) / steps per interval.
  python3 - "$work/$name/metrics.jsonl" << 'PY' || true
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
times, previous = [], 0
for r in rows:
    steps = r["step"] - previous
    previous = r["step"]
    if steps > 0:
        times.append((r["data_wait_s"] + r["compute_s"]) / steps)
if times:
    print(f"step time: {1000 * statistics.median(times):.1f} ms median over {len(times)} logged intervals")
PY
  echo "peak GPU memory: ${peak:-?} MiB (${before} MiB before the run)"
  tail -1 "$work/$name/metrics.jsonl" 2> /dev/null | sed 's/^/last metrics: /'
  case "$summary" in
    *" on cuda"*) ;;
    *) echo "FAIL: the run did not train on the GPU"; status=1 ;;
  esac
  if [ -n "$peak" ] && [ -n "$before" ] && [ "$peak" -le "$before" ]; then
    echo "FAIL: GPU memory never rose above its level before the run"
    status=1
  fi
}

run quickstart pipelines/quickstart.yaml
run encoder pipelines/quickstart.yaml \
  --set "train.model={encoder: {layers: 6, hidden: 512, heads: 8, ffn: 2048, dropout: 0.1}}" \
  --set "train.steps=$steps" --set train.batch_size=64 --set train.prefetch=8 \
  --set "train.checkpoint.every_steps=$steps" --set train.eval=null
run encoder-4x256 pipelines/quickstart.yaml \
  --set "train.model={encoder: {layers: 4, hidden: 256, heads: 4, ffn: 1024, dropout: 0.1}}" \
  --set "train.steps=$steps" --set train.batch_size=32 --set train.log_every=10 \
  --set "train.checkpoint.every_steps=$steps" --set train.eval=null
run decoder-4x256 pipelines/causal_best_fit.yaml \
  --set "train.model={decoder: {layers: 4, hidden: 256, heads: 4, dropout: 0.1}}" \
  --set task.causal.seq_len=128 \
  --set "train.steps=$steps" --set train.batch_size=32 --set train.log_every=10 \
  --set "train.checkpoint.every_steps=$steps" --set train.eval=null

# Dropout on the GPU draws its masks there, from a generator seeded per forward: two runs of the
# same pipeline must print the same losses. Float reductions on a GPU may differ in the last
# digits; a different mask moves the loss by far more than 1e-4.
for name in repeat-a repeat-b; do
  run "$name" pipelines/quickstart.yaml --set train.steps=40 --set train.log_every=5 \
    --set train.checkpoint.every_steps=40 --set train.eval=null
done
echo "== repeat"
python3 - "$work/repeat-a/metrics.jsonl" "$work/repeat-b/metrics.jsonl" << 'PY' || status=1
import json, sys
a, b = ([json.loads(line)["loss"] for line in open(p)] for p in sys.argv[1:])
worst = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b)) if a and len(a) == len(b) else float("inf")
print(f"same pipeline twice: {len(a)} logged losses, largest relative difference {worst:.2e}")
if worst > 1e-4:
    print("FAIL: the runs differ (dropout masks not reproduced?)")
    sys.exit(1)
PY
exit $status
