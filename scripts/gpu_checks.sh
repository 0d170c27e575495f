#!/usr/bin/env bash
# The checks that need a CUDA GPU (CI has none: there these tests skip), as one prepared script for
# a GPU machine without internet. Prepare here first (docs/training.md, "GPU checks"):
#   bash scripts/gpu_wheels.sh                      # .whl/: sftpack, deepspeed, bitsandbytes, liger-kernel
#   python3 benches/bench_train_gpu.py prepare      # .gpu/: the benchmark's pack and tokenizer
# Then, there, from the repository root (each part fits a 10-minute command):
#   bash scripts/gpu_checks.sh tests    # attention kernels per document, QLoRA, ZeRO-2/3, Liger, recipes
#   bash scripts/gpu_checks.sh bench    # benches/bench_train_gpu.py: every run beside its baseline
#     (or a few at a time: ... bench --runs full-4b,lora-8b, then --runs qlora-8b,zero3-2b: one file)
#   bash scripts/gpu_checks.sh long     # benches/bench_long_context.py: the longest row of a 4B model
# Logs and benches' JSON go to $OUT when it is set (else benches/results/).
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-tests}
results=${OUT:-benches/results}
mkdir -p "$results"

if compgen -G ".whl/*.whl" >/dev/null; then
    # --target: the image's own packages stay as they are; ours come first on the path.
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 - <<'PY' 2>&1 | tee "$results/gpu_environment.txt"
import importlib.util, torch, transformers
from sftpack.train.attention import choose_attention
from sftpack.train.kernels import choose_kernels
present = {name: importlib.util.find_spec(name) is not None
           for name in ("deepspeed", "bitsandbytes", "liger_kernel", "flash_attn", "peft")}
print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}, transformers {transformers.__version__}; "
      f"attention auto -> {choose_attention('auto')}, kernels auto -> {choose_kernels('auto')}; {present}")
PY

case "$what" in
tests)
    # -s: the copied recipe's training output is part of what these checks report
    python3 -m pytest -q -s -p no:cacheprovider -rs tests/test_gpu.py tests/test_generation.py \
        tests/test_evaluation.py "${@:2}" 2>&1 | tee "$results/gpu_tests.log"
    ;;
bench)
    PYTHONUNBUFFERED=1 python3 benches/bench_train_gpu.py run --json "$results/train_gpu.json" "${@:2}" 2>&1 \
        | grep -v "it/s\]" | tee "$results/bench_train_gpu.log"
    ;;
long)
    PYTHONUNBUFFERED=1 python3 benches/bench_long_context.py --json "$results/long_context.json" "${@:2}" 2>&1 \
        | tee "$results/bench_long_context.log"
    ;;
*)
    echo "usage: scripts/gpu_checks.sh tests|bench|long [extra arguments]" >&2
    exit 2
    ;;
esac
