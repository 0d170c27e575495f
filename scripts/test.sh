#!/usr/bin/env bash
# The project's checks, the README's test command: installs sftpack from this checkout with every
# extra the suite exercises and the test tools, then formatting, lints, Rust tests and the Python
# suite. Run from anywhere; nothing else is needed beforehand. On a machine without a CUDA GPU only
# the GPU tests skip (scripts/gpu_checks.sh runs them on one).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

echo "== install (sftpack with its train, deepspeed, qlora, kernels, ray, studio and test extras)"
# Rebuilds the engine only where the sources changed (cargo reuses target/).
python3 -m pip install -q ".[train,deepspeed,qlora,kernels,ray,studio,test]"
# The studio's browser tests drive Debian's Chromium through its driver; nothing downloads a browser.
if ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "note: the studio's browser tests will skip: as root, run apt-get install chromium chromium-driver"
    fi
fi

echo "== rustfmt / clippy"
cargo fmt --all --check
cargo clippy --all-targets --features python --locked -- -D warnings

echo "== ruff / mypy"
python3 -m ruff check python tests scripts benches examples
python3 -m mypy

echo "== cargo test"
cargo test --locked

echo "== pytest (two workers; each takes a whole file, so a file's fixtures are built once)"
# One torch thread a worker: two workers with two threads each on two cores run slower than this.
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" python3 -m pytest -q -n "${SFTPACK_TEST_WORKERS:-2}" --dist loadfile tests
