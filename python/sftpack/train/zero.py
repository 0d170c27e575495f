"""DeepSpeed ZeRO under the SFT recipe: configs, the engine, checkpoints, and their conversion.

``distributed.deepspeed`` names a shipped config (zero1, zero2, zero2_offload, zero3,
zero3_offload) or a JSON file. sftpack fills in what the recipe already says — precision,
optimizer, accumulation, clipping — so the JSON holds only the ZeRO settings. DeepSpeed keeps
fp32 master weights and optimizer state, sharded over the ranks (and offloaded to the CPU with
the *_offload configs), and computes in the model's 16-bit dtype.

Intermediate checkpoints are DeepSpeed's own sharded format (each rank writes its shard, which
is what makes them cheap and exactly resumable); `sftpack convert` turns one into a Hugging Face
folder. The final model is written as a Hugging Face folder directly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..record import RECORD_FILE, TrainingRecord
from .config import DEEPSPEED_PRESETS as NAMES
from .config import TrainConfig

SHIPPED = Path(__file__).resolve().parent.parent / "configs" / "deepspeed"


def require_deepspeed() -> Any:
    try:
        import deepspeed  # noqa: PLC0415
    except ImportError as error:
        raise ConfigError("distributed.deepspeed needs DeepSpeed\nhint: pip install deepspeed "
                          "(or remove distributed.deepspeed to train with plain torch/torchrun)") from error
    return deepspeed


def load_ds_config(config: TrainConfig, world: int) -> dict[str, Any]:
    """The DeepSpeed config: the shipped or given ZeRO settings plus what the recipe says."""
    name = config.distributed.deepspeed
    assert name is not None
    path = SHIPPED / f"{name}.json" if name in NAMES else Path(name)
    if not path.is_file():
        raise ConfigError(f"distributed.deepspeed: {name!r} is neither a shipped config ({', '.join(NAMES)}) "
                          f"nor a JSON file")
    ds = json.loads(path.read_text())
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if config.method.name == "qlora" and stage == 3:
        raise ConfigError("method.name=qlora cannot shard its 4-bit weights with ZeRO-3\n"
                          "hint: use distributed.deepspeed=zero2 (ZeRO-2 shards the adapters' optimizer state)")
    optim = config.optim
    offload = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device") == "cpu"
    ds.update({
        "train_micro_batch_size_per_gpu": 1,  # a micro-batch is whatever the pack loader hands out
        "train_batch_size": optim.grad_accum * world,
        "gradient_accumulation_steps": optim.grad_accum,
        "gradient_clipping": optim.max_grad_norm or 0.0,
        "bf16": {"enabled": config.model.dtype == "bfloat16"},
        "fp16": {"enabled": config.model.dtype == "float16"},
        "steps_per_print": 10**9,
        "optimizer": {"type": "AdamW", "params": {
            "lr": optim.lr, "betas": list(optim.betas), "weight_decay": optim.weight_decay,
            # torch's own AdamW needs no compiled extension (fused on CUDA: one kernel for every
            # update); the CPU-offloaded optimizer must be DeepSpeed's
            "torch_adam": not offload, "adam_w_mode": True,
            **({"fused": True} if torch.cuda.is_available() and not offload else {})}},
    })
    return ds


def is_zero3(ds_config: dict[str, Any]) -> bool:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0)) == 3


def partition_while_loading(ds_config: dict[str, Any]) -> Any:
    """Under ZeRO-3 the weights are sharded as from_pretrained loads them; the returned object
    must stay alive until the model is loaded (transformers looks it up through a weak reference)."""
    if not is_zero3(ds_config):
        return None
    from transformers.integrations.deepspeed import HfDeepSpeedConfig  # noqa: PLC0415

    return HfDeepSpeedConfig(ds_config)


def initialize(loss_model: torch.nn.Module, ds_config: dict[str, Any], lr_lambda: Any) -> tuple[Any, Any, Any]:
    deepspeed = require_deepspeed()
    params = [p for p in loss_model.parameters() if p.requires_grad]

    def scheduler(optimizer: Any) -> Any:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    engine, optimizer, _, lr_scheduler = deepspeed.initialize(model=loss_model, model_parameters=params,
                                                              config=ds_config, lr_scheduler=scheduler)
    return engine, optimizer, lr_scheduler


def save_hf(engine: Any, model: Any, target: Path, rank: int, full: bool) -> None:
    """Writes the model (full) or the adapters as a Hugging Face folder from rank 0, gathering
    ZeRO-3 shards first; every rank must call it."""
    deepspeed = require_deepspeed()
    params = list(model.parameters()) if full else [p for p in model.parameters() if p.requires_grad]
    zero3 = engine.zero_optimization_stage() == 3
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=zero3):
        if rank == 0:
            model.save_pretrained(str(target))


def convert_checkpoint(checkpoint: Path, out: Path, base: Path | None = None) -> Path:
    """A DeepSpeed checkpoint from ``sftpack train`` → a Hugging Face folder: the full model, or
    the LoRA adapter, with the tokenizer and training record beside it."""
    record = TrainingRecord.read(checkpoint)
    if record is None:
        raise ConfigError(f"{checkpoint}: no {RECORD_FILE}, so not a checkpoint of sftpack train")
    if not (checkpoint / "latest").is_file():
        if (checkpoint / "config.json").is_file() or (checkpoint / "adapter_config.json").is_file():
            raise ConfigError(f"{checkpoint} is already a Hugging Face folder\nhint: use it as it is (chat, merge)")
        raise ConfigError(f"{checkpoint}: no DeepSpeed 'latest' file; was the checkpoint written completely?")
    state = _fp32_state_dict(checkpoint)
    base_dir = Path(base or record.base_model)
    model = _rebuild(record, base_dir, state)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                 RECORD_FILE):
        if (checkpoint / name).is_file():
            shutil.copy(checkpoint / name, out / name)
    return out


def _fp32_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    require_deepspeed()
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint  # noqa: PLC0415

    state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
    # the engine wraps TokenLoss, whose parameters live under "model."
    return {k.removeprefix("model."): v for k, v in state.items()}


def _rebuild(record: TrainingRecord, base_dir: Path, state: dict[str, torch.Tensor]) -> Any:
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    from .model import DTYPES  # noqa: PLC0415

    settings = record.config
    dtype = DTYPES[settings["model"]["dtype"]]
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(base_dir), dtype=torch.float32, trust_remote_code=settings["model"].get("trust_remote_code", False))
    if record.method != "full":
        from peft import LoraConfig, get_peft_model  # noqa: PLC0415

        method = settings["method"]
        model = get_peft_model(model, LoraConfig(r=method["lora_r"], lora_alpha=method["lora_alpha"],
                                                 lora_dropout=method["lora_dropout"],
                                                 target_modules=method["target_modules"], task_type="CAUSAL_LM"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    owned = dict(model.named_parameters())  # a tied weight is named once; its alias may be missing
    trained_missing = [k for k in missing if k in owned and (record.method == "full" or "lora_" in k)]
    if trained_missing or unexpected:
        raise ConfigError(f"the checkpoint does not fit the model at {base_dir}: missing {trained_missing[:3]}, "
                          f"unexpected {unexpected[:3]}\nhint: pass --base with the model it was trained from")
    return model if record.method != "full" else model.to(dtype)
