"""The studio's web server: a Flask app serving one page (static/) and a JSON API over ROOT.

Safety: it binds 127.0.0.1 unless told otherwise; bound beyond loopback it requires an access
token (printed at start, as Jupyter does: the URL's ``?token=`` is taken on that first page load
only, which turns it into a cookie and drops it from the address), and bound to loopback it
answers only requests addressed to a loopback name (so a web page elsewhere cannot reach it by
DNS rebinding). Requests that change anything (POST) must come from the studio's own page when
a browser says where they come from (the Origin header). Every path comes from
``paths.inside`` and launched jobs from ``launcher`` (sftpack commands only). It is served by
waitress, a production WSGI server.

Views have addresses: ``/#packs?path=packs/chat&row=20``, ``/#data?data=...&tokenizer=...``,
``/#runs?path=runs/first``, ``/#chat?model=...``, ``/#launch``.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, jsonify, redirect, request

from .. import __version__
from ..errors import SftpackError
from .launcher import STATE_DIR, BadRequest, Launcher, command_args, display
from .paths import OutsideRoot, inside, relative
from .views import DataViews, PackViews, RunViews, whole

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
STATIC = Path(__file__).parent / "static"
COOKIE = "sftpack_studio_token"


def create_app(root: Path, token: str | None = None) -> Flask:
    """The studio over ``root``. ``token``: required on every request when set (a non-loopback
    bind); without it only loopback host names are answered."""
    root = Path(root).resolve()
    app = Flask("sftpack.studio", static_folder=str(STATIC), static_url_path="/static")
    app.config["STUDIO_ROOT"] = root
    launcher = Launcher(root)
    data, packs, runs = DataViews(root), PackViews(root), RunViews(root)
    chats: dict[str, Any] = {}
    chat_lock = threading.Lock()

    @app.before_request
    def guard() -> Any:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            if origin is not None and origin != request.host_url.rstrip("/"):
                abort(403, "a request from another site's page is refused")
        if token is None:
            host = (request.host or "").rsplit(":", 1)[0].strip("[]")
            if host not in LOOPBACK:
                abort(403, "this studio answers only on 127.0.0.1 / localhost")
            return None
        given = request.headers.get("X-Studio-Token") or request.cookies.get(COOKIE)
        if request.path == "/" and request.method == "GET" and "token" in request.args:
            given = request.args["token"]  # the printed URL, opened once: see index()
        if not given or not secrets.compare_digest(given, token):
            abort(401, "an access token is required: open the URL the studio printed at start")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                       "style-src 'self' 'unsafe-inline'")
        return response

    @app.errorhandler(OutsideRoot)
    @app.errorhandler(BadRequest)
    def refused(error: Exception) -> Any:
        return jsonify({"error": str(error)}), 400

    @app.errorhandler(SftpackError)
    def sftpack_error(error: SftpackError) -> Any:
        return jsonify({"error": error.message, "hint": error.hint}), 422

    def body() -> dict[str, Any]:
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            raise BadRequest("expected a JSON object")
        return payload

    @app.get("/")
    def index() -> Any:
        if token is not None and "token" in request.args:
            # The token becomes a cookie and leaves the address bar (and history, and referrers).
            response = redirect("/", code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
            return response
        return app.send_static_file("index.html")

    @app.get("/api/overview")
    def overview() -> Any:
        from ..cli.configs import names  # noqa: PLC0415

        return jsonify({"root": str(root), "version": __version__, "recipes": names(), **data.discover()})

    @app.get("/api/file/line")
    def file_line() -> Any:
        return jsonify(data.line(request.args.get("path"), whole(request.args.get("line"), "line", 1)))

    @app.post("/api/data/check")
    def data_check() -> Any:
        return jsonify(data.check(body()))

    @app.post("/api/data/records")
    def data_records() -> Any:
        return jsonify(data.records(body()))

    @app.get("/api/pack")
    def pack_summary() -> Any:
        return jsonify(packs.summary(request.args.get("path")))

    @app.get("/api/pack/rows")
    def pack_rows() -> Any:
        return jsonify(packs.rows(request.args.get("path"), whole(request.args.get("offset"), "offset", 0),
                                  whole(request.args.get("count"), "count", 5), request.args.get("tokenizer")))

    @app.get("/api/pack/rejects")
    def pack_rejects() -> Any:
        return jsonify(packs.rejects(request.args.get("path"), whole(request.args.get("offset"), "offset", 0),
                                     whole(request.args.get("count"), "count", 20)))

    @app.get("/api/run")
    def run_view() -> Any:
        return jsonify(runs.run(request.args.get("path"), whole(request.args.get("offset"), "offset", 0)))

    @app.post("/api/jobs/preview")
    def job_preview() -> Any:
        return jsonify({"command": display(command_args(root, body()))})

    @app.post("/api/jobs")
    def job_start() -> Any:
        return jsonify(launcher.start(body()))

    @app.get("/api/jobs")
    def job_list() -> Any:
        return jsonify(launcher.list())

    @app.get("/api/jobs/<job_id>/log")
    def job_log(job_id: str) -> Any:
        return jsonify({**launcher.status(job_id),
                        **launcher.log(job_id, whole(request.args.get("offset"), "offset", 0))})

    @app.post("/api/jobs/<job_id>/stop")
    def job_stop(job_id: str) -> Any:
        return jsonify(launcher.stop(job_id))

    @app.post("/api/chat")
    def chat() -> Any:
        payload = body()
        folder = inside(root, payload.get("model"))
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: the conversation so far, ending with a user message")
        with chat_lock:
            if str(folder) not in chats:
                chats.clear()  # one model in memory at a time
                chats[str(folder)] = runs.chat_model(folder)
            model = chats[str(folder)]
        max_new = min(whole(payload.get("max_new_tokens"), "max_new_tokens", 128), 1024)
        return Response(_stream_reply(model, messages, max_new, chat_lock), mimetype="application/x-ndjson")

    return app


def _stream_reply(model: Any, messages: list[dict[str, Any]], max_new_tokens: int,
                  lock: threading.Lock) -> Iterator[str]:
    """Newline-delimited JSON: {"delta": text} as tokens arrive, then {"reply": the final text}
    (cut at the trained stop tokens, as `sftpack chat` prints it)."""
    from transformers import TextIteratorStreamer  # noqa: PLC0415

    from ..train.generate import generate_reply  # noqa: PLC0415

    streamer = TextIteratorStreamer(model.chat.tokenizer, skip_prompt=True, skip_special_tokens=True,
                                    clean_up_tokenization_spaces=False)
    result: dict[str, str] = {}

    def generate() -> None:
        with lock:
            try:
                result["reply"] = generate_reply(model.model, model.chat, messages, max_new_tokens, streamer=streamer)
            except Exception as error:  # shown to the user, not lost in a thread
                result["error"] = str(error)
                streamer.end()  # type: ignore[no-untyped-call]

    worker = threading.Thread(target=generate, daemon=True)
    worker.start()
    for text in streamer:
        if text:
            yield json.dumps({"delta": text}) + "\n"
    worker.join()
    yield json.dumps(result) + "\n"


def serve(root: Path, host: str = "127.0.0.1", port: int = 7860, token: str | None = None) -> None:
    """Runs the studio until interrupted; prints the URL to open (with the token when one is
    needed)."""
    loopback = host in LOOPBACK
    if not loopback and token is None:
        token = secrets.token_urlsafe(24)
    app = create_app(root, token)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"sftpack studio over {Path(root).resolve()}\n  open {url}", flush=True)
    if not loopback:
        print("  (listening beyond this machine: only requests with the token are answered)", flush=True)
    os.makedirs(Path(root) / STATE_DIR, exist_ok=True)
    import waitress  # noqa: PLC0415

    # Chat streams a reply per request and pages poll while jobs run: a few threads each.
    waitress.serve(app, host=host, port=port, threads=8, ident="sftpack-studio", _quiet=True)


__all__ = ["create_app", "relative", "serve"]
