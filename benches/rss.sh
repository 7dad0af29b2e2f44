#!/usr/bin/env bash
# Peak memory must stay flat as the corpus grows: exports a corpus ×1 and ×10 (the same
# documents repeated) and prints peak RSS of each run and their ratio (target < 1.5).
#
#   benches/rss.sh CORPUS.parquet [TOKENIZER.json]
set -euo pipefail
corpus=$1
tok=${2:-}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${PRETEXT_BIN:-$here/target/release/pretext}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$corpus" "$work" <<'PY'
import sys, pyarrow.parquet as pq, os
t = pq.read_table(sys.argv[1], columns=["text"])
os.makedirs(f"{sys.argv[2]}/x1"); os.makedirs(f"{sys.argv[2]}/x10")
pq.write_table(t, f"{sys.argv[2]}/x1/part-0.parquet")
for i in range(10):
    pq.write_table(t, f"{sys.argv[2]}/x10/part-{i}.parquet")
PY
if [ -n "$tok" ]; then tokyaml="{ file: '$tok' }"; else tokyaml="{ bytes: {} }"; fi
declare -A rss
for size in x1 x10; do
  cat > "$work/$size.yaml" <<YAML
name: rss
source: { path: $work/$size }
tokenizer: $tokyaml
task: { mlm: { seq_len: 128 } }
stream: { shuffle: { window_rows: 65536 } }
export: { rows_per_file: 100000 }
YAML
  /usr/bin/time -f "%M" -o "$work/$size.rss" "$bin" export "$work/$size.yaml" --out "$work/out-$size" --quiet
  rss[$size]=$(cat "$work/$size.rss")
  echo "$size: peak RSS ${rss[$size]} KiB"
done
python3 -c "print(f'ratio x10/x1: {${rss[x10]}/${rss[x1]}:.2f}')"
