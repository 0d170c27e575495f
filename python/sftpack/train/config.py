"""Training recipes: YAML → a validated :class:`TrainConfig`. Every problem is reported at once.

A recipe has sections (all keys optional except ``model.path``, ``data.pack``, ``output.dir``)::

    model:   {path, dtype: float32|bfloat16|float16,
              attention: auto|varlen|flash_attention_2|flash_attention_4|flex_attention|sdpa|eager,
              gradient_checkpointing, loss_chunk_tokens: logits computed this many tokens at a time, 0 = all,
              trust_remote_code: run the model code shipped with the checkpoint,
              kernels: auto|liger|none  (fused Liger kernels on CUDA where installed)}
    method:  {name: full|lora|qlora, lora_r, lora_alpha, lora_dropout, target_modules,
              quant_type: nf4|fp4, double_quant, compute_dtype}
    data:    {pack | packs: [{path, weight, name}, ...] (several packs mixed by share of each epoch's tokens),
              batch_size | max_tokens, seed,
              eval_pack: a pack to evaluate on (default: the (first) pack's validation split, if it has one)}
    optim:   {lr, weight_decay, betas, warmup_steps, scheduler: cosine|linear|constant, epochs,
              max_steps, grad_accum, max_grad_norm}
    output:  {dir, log_every, save_every, sample_every, sample_prompts, sample_max_new_tokens,
              eval_every: steps between evaluations (null: at the end only, 0: never),
              early_stopping_patience: stop after this many evaluations without a better eval loss,
              save_best: keep the checkpoint with the best eval loss as best/,
              report_to: auto | [tensorboard, wandb] | [],
              allow_resume_changes: resume although the recipe changed its schedule or data order}
    distributed: {deepspeed: zero1|zero2|zero2_offload|zero3|zero3_offload|PATH.json  (default: none),
                  sequence_parallel: N  (default 1: ranks that split each batch's tokens)}
    seed: 0

Relative paths in a recipe file (model.path, data.pack, data.packs[].path, data.eval_pack,
output.dir, a distributed.deepspeed JSON) are relative to the recipe's folder, so a folder with
its recipe can move; paths given as overrides are relative to where the command runs.
Command-line overrides use dotted keys: ``sftpack train r.yaml optim.lr=1e-4 data.batch_size=8``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .attention import CHOICES as ATTENTION_CHOICES
from .kernels import CHOICES as KERNEL_CHOICES
from .reporting import REPORTERS


@dataclass
class ModelConfig:
    path: str = ""
    dtype: str = "float32"
    attention: str = "auto"
    gradient_checkpointing: bool = False
    loss_chunk_tokens: int = 2048
    trust_remote_code: bool = False
    # Fused kernels: auto (Liger on CUDA where installed), liger, none (see train/kernels.py).
    kernels: str = "auto"


@dataclass
class MethodConfig:
    name: str = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "bfloat16"


@dataclass
class DataConfig:
    pack: str = ""
    packs: list[dict[str, Any]] | None = None
    batch_size: int | None = None
    max_tokens: int | None = None
    seed: int = 0
    eval_pack: str | None = None


@dataclass
class OptimConfig:
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    scheduler: str = "cosine"
    epochs: int = 1
    max_steps: int | None = None
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0


@dataclass
class OutputConfig:
    dir: str = ""
    log_every: int = 1
    save_every: int | None = None
    sample_every: int | None = None
    sample_prompts: list[str] = field(default_factory=list)
    sample_max_new_tokens: int = 64
    eval_every: int | None = None
    early_stopping_patience: int | None = None
    save_best: bool = False
    report_to: list[str] | str = "auto"
    # Resume from output.dir's checkpoint although the recipe changed its schedule or data order.
    allow_resume_changes: bool = False


@dataclass
class DistributedConfig:
    deepspeed: str | None = None
    # Ranks that split each packed batch along its tokens (Ulysses); see train/sequence_parallel.py.
    sequence_parallel: int = 1


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEEPSPEED_PRESETS = ("zero1", "zero2", "zero2_offload", "zero3", "zero3_offload")
SECTIONS = ("model", "method", "data", "optim", "output", "distributed", "seed")
CHOICES = {
    ("model", "dtype"): {"float32", "bfloat16", "float16"},
    ("model", "attention"): ATTENTION_CHOICES,
    ("model", "kernels"): set(KERNEL_CHOICES),
    ("method", "name"): {"full", "lora", "qlora"},
    ("method", "quant_type"): {"nf4", "fp4"},
    ("method", "compute_dtype"): {"float32", "bfloat16", "float16"},
    ("optim", "scheduler"): {"cosine", "linear", "constant"},
}
POSITIVE = {("optim", "lr"), ("optim", "epochs"), ("optim", "grad_accum"), ("output", "log_every"),
            ("method", "lora_r"), ("data", "batch_size"), ("data", "max_tokens"),
            ("output", "early_stopping_patience"), ("output", "sample_max_new_tokens")}


def _type_ok(value: Any, annotation: str) -> bool:
    if value is None:
        return "None" in annotation
    if isinstance(value, bool):
        return annotation.startswith("bool")
    if "int" in annotation and isinstance(value, int):
        return True
    if "float" in annotation and isinstance(value, (int, float)):
        return True
    if "str" in annotation and isinstance(value, str):
        return True
    return "list" in annotation and isinstance(value, list)


def _build(raw: dict[str, Any], problems: list[str]) -> TrainConfig:
    config = TrainConfig()
    for key, value in raw.items():
        if key == "seed":
            if isinstance(value, int) and not isinstance(value, bool):
                config.seed = value
            else:
                problems.append(f"seed: expected an integer, found {value!r}")
            continue
        section = getattr(config, key, None)
        if section is None or not dataclasses.is_dataclass(section):
            problems.append(f"{key}: unknown section (sections are {', '.join(SECTIONS)})")
            continue
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping of settings, found {value!r}")
            continue
        fields = {f.name: str(f.type) for f in dataclasses.fields(section)}
        for name, item in value.items():
            if name not in fields:
                problems.append(f"{key}.{name}: unknown setting (known: {', '.join(sorted(fields))})")
            elif not _type_ok(item, fields[name]):
                problems.append(f"{key}.{name}: expected {fields[name]}, found {item!r}")
            else:
                setattr(section, name, item)
    return config


def _validate(config: TrainConfig, problems: list[str]) -> None:
    for (section, name), allowed in CHOICES.items():
        value = getattr(getattr(config, section), name)
        if value not in allowed:
            problems.append(f"{section}.{name}: {value!r} is not one of {sorted(allowed)}")
    for section, name in POSITIVE:
        value = getattr(getattr(config, section), name)
        if value is not None and value <= 0:
            problems.append(f"{section}.{name}: must be positive, found {value!r}")
    for section, name in (("model", "path"), ("output", "dir")):
        if not getattr(getattr(config, section), name):
            problems.append(f"{section}.{name}: required")
    _validate_packs(config.data, problems)
    report_to = config.output.report_to
    unknown = ({report_to} if isinstance(report_to, str) else set(report_to)) - REPORTERS - {"auto"}
    if unknown:
        problems.append(f"output.report_to: unknown {sorted(unknown)} (auto, or a list of {sorted(REPORTERS)})")
    if (config.data.batch_size is None) == (config.data.max_tokens is None):
        problems.append("data: give exactly one of batch_size or max_tokens")
    output = config.output
    for name, value in (("eval_every", output.eval_every), ("save_every", output.save_every),
                        ("sample_every", output.sample_every)):
        if value is not None and value < 0:
            problems.append(f"output.{name}: must be 0 or more, found {value!r}")
    parallel = config.distributed.sequence_parallel
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        problems.append(f"distributed.sequence_parallel: must be a whole number >= 1, found {parallel!r}")
    elif parallel > 1 and output.sample_every:
        problems.append("output.sample_every: generating samples is not supported with "
                        "distributed.sequence_parallel > 1 (set it to 0; `sftpack chat` the saved model)")
    if (output.early_stopping_patience or output.save_best) and not output.eval_every:
        setting = "early_stopping_patience" if output.early_stopping_patience else "save_best"
        problems.append(f"output.{setting}: needs output.eval_every (steps between evaluations)")


def _check_paths(config: TrainConfig, problems: list[str]) -> None:
    """What the run will read exists and is what the recipe says it is, reported with the rest."""
    model = Path(config.model.path)
    if config.model.path and not (model / "config.json").is_file():
        what = "does not exist" if not model.exists() else "is not a Hugging Face model folder (no config.json)"
        problems.append(f"model.path: {model} {what} (download the model first, e.g. `huggingface-cli download "
                        f"ORG/NAME --local-dir DIR`, and set model.path to that folder)")
    packs = [("data.pack", config.data.pack)] if config.data.pack else []
    packs += [(f"data.packs[{i}].path", item["path"]) for i, item in enumerate(config.data.packs or [])
              if isinstance(item, dict) and isinstance(item.get("path"), str)]
    if config.data.eval_pack:
        packs.append(("data.eval_pack", config.data.eval_pack))
    for name, path in packs:
        if not (Path(path) / "manifest.json").is_file():
            what = "does not exist" if not Path(path).exists() else "is not a pack (no manifest.json)"
            problems.append(f"{name}: {path} {what} (make it with `sftpack preprocess DATA --tokenizer "
                            f"{config.model.path or 'MODEL'} --out {path}`)")
    deepspeed = config.distributed.deepspeed
    if deepspeed and deepspeed not in DEEPSPEED_PRESETS and not Path(deepspeed).is_file():
        problems.append(f"distributed.deepspeed: {deepspeed!r} is neither a shipped config "
                        f"({', '.join(DEEPSPEED_PRESETS)}) nor a JSON file")


def _validate_packs(data: DataConfig, problems: list[str]) -> None:
    if bool(data.pack) == bool(data.packs):
        problems.append("data: give exactly one of pack (a pack directory) or packs (a list of {path, weight, name})")
        return
    for i, item in enumerate(data.packs or []):
        if not isinstance(item, dict) or "path" not in item or set(item) - {"path", "weight", "name"}:
            problems.append(f"data.packs[{i}]: expected {{path, weight, name}}, found {item!r}")
            continue
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            problems.append(f"data.packs[{i}].weight: must be a positive number, found {weight!r}")


# The settings that hold paths: in a recipe file they are relative to the recipe's folder.
PATH_SETTINGS = (("model", "path"), ("data", "pack"), ("data", "eval_pack"), ("output", "dir"),
                 ("distributed", "deepspeed"))


def _relative_to(recipe: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The recipe with its relative paths made absolute against ``folder`` (a shipped
    DeepSpeed preset name stays a name)."""

    def resolve(value: Any) -> Any:
        if not isinstance(value, str) or not value or Path(value).is_absolute() or value in DEEPSPEED_PRESETS:
            return value
        return str(folder / value)

    out = {key: dict(value) if isinstance(value, dict) else value for key, value in recipe.items()}
    for section, name in PATH_SETTINGS:
        if isinstance(out.get(section), dict) and name in out[section]:
            out[section][name] = resolve(out[section][name])
    packs = out.get("data", {}).get("packs") if isinstance(out.get("data"), dict) else None
    if isinstance(packs, list):
        out["data"]["packs"] = [{**item, "path": resolve(item.get("path"))} if isinstance(item, dict) else item
                                for item in packs]
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value\nhint: e.g. optim.lr=1e-4")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            value = float(value)  # YAML reads 1e-4 (no dot) as a string
        except ValueError:
            pass
    return key.strip().split("."), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                raw: dict[str, Any] | None = None, check_paths: bool = True) -> TrainConfig:
    """Reads a recipe (and/or a dict), applies ``key=value`` overrides, validates everything;
    with ``check_paths``, also that the model, packs and DeepSpeed file it names exist here.

    Raises:
        ConfigError: listing every problem found.
    """
    data: dict[str, Any] = dict(raw or {})
    if path is not None:
        recipe = Path(path)
        if not recipe.is_file():
            raise ConfigError(f"recipe {recipe} does not exist",
                              "list the ready recipes with `sftpack configs list`, copy one with "
                              "`sftpack configs copy NAME DIR`")
        loaded = yaml.safe_load(recipe.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe is a mapping of sections")
        data = {**_relative_to(loaded, recipe.resolve().parent), **data}
    for override in overrides or []:
        keys, value = parse_override(override)
        target = data
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    problems: list[str] = []
    config = _build(data, problems)
    _validate(config, problems)
    if check_paths:
        _check_paths(config, problems)
    if problems:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{len(problems)} problem(s) in the recipe:\n  " + "\n  ".join(problems))
    return config
