"""Jobs the studio launches: ``sftpack preprocess``, ``sftpack train`` and ``sftpack configs copy``
only, built from form
fields into an argument list (never a shell string), with every path checked to lie inside the
studio's folder. The exact command is shown before it runs, so the form teaches the CLI.

Each job lives in ``ROOT/.sftpack-studio/jobs/<id>/``: ``job.json`` (the command, when it
started), ``log.txt`` (its output) and, once it ends, ``exit_code``. A small runner process waits
for the command and writes that code, so a job's state survives page reloads and studio
restarts. Stopping a job signals its whole process group.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..settings import command_line, from_text, preprocess_settings
from .paths import OutsideRoot, inside, relative

STATE_DIR = ".sftpack-studio"
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
OVERRIDE = re.compile(r"^[a-z_]+(\.[a-z_0-9]+)+=[^\n\r]*$")


class BadRequest(ValueError):
    """A launch request the studio refuses, and why."""


def _path(root: Path, value: Any, field: str, must_exist: bool = True) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{field}: a path inside the studio's folder is required")
    try:
        path = inside(root, value.strip())
    except OutsideRoot as error:
        raise BadRequest(f"{field}: {error}") from error
    if must_exist and not path.exists():
        raise BadRequest(f"{field}: {value} does not exist")
    shown = relative(root, path)  # jobs run in the root folder: the command reads as typed there
    return f"./{shown}" if shown.startswith("-") else shown


# The preprocess settings the launch form may set (never map_fn: that runs code).
PREPROCESS_FORM = ("template", "format", "max_length", "val_size", "threads", "seed", "overwrite")


def preprocess_args(root: Path, form: dict[str, Any]) -> list[str]:
    """The form as typed preprocess settings (validated as the command line's are, every problem
    at once), written back as the command that makes them."""
    data = form.get("data")
    items = data if isinstance(data, list) else [data]
    inputs = [_path(root, d, "data") for d in items]
    tokenizer = _path(root, form.get("tokenizer"), "tokenizer")
    out = _path(root, form.get("out"), "out", must_exist=False)
    options = from_text({name: form[name] for name in PREPROCESS_FORM if name in form})
    template = options.get("template")
    if isinstance(template, str) and (template.endswith(".jinja") or not NAME.match(template)):
        options["template"] = _path(root, template, "template")
    try:
        return command_line(preprocess_settings(inputs, tokenizer, out, **options))
    except ConfigError as error:
        raise BadRequest(str(error)) from error


# The shipped DeepSpeed configs a recipe may name (sftpack.train.zero; read here without torch).
DEEPSPEED_PRESETS = {p.stem for p in (Path(__file__).resolve().parent.parent / "configs" / "deepspeed").glob("*.json")}
# Overrides the studio refuses: running code shipped with a model is the recipe author's call.
REFUSED_OVERRIDES = {"model.trust_remote_code": "runs code shipped with the model; set it in the recipe itself"}
PATH_OVERRIDES = {"model.path": True, "data.pack": True, "data.eval_pack": True, "output.dir": False}


def _override(root: Path, text: Any) -> str:
    """A `section.key=value` override, with the checks its form field would get: paths inside the
    folder (a DeepSpeed JSON too; a shipped preset name stays a name), nothing that runs code."""
    if not isinstance(text, str) or not OVERRIDE.match(text):
        raise BadRequest(f"overrides: {text!r} is not section.key=value")
    key, value = text.split("=", 1)
    if key in REFUSED_OVERRIDES:
        raise BadRequest(f"overrides: {key} {REFUSED_OVERRIDES[key]}")
    if key in PATH_OVERRIDES:
        return f"{key}={_path(root, value, key, must_exist=PATH_OVERRIDES[key])}"
    if key == "distributed.deepspeed" and value not in DEEPSPEED_PRESETS:
        return f"{key}={_path(root, value, key)}"
    if key == "data.packs":
        raise BadRequest("overrides: data.packs lists paths; set it in the recipe")
    return text


def train_args(root: Path, form: dict[str, Any]) -> list[str]:
    overrides = form.get("overrides") or []
    if not isinstance(overrides, list):
        raise BadRequest("overrides: expected a list of section.key=value")
    return ["train", _path(root, form.get("recipe"), "recipe"), *(_override(root, o) for o in overrides)]


def copy_recipe_args(root: Path, form: dict[str, Any]) -> list[str]:
    """``sftpack configs copy NAME DIR``: a ready recipe into the folder, to edit and train."""
    from ..cli.configs import names  # noqa: PLC0415

    name = form.get("name")
    if name not in names():
        raise BadRequest(f"name: {name!r} is not a ready recipe (`sftpack configs list` shows them)")
    return ["configs", "copy", str(name), _path(root, form.get("directory") or ".", "directory", must_exist=False)]


BUILDERS = {"preprocess": preprocess_args, "train": train_args, "configs copy": copy_recipe_args}


def command_args(root: Path, request: dict[str, Any]) -> list[str]:
    """The sftpack arguments for a launch request (``{"command": ..., "form": {...}}``)."""
    command = request.get("command")
    if command not in BUILDERS:
        raise BadRequest(f"command: {command!r} is not one the studio runs ({', '.join(BUILDERS)})")
    form = request.get("form") or {}
    if not isinstance(form, dict):
        raise BadRequest("form: expected a mapping of fields")
    return BUILDERS[command](root, form)


def display(args: list[str]) -> str:
    return shlex.join(["sftpack", *args])


class Launcher:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.jobs_dir = root / STATE_DIR / "jobs"
        # The runners this studio started (polled, so that a finished one is reaped); jobs of an
        # earlier studio are checked by process id.
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, request: dict[str, Any]) -> dict[str, Any]:
        args = command_args(self.root, request)
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        folder = self.jobs_dir / job_id
        folder.mkdir(parents=True)
        argv = [sys.executable, "-m", "sftpack", *args]
        record = {"id": job_id, "command": display(args), "args": args, "started": time.time()}
        (folder / "job.json").write_text(json.dumps(record))
        # The job imports the same sftpack as this studio, wherever the job runs from.
        package_parent = str(Path(__file__).resolve().parent.parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent,
                                                                         os.environ.get("PYTHONPATH")]))}
        with open(folder / "log.txt", "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "sftpack.studio.runner", str(folder), *argv],
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=self.root, start_new_session=True, env=env)
        record["pid"] = process.pid
        self.processes[job_id] = process
        (folder / "job.json").write_text(json.dumps(record))
        return self.status(job_id)

    def _folder(self, job_id: str) -> Path:
        if not NAME.match(job_id) or not (self.jobs_dir / job_id / "job.json").is_file():
            raise BadRequest(f"no job {job_id!r}")
        return self.jobs_dir / job_id

    def status(self, job_id: str) -> dict[str, Any]:
        folder = self._folder(job_id)
        record: dict[str, Any] = json.loads((folder / "job.json").read_text())
        exit_file = folder / "exit_code"
        process = self.processes.get(job_id)
        running = process.poll() is None if process is not None else bool(record.get("pid")) and _alive(record["pid"])
        if exit_file.is_file():
            code = int(exit_file.read_text().strip() or 1)
            record["state"] = "done" if code == 0 else ("stopped" if record.get("stopped") else "failed")
            record["exit_code"] = code
        elif running:
            record["state"] = "running"
        else:
            record["state"] = "lost"  # the runner died without writing a code (machine restart)
        return record

    def list(self) -> list[dict[str, Any]]:
        if not self.jobs_dir.is_dir():
            return []
        return [self.status(p.name) for p in sorted(self.jobs_dir.iterdir(), reverse=True)
                if (p / "job.json").is_file()]

    def log(self, job_id: str, offset: int = 0) -> dict[str, Any]:
        path = self._folder(job_id) / "log.txt"
        with open(path, "rb") as log:
            log.seek(max(0, offset))
            text = log.read(1 << 20)
        return {"text": text.decode("utf-8", "replace"), "offset": offset + len(text)}

    def stop(self, job_id: str) -> dict[str, Any]:
        record = self.status(job_id)
        if record["state"] == "running":
            folder = self._folder(job_id)
            saved = json.loads((folder / "job.json").read_text())
            saved["stopped"] = True
            (folder / "job.json").write_text(json.dumps(saved))
            try:
                os.killpg(record["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
        return self.status(job_id)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
