"""One typed definition of a job's settings, mirroring the engine's Rust structs:

    JobSettings          rust/src/pipeline.rs         JobConfig         check, inspect, preprocess
      .encode            rust/src/encode.rs           EncodeOptions
    PreprocessSettings   rust/src/preprocess/mod.rs   PreprocessConfig  preprocess

Defaults and choices come from the engine once (``_core.settings_defaults()``: max_length 4096,
the overlong policies, the formats, the "tokenizer" template, ...). The Python API, YAML files,
command-line flags and the studio all build these through :func:`job_settings` and
:func:`preprocess_settings`, which report every problem at once. ``to_engine()`` is the JSON
the engine reads; :meth:`PreprocessSettings.from_manifest` reads back what a pack's manifest
records, so a pack says exactly how it was made. Messages and hints name settings in backticks
(`max_length`, `overlong: truncate`), as YAML and this API spell them; the command line shows
them as its flags (--max-length, --overlong truncate).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Union

from . import _core
from .errors import ConfigError

PathLike = Union[str, "os.PathLike[str]"]

ENGINE_DEFAULTS: dict[str, Any] = json.loads(_core.settings_defaults())
OVERLONG: tuple[str, ...] = tuple(ENGINE_DEFAULTS["overlong"])
FORMATS: tuple[str, ...] = tuple(ENGINE_DEFAULTS["formats"])
# The longest conversation where none is given: preprocess's row length, and what check and
# inspect count as too long.
DEFAULT_MAX_LENGTH: int = ENGINE_DEFAULTS["max_length"]
# The template setting that names the tokenizer's own chat template (the default).
TOKENIZER_TEMPLATE: str = ENGINE_DEFAULTS["template"]


@dataclass(frozen=True)
class EncodeSettings:
    """How each conversation becomes ids (rust EncodeOptions)."""

    max_length: int | None = DEFAULT_MAX_LENGTH
    overlong: str = OVERLONG[0]
    template_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobSettings:
    """What to read and how to encode it (rust JobConfig)."""

    inputs: tuple[str, ...]
    tokenizer: str
    template: str | None = None
    format: str | None = None
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    threads: int | None = None
    map_fn: str | None = None
    examples_per_kind: int = ENGINE_DEFAULTS["examples_per_kind"]
    # The template's full source as a manifest records it (chat and samples rebuild a pack's
    # template from it); `template` then only names it.
    template_source: str | None = None

    def to_engine(self, map_identity: dict[str, str] | None = None) -> dict[str, Any]:
        """The JobConfig JSON object; ``map_identity`` describes the map function (its spec and
        source hash) when there is one."""
        return {
            "inputs": list(self.inputs),
            "tokenizer": self.tokenizer,
            "template": self.template,
            "template_source": self.template_source,
            "format": self.format,
            "encode": {"max_length": self.encode.max_length, "overlong": self.encode.overlong,
                       "template_kwargs": dict(self.encode.template_kwargs)},
            "threads": self.threads,
            "examples_per_kind": self.examples_per_kind,
            "map_fn": map_identity,
        }


@dataclass(frozen=True)
class PreprocessSettings:
    """A whole preprocess run (rust PreprocessConfig)."""

    job: JobSettings
    out: str
    pack: bool = ENGINE_DEFAULTS["pack"]
    seed: int = ENGINE_DEFAULTS["seed"]
    window: int = ENGINE_DEFAULTS["window"]
    shard_size_mb: int = ENGINE_DEFAULTS["shard_bytes"] >> 20
    overwrite: bool = False
    val_size: float | int | None = None
    progress_interval_ms: int = ENGINE_DEFAULTS["progress_interval_ms"]
    # A partitioned run prepares part `shard_index` of `num_shards` (the work units in that share
    # of the input bytes; see sftpack.parts); `sftpack pack merge` joins the parts.
    num_shards: int | None = None
    shard_index: int | None = None
    # Where the job runs: "local" (this process) or "ray" (actors on a Ray cluster; see
    # sftpack.ray_engine). Not part of the output: both engines make the same documents.
    engine: str = "local"
    ray_address: str | None = None
    ray_actors: int | None = None
    ray_cpus_per_actor: int | None = None
    ray_parts: int | None = None

    def to_engine(self, map_identity: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "job": self.job.to_engine(map_identity),
            "out": self.out,
            "pack": self.pack,
            "seed": self.seed,
            "window": self.window,
            "shard_bytes": self.shard_size_mb << 20,
            "overwrite": self.overwrite,
            "progress_interval_ms": self.progress_interval_ms,
            "validation": validation_size(self.val_size),
            "partition": None if self.num_shards is None else {"count": self.num_shards,
                                                               "index": self.shard_index or 0},
        }

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], out: PathLike) -> PreprocessSettings:
        """The settings a pack was made with, from its manifest (inputs as the files read; the
        map function by its spec): running them again is `up to date`."""
        config = manifest["config"]
        encode = config["encode"]
        tokenizer = Path(manifest["tokenizer"]["path"])
        validation = config.get("validation") or {}
        partition = config.get("partition") or {}
        job = JobSettings(
            inputs=tuple(i["path"] for i in manifest["inputs"]),
            tokenizer=str(tokenizer.parent if tokenizer.name == "tokenizer.json" else tokenizer),
            template=None if manifest["template"]["name"] == TOKENIZER_TEMPLATE else manifest["template"]["name"],
            format=config["format"],
            encode=EncodeSettings(max_length=encode["max_length"], overlong=encode["overlong"],
                                  template_kwargs=dict(encode["template_kwargs"])),
            map_fn=(config.get("map_fn") or {}).get("spec"),
        )
        return cls(job=job, out=os.fspath(out), pack=config["pack"], seed=config["seed"], window=config["window"],
                   shard_size_mb=config["shard_bytes"] >> 20,
                   val_size=validation.get("fraction", validation.get("documents")),
                   num_shards=partition.get("count"), shard_index=partition.get("index"))


def default(name: str) -> Any:
    """The default of a :class:`PreprocessSettings` field, for help texts."""
    return next(f.default for f in fields(PreprocessSettings) if f.name == name)


def validation_size(value: float | int | str | None) -> dict[str, float | int] | None:
    """``val_size`` as the engine reads it: a share in (0, 1) or a whole number of records >= 1."""
    if value is None:
        return None
    number = _number(value)
    if 0 < number < 1:
        return {"fraction": number}
    if number >= 1 and number.is_integer():
        return {"documents": int(number)}
    raise ConfigError(f"val_size: {value!r} is neither a share between 0 and 1 nor a whole number of records\n"
                      "hint: `val_size: 0.05` holds out 5% of the records, `val_size: 500` holds out 500")


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# The options job_settings and preprocess_settings take: the settings' own fields (a job's
# encode options flattened into it), named once, by the dataclasses.
JOB_OPTIONS = tuple(f.name for f in fields(JobSettings) if f.name not in ("inputs", "tokenizer", "encode")) + tuple(
    f.name for f in fields(EncodeSettings))
PREPROCESS_OPTIONS = tuple(f.name for f in fields(PreprocessSettings) if f.name not in ("job", "out"))
ENGINES = ("local", "ray")


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.items.append(message)

    def raise_if_any(self, what: str) -> None:
        """One error listing every problem, each led by the setting it is about, in backticks (the
        command line shows the setting as its flag)."""
        if self.items:
            lines = [re.sub(r"^([a-z_]+): ", r"`\1`: ", item) for item in self.items]
            raise ConfigError(f"{len(lines)} problem(s) in the {what} settings:\n  " + "\n  ".join(lines))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _optional(value: Any, test: Any) -> bool:
    return value is None or bool(test(value))


def _job(inputs: Sequence[PathLike], tokenizer: PathLike, options: dict[str, Any], problems: _Problems) -> JobSettings:
    get = options.get
    problems.check(_optional(get("template"), lambda v: isinstance(v, str)), f"template: expected a name or a "
                   f".jinja path, found {get('template')!r}")
    problems.check(_optional(get("format"), lambda v: v in FORMATS),
                   f"format: {get('format')!r} is not one of {list(FORMATS)}")
    problems.check(_optional(get("max_length"), _positive_int),
                   f"max_length: expected a positive whole number of tokens, found {get('max_length')!r}")
    problems.check(get("overlong", OVERLONG[0]) in OVERLONG,
                   f"overlong: {get('overlong')!r} is not one of {list(OVERLONG)}")
    problems.check(_optional(get("threads"), _positive_int),
                   f"threads: expected a positive whole number, found {get('threads')!r}")
    problems.check(_optional(get("template_kwargs"), lambda v: isinstance(v, dict)),
                   f"template_kwargs: expected a mapping of template variables, found {get('template_kwargs')!r}")
    problems.check(_optional(get("map_fn"), lambda v: isinstance(v, str)),
                   f"map_fn: expected file.py:function, module:function or a built-in name, found {get('map_fn')!r}")
    problems.check(_positive_int(get("examples_per_kind", JobSettings.examples_per_kind)),
                   f"examples_per_kind: expected a positive whole number, found {get('examples_per_kind')!r}")
    encode = replace(EncodeSettings(), **{f.name: options[f.name] for f in fields(EncodeSettings) if f.name in options})
    kwargs = encode.template_kwargs
    encode = replace(encode, template_kwargs=dict(kwargs) if isinstance(kwargs, dict) else {})
    own = {f.name: options[f.name] for f in fields(JobSettings) if f.name in options}
    return JobSettings(inputs=tuple(os.fspath(p) for p in inputs), tokenizer=os.fspath(tokenizer), encode=encode,
                       **own)


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """The options set: None stands for the default, as an absent flag does."""
    return {name: value for name, value in options.items() if value is not None}


def _unknown(options: dict[str, Any], known: Sequence[str], problems: _Problems) -> None:
    for name in sorted(set(options) - set(known)):
        problems.items.append(f"{name}: unknown setting (known: {', '.join(sorted(known))})")


def _annotation(name: str) -> str:
    for settings in (EncodeSettings, JobSettings, PreprocessSettings):
        for f in fields(settings):
            if f.name == name:
                return str(f.type)
    return ""


BOOLEAN_TEXT = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}


def from_text(options: dict[str, Any]) -> dict[str, Any]:
    """Options given as text (a web form, an environment) typed as their settings' fields are:
    "" is absent, whole numbers, shares, true/false, JSON objects. A value that does not parse is
    kept as it is, for the settings' validation to report with every other problem."""
    typed: dict[str, Any] = {}
    for name, value in options.items():
        if not isinstance(value, str):
            typed[name] = value
            continue
        text, kind = value.strip(), _annotation(name)
        if text == "":
            continue
        try:
            if kind.startswith("bool"):
                typed[name] = BOOLEAN_TEXT[text.lower()]
            elif kind.startswith("float"):
                number = float(text)
                typed[name] = int(number) if number.is_integer() and number >= 1 else number
            elif kind.startswith("int"):
                typed[name] = int(text)
            elif kind.startswith("dict"):
                typed[name] = json.loads(text)
            else:
                typed[name] = text
        except (KeyError, ValueError):
            typed[name] = text
    return typed


