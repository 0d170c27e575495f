#!/usr/bin/env bash
# The checks that need a CUDA GPU (CI has none; there these tests skip). Run from the repository
# root on a GPU machine with torch, transformers and peft. Wheels put in .whl/ beforehand are
# installed first, without dependencies or an index (for machines without internet):
#   maturin build --release -o .whl                      # sftpack itself (abi3: any Python >= 3.10)
#   pip download bitsandbytes flash-attn --no-deps -d .whl  # optional: QLoRA, flash_attention_2
set -uo pipefail
cd "$(dirname "$0")/.."

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps .whl/*.whl
fi
python3 - <<'EOF'
import torch, transformers
from sftpack.train.attention import choose_attention
print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name()}; "
      f"attention: auto -> {choose_attention('auto')}")
EOF
# -s: the copied recipe's training output is part of what these checks report
python3 -m pytest -q -s -p no:cacheprovider tests/test_gpu.py tests/test_generation.py tests/test_evaluation.py "$@"
