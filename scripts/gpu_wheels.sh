#!/usr/bin/env bash
# Here, where PyPI is reachable: the wheels a GPU machine without internet lacks, into .whl/
# (git-ignored), for scripts/gpu_checks.sh there. The device image has Python 3.12 and torch
# 2.11+cu130 (see docs/training.md, "GPU checks"); what travels to it must fit in 64 MiB, so
# bitsandbytes keeps only the CUDA library of that torch (BNB_CUDA=cuda130 by default).
#   bash scripts/gpu_wheels.sh && python3 benches/bench_train_gpu.py prepare   # then, on the GPU:
#   bash scripts/gpu_checks.sh all                                             # carry .whl and .gpu
set -euo pipefail
cd "$(dirname "$0")/.."
BNB_CUDA=${BNB_CUDA:-cuda130}
rm -rf .whl && mkdir -p .whl

# sftpack itself (abi3: any Python >= 3.10)
maturin build --release --quiet -o .whl

download() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$@"
}
# Liger's kernels (Triton is in the image); DeepSpeed's needs the image lacks (pydantic, hjson).
download liger-kernel==0.8.5 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
    typing-inspection==0.4.5 hjson==3.1.0
# DeepSpeed is an sdist: a pure-Python wheel here, its ops compiled where first used (JIT, ninja).
DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl deepspeed==0.19.8

# bitsandbytes, slimmed to the one CUDA library the device's torch loads (and the CPU one).
download bitsandbytes==0.50.2
python3 - "$BNB_CUDA" <<'PY'
import glob, os, re, sys, zipfile
keep = sys.argv[1]
wheel = glob.glob(".whl/bitsandbytes-*.whl")[0]
slim = wheel + ".slim"
def dropped(name):
    library = re.search(r"libbitsandbytes_(\w+)\.so$", name)
    return library is not None and library.group(1) not in (keep, "cpu")
with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
    for item in source.infolist():
        if dropped(item.filename):
            continue
        data = source.read(item.filename)
        if item.filename.endswith(".dist-info/RECORD"):  # the record lists what the wheel holds
            data = b"".join(line for line in data.splitlines(True) if not dropped(line.split(b",")[0].decode()))
        target.writestr(item, data)
os.replace(slim, wheel)
PY
du -sh .whl && ls .whl