def _options(settings: PreprocessSettings) -> dict[str, Any]:
    """Every option of the settings by name, as preprocess_settings takes them."""
    sources = (settings.job.encode, settings.job, settings)
    return {name: getattr(next(s for s in sources if hasattr(s, name)), name)
            for name in JOB_OPTIONS + PREPROCESS_OPTIONS}


def command_line(settings: PreprocessSettings) -> list[str]:
    """``sftpack preprocess`` arguments that make these settings: inputs, --tokenizer, --out, and
    a flag for each setting that differs from its default (the three the command line leaves at
    their defaults excepted: template_source, examples_per_kind, progress_interval_ms)."""
    args = ["preprocess", *settings.job.inputs, "--tokenizer", settings.job.tokenizer, "--out", settings.out]
    values = _options(settings)
    defaults = _options(PreprocessSettings(job=JobSettings(inputs=(), tokenizer=""), out=""))
    for name, value in values.items():
        if value == defaults[name] or name in ("template_source", "examples_per_kind", "progress_interval_ms"):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{name.replace('_', '-')}")
        elif isinstance(value, dict):
            args += [flag, json.dumps(value)]
        else:
            args += [flag, str(value)]
    return args


def job_settings(inputs: Sequence[PathLike], tokenizer: PathLike, **options: Any) -> JobSettings:
    """Validated settings for check and inspect; options are :class:`JobSettings`' fields, with
    ``max_length``, ``overlong`` and ``template_kwargs`` for its ``encode``.

    Raises:
        ConfigError: listing every problem found.
    """
    problems = _Problems()
    options = _given(options)
    _unknown(options, JOB_OPTIONS, problems)
    settings = _job(inputs, tokenizer, options, problems)
    problems.raise_if_any("job")
    return settings


