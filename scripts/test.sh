#!/usr/bin/env bash
# The whole test suite, as README.md gives it: cargo's tests, then the Python package's tests
# against the package built from this checkout (with the tests' profile, so the dependencies
# compiled for `cargo test` are reused) and installed into the current Python.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh --cargo-only    # skip the Python package
#   scripts/test.sh --python-only   # skip cargo test
#
# Needs, for the Python part: maturin, pytest, pyarrow, numpy, torch, torchdata, transformers
# (`.ci/run` installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pretext-target}"

cargo_tests=1 python_tests=1
case "${1:-}" in
  --cargo-only) python_tests=0 ;;
  --python-only) cargo_tests=0 ;;
  "") ;;
  *) echo "usage: scripts/test.sh [--cargo-only | --python-only]" >&2; exit 2 ;;
esac

if [ "$cargo_tests" = 1 ]; then
  cargo test
fi

if [ "$python_tests" = 1 ]; then
  wheels="$(mktemp -d)"
  trap 'rm -rf "$wheels"' EXIT
  (cd python && python3 -m maturin build --profile dev --out "$wheels")
  python3 -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$wheels"/pretext-*.whl
  cargo build --bin pretext
  # Run from outside the checkout so `import pretext` is the installed package, not python/.
  (cd python/tests && PRETEXT_BIN="$CARGO_TARGET_DIR/debug/pretext" python3 -m pytest -q -p no:cacheprovider .)
fi
