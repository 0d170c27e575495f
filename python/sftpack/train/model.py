"""Model setup: load a local Hugging Face model and apply the fine-tuning method."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .attention import transformers_name
from .config import TrainConfig
from .quantize import scales_rounded_as_on_cuda

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_tokenizer_matches(model_dir: Path, manifest: dict[str, Any]) -> None:
    """Refuses a pack made with a different tokenizer than the model ships."""
    tokenizer_json = model_dir / "tokenizer.json"
    if tokenizer_json.is_file():
        digest = hashlib.sha256(tokenizer_json.read_bytes()).hexdigest()
        if digest != manifest["tokenizer"]["sha256"]:
            raise ConfigError(
                f"the pack was made with another tokenizer ({manifest['tokenizer']['path']}) than the model's "
                f"({tokenizer_json})\nhint: preprocess again with --tokenizer {model_dir}")
    config = json.loads((model_dir / "config.json").read_text())
    vocab = config.get("vocab_size") or config.get("text_config", {}).get("vocab_size")
    if vocab is not None and manifest["tokenizer"]["vocab_size"] > vocab:
        raise ConfigError(f"the pack's tokenizer has {manifest['tokenizer']['vocab_size']} tokens, more than the "
                          f"model's {vocab} embeddings\nhint: preprocess with the model's own tokenizer")


# The first bitsandbytes with 4-bit layers on the CPU as well as on CUDA GPUs (and the least
# transformers 5 accepts).
BITSANDBYTES_MIN = (0, 46, 1)
NO_BITSANDBYTES = "needs bitsandbytes"


def bitsandbytes_problem() -> str | None:
    """Why QLoRA's 4-bit layers cannot load here ("needs bitsandbytes ..."), or None when they can."""
    try:
        import bitsandbytes  # noqa: PLC0415
    except ImportError:
        return NO_BITSANDBYTES
    version = tuple(int(part) for part in bitsandbytes.__version__.split(".")[:3] if part.isdigit())
    if version < BITSANDBYTES_MIN:
        return f"needs bitsandbytes >= {'.'.join(map(str, BITSANDBYTES_MIN))}, this is {bitsandbytes.__version__}"
    return None


def quantization_config(quant_type: str, double_quant: bool, compute_dtype: str) -> Any:
    """The 4-bit settings QLoRA loads its base with: training, and chat and merge of its adapter,
    quantize the same way, so all three use the same base weights."""
    problem = bitsandbytes_problem()
    if problem == NO_BITSANDBYTES:
        raise ConfigError("method.name=qlora needs bitsandbytes\n"
                          "hint: pip install 'sftpack[qlora]', or use method.name=lora")
    if problem:
        raise ConfigError(f"method.name=qlora {problem}\nhint: pip install -U 'sftpack[qlora]'")
    from transformers import BitsAndBytesConfig  # noqa: PLC0415

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=DTYPES[compute_dtype],
    )


def load_4bit(path: Path, settings: Any, device: torch.device | str | None, **kwargs: Any) -> Any:
    """The model at ``path`` with its weights rounded to 4 bits by ``settings`` on ``device``, the
    same on a CPU as on a GPU (train/quantize.py): training, chat and merge all load QLoRA's base here."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    with scales_rounded_as_on_cuda():
        return AutoModelForCausalLM.from_pretrained(str(path), quantization_config=settings,
                                                    device_map={"": device}, **kwargs)


def load_model(config: TrainConfig, attention: str, device: torch.device | None) -> Any:
    """The model on ``device`` with the method applied (4-bit weights are placed while loading);
    ``device=None`` leaves placement to DeepSpeed ZeRO-3."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    path = Path(config.model.path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"model.path {path} is not a Hugging Face model directory (no config.json)")
    kwargs: dict[str, Any] = {"dtype": DTYPES[config.model.dtype], "attn_implementation": transformers_name(attention),
                              "trust_remote_code": config.model.trust_remote_code}
    model: Any
    if config.method.name == "qlora":
        method = config.method
        settings = quantization_config(method.quant_type, method.double_quant, method.compute_dtype)
        model = load_4bit(path, settings, device, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        if device is not None:
            model = model.to(device)
    if config.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.method.name in ("lora", "qlora"):
        model = _apply_lora(model, config)
    return model


def _apply_lora(model: Any, config: TrainConfig) -> Any:
    """LoRA adapters in fp32 over a frozen base. A 16-bit base keeps its own dtype (unlike peft's
    prepare_model_for_kbit_training, whose fp32 norms and embeddings double activation memory);
    the recipe runs the forward pass under autocast, and the adapters take the 16-bit inputs as
    they are instead of copying them to fp32."""
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    lora = LoraConfig(r=config.method.lora_r, lora_alpha=config.method.lora_alpha,
                      lora_dropout=config.method.lora_dropout, target_modules=config.method.target_modules,
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    if DTYPES[config.model.dtype] != torch.float32:
        for module in model.modules():
            if hasattr(module, "lora_A"):
                module.cast_input_dtype_enabled = False
    return model
