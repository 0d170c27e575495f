#!/usr/bin/env bash
# The checks that need a CUDA GPU (CI has none: there these tests skip), as one prepared script for
# a GPU machine without internet. Prepare here first (docs/training.md, "GPU checks"):
#   bash scripts/gpu_wheels.sh                      # .whl/: sftpack, deepspeed, bitsandbytes, liger-kernel
#   python3 benches/bench_train_gpu.py prepare      # .gpu/: the benchmark's pack and tokenizer
# Then, there, from the repository root:
#   bash scripts/gpu_checks.sh all      # everything below in one 10-minute command, most needed first
#                                       # (GPU_SCALE=tiny: the same on 2-layer models, any machine;
#                                       # on 2 CPU cores the bench part runs out of its share, which
#                                       # shows the budget at work: tests/test_bench_train_gpu.py
#                                       # runs the bench there with fewer steps)
#   bash scripts/gpu_checks.sh tests    # attention kernels per document, QLoRA (4-bit rounding), ZeRO-2/3, Liger, recipes
#   bash scripts/gpu_checks.sh bench    # benches/bench_train_gpu.py: every run beside its baseline
#     (or a few at a time: ... bench --runs full-4b,lora-8b, then --runs qlora-8b,zero3-2b: one file)
#   bash scripts/gpu_checks.sh long     # benches/bench_long_context.py: the longest row of a 4B model
# Logs and benches' JSON go to $OUT when it is set (else benches/results/): 7 files at most, within
# the 8 a device command brings back. `all` stops each part when the budget ($GPU_BUDGET_S seconds,
# default 560: a device command's 600 less a margin) runs out, so whatever finished is written
# before the command is cut off.
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-tests}
results=${OUT:-benches/results}
case "$what" in
all | tests | bench | long) ;;
*)
    echo "usage: scripts/gpu_checks.sh all|tests|bench|long [extra arguments]" >&2
    exit 2
    ;;
esac
if [[ $what =~ ^(bench|long|all)$ && " ${*:2} " != *" --work"* && ! -f .gpu/pack/manifest.json ]]; then
    echo "gpu_checks: .gpu/ is missing: run 'python3 benches/bench_train_gpu.py prepare' where the repository" \
        "was checked out and carry .gpu with it" >&2
    exit 2
fi

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
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"{device}; torch {torch.__version__}, transformers {transformers.__version__}; "
      f"attention auto -> {choose_attention('auto')}, kernels auto -> {choose_kernels('auto')}; {present}")
PY

run_tests() {
    # -s: the copied recipe's training output is part of what these checks report
    python3 -m pytest -q -s -p no:cacheprovider -rs tests/test_gpu.py tests/test_generation.py \
        tests/test_evaluation.py "$@" 2>&1 | tee "$results/gpu_tests.log"
}
run_bench() {
    PYTHONUNBUFFERED=1 python3 benches/bench_train_gpu.py run --json "$results/train_gpu.json" "$@" 2>&1 \
        | grep --line-buffered -v "it/s\]" | tee "$results/bench_train_gpu.log"
}
run_long() {
    PYTHONUNBUFFERED=1 python3 benches/bench_long_context.py --json "$results/long_context.json" "$@" 2>&1 \
        | tee "$results/bench_long_context.log"
}

# `all`: each part may use what is left of the budget, at most its own share (seconds), so a slow
# part cannot starve the ones after it of their first results.
deadline=${GPU_BUDGET_S:-560} # from the script's start (bash counts SECONDS from 0)
within() {
    local share=$1 left=$((deadline - SECONDS))
    shift
    if ((left < 30)); then
        echo "gpu_checks: no time left for: $*" | tee -a "$results/gpu_incomplete.txt"
        return
    fi
    ((share < left)) || share=$left
    echo "gpu_checks: $* (at most ${share} s)"
    # a function runs in a subshell under timeout's process group: export what it needs
    timeout --kill-after=10 "$share" bash -c "set -o pipefail; $(declare -f run_tests run_bench run_long); results=$results; $*"
    local status=$?
    if ((status == 124 || status == 137)); then
        echo "gpu_checks: $* ran out of its ${share} s" | tee -a "$results/gpu_incomplete.txt"
    elif ((status != 0)); then
        echo "gpu_checks: $* failed (status $status)" | tee -a "$results/gpu_incomplete.txt"
    fi
}

case "$what" in
tests) run_tests "${@:2}" ;;
bench) run_bench "${@:2}" ;;
long) run_long "${@:2}" ;;
all)
    # The benchmark's runs first (each written when it ends), then the tests, then the long rows.
    # GPU_SCALE=tiny: 2-layer models, a rehearsal of this script on any machine.
    scale=${GPU_SCALE:-full}
    long_rows=$([[ $scale == tiny ]] && echo "--start 256 --stop 1024" || echo "--stop 65536")
    within 380 run_bench --scale "$scale"
    within 140 run_tests
    within 120 run_long --scale "$scale" $long_rows
    ;;
esac
