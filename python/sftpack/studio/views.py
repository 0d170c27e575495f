"""What each studio view shows, as JSON: datasets (the check report, records with their trained
tokens), packs (manifest, rows with their documents and masks, rejects) and training runs
(metrics, samples, the recipe; a trained model to chat with). All paths go through
``paths.inside``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..data.view import row_documents
from ..errors import ConfigError
from ..settings import DEFAULT_MAX_LENGTH, from_text, job_settings
from .launcher import STATE_DIR, BadRequest
from .paths import inside, relative

DATA_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst", ".parquet", ".arrow",
                 ".feather")
MAX_DEPTH = 4
MAX_ENTRIES = 5000
RECORD_LIMIT = 2000


def _walk(root: Path) -> Iterator[tuple[Path, list[str]]]:
    """Folders and files below root, breadth-limited: hidden folders and the studio's own state
    skipped, symlinks not followed."""
    seen = 0
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != STATE_DIR and depth < MAX_DEPTH
                         and not Path(folder, d).is_symlink())
        yield Path(folder), sorted(files)
        seen += len(files) + len(dirs)
        if seen > MAX_ENTRIES:
            return


class DataViews:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._last_sampled: tuple[str, dict[str, Any]] | None = None

    def discover(self) -> dict[str, list[str]]:
        """Datasets, tokenizers, packs, runs and chat-ready models under the root."""
        found: dict[str, list[str]] = {"datasets": [], "tokenizers": [], "packs": [], "runs": [], "models": []}
        for folder, files in _walk(self.root):
            name = relative(self.root, folder)
            if "manifest.json" in files:
                found["packs"].append(name)
            if "metrics.jsonl" in files:
                found["runs"].append(name)
            if "tokenizer.json" in files:
                found["tokenizers"].append(name)
            if "sftpack_train.json" in files and ("config.json" in files or "adapter_config.json" in files):
                found["models"].append(name)
            if "manifest.json" not in files and "metrics.jsonl" not in files:
                for file in files:
                    if file.endswith(DATA_SUFFIXES) and not file.startswith(("rejects", "samples")) \
                            and file not in ("tokenizer.json", "tokenizer_config.json", "config.json",
                                             "generation_config.json", "special_tokens_map.json"):
                        found["datasets"].append(relative(self.root, folder / file))
        return found

    def line(self, path: str | None, number: int) -> dict[str, Any]:
        """One line of a dataset file, as read (where a problem example points)."""
        import gzip  # noqa: PLC0415

        file = inside(self.root, path)
        opener: Any = gzip.open if file.name.endswith(".gz") else open
        with opener(file, "rt", encoding="utf-8", errors="replace") as lines:
            for current, text in enumerate(lines, start=1):
                if current == number:
                    return {"file": relative(self.root, file), "line": number, "text": text.rstrip("\n")}
        raise ConfigError(f"{relative(self.root, file)} has no line {number}")

    def _job(self, form: dict[str, Any]) -> tuple[list[Path], Path, dict[str, Any]]:
        """The form's dataset, tokenizer and job settings (typed as the settings' fields, checked
        by them: a malformed number is a settings problem, reported with the others)."""
        data = form.get("data")
        items = data if isinstance(data, list) else [data]
        inputs = [inside(self.root, d) for d in items]
        tokenizer = inside(self.root, form.get("tokenizer"))
        options = from_text({name: form[name] for name in ("template", "format", "max_length") if name in form})
        template = options.get("template")
        if isinstance(template, str) and template.endswith(".jinja"):
            options["template"] = str(inside(self.root, template))
        job_settings(inputs, tokenizer, **options)
        return inputs, tokenizer, options

    def check(self, form: dict[str, Any]) -> dict[str, Any]:
        from ..jobs import check  # noqa: PLC0415

        inputs, tokenizer, options = self._job(form)
        report = check(inputs, tokenizer, **options)
        for group in ("problems", "drops"):
            for entry in report.get(group, {}).values():
                for example in entry["examples"]:
                    example["file"] = relative(self.root, Path(example["file"]))
        return report

    def records(self, form: dict[str, Any]) -> dict[str, Any]:
        """Records with their rendered text in runs of trained / not trained, the tokens per role,
        and a length histogram (of the first RECORD_LIMIT records)."""
        offset, count = whole(form.get("offset"), "offset", 0), min(whole(form.get("count"), "count", 10), 100)
        sampled = self._sampled(form)
        return {**sampled, "records": sampled["records"][offset:offset + count], "offset": offset}

    def _sampled(self, form: dict[str, Any]) -> dict[str, Any]:
        """The first RECORD_LIMIT records encoded, with their histogram and per-role counts; kept
        while the dataset files and settings stay the same, so paging encodes nothing again."""
        from ..jobs import samples  # noqa: PLC0415

        inputs, tokenizer, options = self._job(form)
        key = json.dumps([[str(p), p.stat().st_mtime_ns, p.stat().st_size] for p in inputs]
                         + [str(tokenizer), options], sort_keys=True)
        if self._last_sampled is not None and self._last_sampled[0] == key:
            return self._last_sampled[1]
        encoded = samples(inputs, tokenizer, RECORD_LIMIT, **options)
        lengths = [r["tokens"] for r in encoded if r["tokens"]]  # a rejected record has no length
        counts, edges = (np.histogram(lengths, bins=min(30, max(1, len(set(lengths))))) if lengths
                         else (np.zeros(0), np.zeros(0)))
        roles: dict[str, list[int]] = {}
        for record in encoded:
            for role, (tokens, trained) in record["roles"].items():
                total = roles.setdefault(role, [0, 0])
                total[0] += tokens
                total[1] += trained
        for record in encoded:
            record["file"] = relative(self.root, Path(record["file"]))
        sampled = {"records": encoded, "total": len(encoded),
                   "histogram": {"counts": [int(c) for c in counts], "edges": [float(e) for e in edges]},
                   "max_length": options.get("max_length", DEFAULT_MAX_LENGTH), "roles": roles}
        self._last_sampled = (key, sampled)
        return sampled


def whole(value: Any, name: str, default: int) -> int:
    """A whole number from a request (query string or form), or a refusal naming it (400)."""
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as error:
        raise BadRequest(f"{name}: expected a whole number, found {value!r}") from error


class PackViews:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._encoders: dict[str, Any] = {}

    def _pack(self, path: str | None) -> Any:
        from ..data.pack import PackDataset  # noqa: PLC0415

        return PackDataset(inside(self.root, path))

    def summary(self, path: str | None) -> dict[str, Any]:
        pack = self._pack(path)
        manifest = dict(pack.manifest)
        manifest["template"] = {k: v for k, v in manifest["template"].items() if k != "source"}
        counts = manifest["counts"]
        return {"path": relative(self.root, pack.path), "manifest": manifest, "rows": len(pack),
                "reconciles": counts["records_read"] == counts["packed"] + counts["rejected"] + counts["dropped"],
                "has_validation": (pack.path / "validation" / "manifest.json").is_file(),
                "row_lengths": np.bincount(pack.lengths() // max(1, (pack.max_length or 1) // 20),
                                           minlength=21).tolist() if len(pack) else []}

    def _encoder(self, tokenizer: Path) -> Any:
        from ..encoding import Encoder  # noqa: PLC0415

        key = str(tokenizer)
        if key not in self._encoders:
            self._encoders[key] = Encoder(tokenizer)
        return self._encoders[key]

    def _tokenizer_for(self, pack: Any, override: str | None) -> Path:
        if override:
            return inside(self.root, override)
        recorded = Path(pack.manifest["tokenizer"]["path"])
        folder = recorded.parent if recorded.name.startswith("tokenizer.json") else recorded
        try:
            return inside(self.root, str(folder))
        except ValueError as error:
            raise ConfigError(f"the pack's tokenizer {folder} is outside the studio's folder\n"
                              "hint: pass a tokenizer inside the folder to decode the rows") from error

    def rows(self, path: str | None, offset: int, count: int, tokenizer: str | None) -> dict[str, Any]:
        """Rows with their documents (cu_seqlens), each decoded in runs of trained / not trained."""
        pack = self._pack(path)
        encoder = self._encoder(self._tokenizer_for(pack, tokenizer))
        rows = []
        for index in range(max(0, offset), min(len(pack), offset + min(count, 50))):
            documents = [{**doc, "file": relative(self.root, Path(doc["file"]))}
                         for doc in row_documents(pack, index, encoder)]
            rows.append({"row": index, "tokens": int(pack.lengths()[index]), "documents": documents})
        return {"rows": rows, "total": len(pack), "offset": offset}

    def rejects(self, path: str | None, offset: int, count: int) -> dict[str, Any]:
        folder = inside(self.root, path)
        file = folder / "rejects.jsonl"
        entries: list[dict[str, Any]] = []
        total = 0
        if file.is_file():
            with open(file, encoding="utf-8") as lines:
                for total, line in enumerate(lines, start=1):
                    if offset < total <= offset + min(count, 100):
                        entry = json.loads(line)
                        entry["file"] = relative(self.root, Path(entry.get("file", "")))
                        entries.append(entry)
        return {"rejects": entries, "total": total, "offset": offset}


class ChatModel:
    """A trained model loaded for chat, with the template and stops it was trained with."""

    def __init__(self, model: Any, chat: Any) -> None:
        self.model = model
        self.chat = chat


class RunViews:
    def __init__(self, root: Path) -> None:
        self.root = root

    def run(self, path: str | None, offset: int) -> dict[str, Any]:
        """Metrics lines after byte ``offset`` (for live charts), the last samples, and the
        recipe the run was trained with."""
        folder = inside(self.root, path)
        metrics = folder / "metrics.jsonl"
        if not metrics.is_file():
            raise ConfigError(f"{relative(self.root, folder)} has no metrics.jsonl: it is not a training run")
        with open(metrics, "rb") as file:
            file.seek(max(0, offset))
            chunk = file.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written is read next time
        records = [json.loads(line) for line in complete.decode("utf-8").splitlines() if line.strip()]
        samples_file = folder / "samples.jsonl"
        samples = [json.loads(line) for line in samples_file.read_text().splitlines()[-20:]] \
            if samples_file.is_file() else []
        records_of_models = sorted([*folder.glob("*/sftpack_train.json"), *folder.glob("*/*/sftpack_train.json")])
        recipe = json.loads(records_of_models[0].read_text()).get("config") if records_of_models else None
        models = [relative(self.root, p.parent) for p in records_of_models]
        return {"path": relative(self.root, folder), "records": records, "offset": offset + len(complete),
                "samples": samples, "recipe": recipe, "models": models}

    def chat_model(self, folder: Path) -> ChatModel:
        """A model folder from sftpack train (full model, or adapter on its base)."""
        from transformers import AutoModelForCausalLM  # noqa: PLC0415

        from ..train.generate import ChatFormat  # noqa: PLC0415

        record_file = folder / "sftpack_train.json"
        if not record_file.is_file():
            raise ConfigError(f"{relative(self.root, folder)} is not a model from sftpack train "
                              "(no sftpack_train.json)")
        base = folder
        if (folder / "adapter_config.json").is_file():
            base = inside(self.root, json.loads(record_file.read_text()).get("base_model"))
        chat = ChatFormat.for_folder(folder, folder if (folder / "tokenizer.json").is_file() else base, base=base)
        model: Any = AutoModelForCausalLM.from_pretrained(str(base), dtype="auto")
        if base != folder:
            from peft import PeftModel  # noqa: PLC0415

            model = PeftModel.from_pretrained(model, str(folder))
        model.eval()
        return ChatModel(model, chat)