def _check_partition(settings: PreprocessSettings, problems: _Problems) -> None:
    count, index = settings.num_shards, settings.shard_index
    if count is None and index is None:
        return
    problems.check(_positive_int(count), f"num_shards: expected a positive whole number of parts, found {count!r}")
    problems.check(isinstance(index, int) and not isinstance(index, bool) and index >= 0
                   and (not isinstance(count, int) or index < count),
                   f"shard_index: expected a part number from 0 to num_shards - 1, found {index!r}")


def preprocess_settings(inputs: Sequence[PathLike], tokenizer: PathLike, out: PathLike,
                        **options: Any) -> PreprocessSettings:
    """Validated settings for preprocess: the job's options and :class:`PreprocessSettings`'
    own fields.

    Raises:
        ConfigError: listing every problem found.
    """
    problems = _Problems()
    options = _given(options)
    _unknown(options, JOB_OPTIONS + PREPROCESS_OPTIONS, problems)
    job = _job(inputs, tokenizer, {k: v for k, v in options.items() if k in JOB_OPTIONS}, problems)
    defaults = PreprocessSettings(job=job, out=os.fspath(out))
    chosen = {name: options[name] for name in PREPROCESS_OPTIONS if options.get(name) is not None}
    settings = replace(defaults, **chosen)
    for name in ("pack", "overwrite"):
        problems.check(isinstance(getattr(settings, name), bool), f"{name}: expected true or false, found "
                       f"{getattr(settings, name)!r}")
    for name in ("window", "shard_size_mb"):
        problems.check(_positive_int(getattr(settings, name)),
                       f"{name}: expected a positive whole number, found {getattr(settings, name)!r}")
    for name in ("seed", "progress_interval_ms"):
        value = getattr(settings, name)
        problems.check(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                       f"{name}: expected a whole number >= 0, found {value!r}")
    _check_partition(settings, problems)
    problems.check(settings.engine in ENGINES, f"engine: {settings.engine!r} is not one of {list(ENGINES)}")
    for name in ("ray_actors", "ray_cpus_per_actor", "ray_parts"):
        problems.check(_optional(getattr(settings, name), _positive_int),
                       f"{name}: expected a positive whole number, found {getattr(settings, name)!r}")
    problems.check(_optional(settings.ray_address, lambda v: isinstance(v, str)),
                   f"ray_address: expected an address such as ray://head:10001 or auto, found {settings.ray_address!r}")
    try:
        validation_size(settings.val_size)
    except ConfigError as error:
        problems.items.append(str(error).split("\n")[0])
    problems.raise_if_any("preprocess")
    return settings
