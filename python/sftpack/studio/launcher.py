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


def _number(value: Any, field: str, kind: type) -> str | None:
    if value in (None, ""):
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError) as error:
        raise BadRequest(f"{field}: expected a number, found {value!r}") from error
    if number <= 0:
        raise BadRequest(f"{field}: must be positive")
    return str(number)


def preprocess_args(root: Path, form: dict[str, Any]) -> list[str]:
    data = form.get("data")
    items = data if isinstance(data, list) else [data]
    args = ["preprocess", *(_path(root, d, "data") for d in items)]
    args += ["--tokenizer", _path(root, form.get("tokenizer"), "tokenizer")]
    args += ["--out", _path(root, form.get("out"), "out", must_exist=False)]
    template = form.get("template")
    if template:
        if not isinstance(template, str):
            raise BadRequest("template: a built-in name or a .jinja path")
        args += ["--template", template if NAME.match(template) and not template.endswith(".jinja")
                 else _path(root, template, "template")]
    for flag, field, kind in (("--max-length", "max_length", int), ("--val-size", "val_size", float),
                              ("--threads", "threads", int)):
        value = _number(form.get(field), field, kind)
        if value is not None:
            args += [flag, value.removesuffix(".0") if kind is float and float(value) >= 1 else value]
    if form.get("overwrite"):
        args.append("--overwrite")
    return args


def train_args(root: Path, form: dict[str, Any]) -> list[str]:
    args = ["train", _path(root, form.get("recipe"), "recipe")]
    for override in form.get("overrides") or []:
        if not isinstance(override, str) or not OVERRIDE.match(override):
            raise BadRequest(f"overrides: {override!r} is not section.key=value")
        args.append(override)
    return args


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
