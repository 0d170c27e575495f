#!/usr/bin/env bash
# The project's checks: formatting, lints, Rust tests, then the Python suite against the
# installed package. Run from anywhere after `pip install .` (README quick start).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install -q -r requirements-test.txt
# DeepSpeed ships as a source package whose build imports torch: build it against the torch here.
if python3 -c "import torch" 2>/dev/null; then
    python3 -m pip install -q --no-build-isolation "deepspeed==0.19.8"
fi

echo "== rustfmt / clippy"
cargo fmt --all --check
cargo clippy --all-targets --features python --locked -- -D warnings

echo "== ruff / mypy"
python3 -m ruff check python tests scripts benches examples
python3 -m mypy

echo "== cargo test"
cargo test --locked

echo "== pytest"
python3 -m pytest -q tests
