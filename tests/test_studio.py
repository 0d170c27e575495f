"""sftpack studio: the safety rules over the HTTP API (paths stay inside the folder, only sftpack
commands run, never a shell string; tokens beyond loopback), then the views in a real headless
Chromium from Debian's packages: highlighted trained tokens in a pack, a run's chart growing as
metrics.jsonl grows, a launched preprocess finishing, and a chat with what `sftpack quickstart`
trained answering as `sftpack chat` does. Screenshots go to $SFTPACK_STUDIO_SCREENSHOTS when set
(docs/ holds the ones the README shows)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sftpack.preprocess import preprocess

from .conftest import DEMO

flask = pytest.importorskip("flask")

from sftpack.studio import create_app  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder as a user has one: a dataset, a tokenizer, a pack of it, a run."""
    root = tmp_path_factory.mktemp("studio")
    (root / "data").mkdir()
    shutil.copy(DEMO / "chat.jsonl", root / "data" / "chat.jsonl")
    shutil.copytree(DEMO, root / "tok", ignore=shutil.ignore_patterns("*.jsonl"))
    preprocess([root / "data" / "chat.jsonl"], root / "tok", root / "packs" / "chat", max_length=256, val_size=10)
    run = root / "runs" / "first"
    run.mkdir(parents=True)
    write_metrics(run, range(1, 4))
    return root


def write_metrics(run: Path, steps: Any) -> None:
    with open(run / "metrics.jsonl", "a") as metrics:
        for step in steps:
            metrics.write(json.dumps({"step": step, "loss": 2.0 / step, "lr": 1e-3, "tokens_per_s": 1000.0 + step,
                                      "trained_tokens": 50}) + "\n")


@pytest.fixture
def client(folder: Path) -> Any:
    return create_app(folder).test_client()


# ---- safety -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["../../etc", "/etc", "packs/../../..", "escape", "escape/passwd"])
def test_paths_outside_the_folder_are_refused(folder: Path, client: Any, path: str) -> None:
    outside = folder.parent / "outside-secret"
    outside.mkdir(exist_ok=True)
    (outside / "passwd").write_text("secret\n")
    if not (folder / "escape").exists():
        (folder / "escape").symlink_to(outside)  # a symlink pointing out of the folder
    for url in (f"/api/pack?path={path}", f"/api/pack/rejects?path={path}", f"/api/run?path={path}",
                f"/api/file/line?path={path}&line=1"):
        response = client.get(url)
        assert response.status_code == 400, (url, response.get_json())
        assert "outside the studio's folder" in response.get_json()["error"]


def test_only_sftpack_commands_run_and_values_never_reach_a_shell(folder: Path, client: Any) -> None:
    assert client.post("/api/jobs", json={"command": "bash", "form": {}}).status_code == 400
    assert client.post("/api/jobs", json={"command": "preprocess", "form": {
        "data": "data/chat.jsonl; touch pwned", "tokenizer": "tok", "out": "x"}}).status_code == 400
    assert client.post("/api/jobs/preview", json={"command": "train", "form": {
        "recipe": "../../etc/passwd"}}).status_code == 400
    assert client.post("/api/jobs/preview", json={"command": "train", "form": {
        "recipe": "data/chat.jsonl", "overrides": ["--deepspeed=/etc/x"]}}).status_code == 400
    preview = client.post("/api/jobs/preview", json={"command": "preprocess", "form": {
        "data": "data/chat.jsonl", "tokenizer": "tok", "out": "packs/$(touch pwned)", "max_length": 128,
        "template": "qwen_chat"}}).get_json()["command"]
    assert preview.startswith("sftpack preprocess ") and "'" in preview, "shown quoted, as a shell would need it"
    job = client.post("/api/jobs", json={"command": "preprocess", "form": {
        "data": "data/chat.jsonl", "tokenizer": "tok", "out": "packs/$(touch pwned)", "max_length": 128}}).get_json()
    for _ in range(600):
        if client.get(f"/api/jobs/{job['id']}/log").get_json()["state"] != "running":
            break
        time.sleep(0.1)
    assert client.get(f"/api/jobs/{job['id']}/log").get_json()["state"] == "done"
    assert (folder / "packs" / "$(touch pwned)" / "manifest.json").is_file(), "the value was a folder name"
    assert not (folder / "pwned").exists() and not Path("pwned").exists()
    assert client.get("/api/jobs/..%2F..%2Fetc/log").status_code in (400, 404)
    shutil.copy(folder / "data" / "chat.jsonl", folder / "data" / "--overwrite")  # a name that looks like a flag
    flagged = client.post("/api/jobs/preview", json={"command": "preprocess", "form": {
        "data": "data/--overwrite", "tokenizer": "tok", "out": "packs/x"}}).get_json()["command"]
    assert "data/--overwrite" in flagged and " --overwrite" not in flagged.replace("data/--overwrite", "")


def test_a_ready_recipe_is_copied_into_the_folder_to_train_from(folder: Path, client: Any) -> None:
    recipes = client.get("/api/overview").get_json()["recipes"]
    assert recipes
    assert client.post("/api/jobs/preview", json={"command": "configs copy", "form": {
        "name": "../../etc/passwd", "directory": "recipes"}}).status_code == 400
    job = client.post("/api/jobs", json={"command": "configs copy", "form": {
        "name": recipes[0], "directory": "recipes"}}).get_json()
    assert job["command"] == f"sftpack configs copy {recipes[0]} recipes"
    for _ in range(300):
        if client.get(f"/api/jobs/{job['id']}/log").get_json()["state"] != "running":
            break
        time.sleep(0.1)
    assert (folder / "recipes" / f"{recipes[0]}.yaml").is_file()
    preview = client.post("/api/jobs/preview", json={"command": "train", "form": {
        "recipe": f"recipes/{recipes[0]}.yaml", "overrides": ["optim.max_steps=5"]}}).get_json()["command"]
    assert preview == f"sftpack train recipes/{recipes[0]}.yaml optim.max_steps=5"


def test_beyond_loopback_every_request_needs_the_token(folder: Path) -> None:
    guarded = create_app(folder, token="s3cret").test_client()
    assert guarded.get("/api/overview").status_code == 401
    assert guarded.get("/api/overview", headers={"X-Studio-Token": "wrong"}).status_code == 401
    assert guarded.get("/api/overview", headers={"X-Studio-Token": "s3cret"}).status_code == 200
    assert guarded.get("/api/overview?token=s3cret").status_code == 401, "the URL's token opens the page only"
    first = guarded.get("/?token=s3cret")
    assert first.status_code == 303 and first.headers["Location"].endswith("/"), "the token leaves the address"
    assert "sftpack_studio_token=s3cret" in first.headers["Set-Cookie"]
    assert guarded.get("/").status_code == 200
    assert guarded.get("/api/overview").status_code == 200, "the cookie set on the first visit is enough"


def test_a_page_of_another_site_cannot_change_anything(client: Any) -> None:
    form = {"command": "configs copy", "form": {"name": "qwen3_8b_lora", "directory": "recipes"}}
    refused = client.post("/api/jobs/preview", json=form, headers={"Origin": "http://attacker.example"})
    assert refused.status_code == 403
    assert client.post("/api/jobs/preview", json=form, headers={"Origin": "http://localhost"}).status_code == 200
    assert client.post("/api/jobs/preview", json=form).status_code == 200, "no Origin: not a browser's page"
    assert client.get("/api/overview", headers={"Origin": "http://attacker.example"}).status_code == 200


def test_malformed_numbers_are_refused_as_bad_requests(client: Any) -> None:
    for url in ("/api/pack/rows?path=packs/chat&offset=abc", "/api/pack/rejects?path=packs/chat&count=1e9x",
                "/api/run?path=runs/first&offset=-", "/api/file/line?path=data/chat.jsonl&line=two"):
        response = client.get(url)
        assert response.status_code == 400 and "expected a whole number" in response.get_json()["error"], url
    records = client.post("/api/data/records", json={"data": "data/chat.jsonl", "tokenizer": "tok", "offset": "x"})
    assert records.status_code == 400
    check = client.post("/api/data/check", json={"data": "data/chat.jsonl", "tokenizer": "tok", "max_length": "abc"})
    assert check.status_code == 422 and "`max_length`: expected a positive whole number" in check.get_json()["error"]
    launch = client.post("/api/jobs/preview", json={"command": "preprocess", "form": {
        "data": "data/chat.jsonl", "tokenizer": "tok", "out": "packs/x", "max_length": "4k", "val_size": "2.5"}})
    assert launch.status_code == 400
    assert "`max_length`" in launch.get_json()["error"] and "`val_size`" in launch.get_json()["error"]


def test_the_length_histogram_shows_records_too_long_to_keep_past_max_length(client: Any) -> None:
    form = {"data": "data/chat.jsonl", "tokenizer": "tok", "max_length": "60"}
    check = client.post("/api/data/check", json=form).get_json()
    sampled = client.post("/api/data/records", json=form).get_json()
    counts, edges = sampled["histogram"]["counts"], sampled["histogram"]["edges"]
    assert check["drops"]["too_long"]["count"] > 0 and check["rejected"] > 0
    assert sum(counts) == check["encoded"] + check["dropped"], "every valid record, and no rejected one"
    assert edges[0] > 0 and edges[-1] == check["lengths"]["max"] > 60, "the dropped ones at their length"


def test_launched_train_overrides_get_the_checks_form_fields_get(folder: Path, client: Any) -> None:
    (folder / "r.yaml").write_text("model: {path: tok}\n")

    def preview(*overrides: str) -> Any:
        return client.post("/api/jobs/preview", json={"command": "train", "form": {
            "recipe": "r.yaml", "overrides": list(overrides)}})

    for override in ("model.path=/etc", "data.pack=../../x", "output.dir=/tmp/elsewhere", "data.eval_pack=escape",
                     "distributed.deepspeed=/etc/ds.json", "model.trust_remote_code=true",
                     "data.packs=[{path: /etc}]"):
        response = preview(override)
        assert response.status_code == 400, override
    assert "runs code shipped with the model" in preview("model.trust_remote_code=true").get_json()["error"]
    allowed = preview("distributed.deepspeed=zero2", "data.pack=packs/chat", "optim.lr=1e-4", "output.dir=runs/new")
    assert allowed.get_json()["command"] == ("sftpack train r.yaml distributed.deepspeed=zero2 data.pack=packs/chat "
                                             "optim.lr=1e-4 output.dir=runs/new")


def test_the_studio_command_serves_with_waitress(folder: Path) -> None:
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "sftpack", "studio", str(folder), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview", timeout=2) as response:
                    assert response.headers["Server"] == "sftpack-studio"
                    assert "packs/chat" in json.loads(response.read())["packs"]
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("the studio did not answer")
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0]
    assert f"open http://127.0.0.1:{port}/" in output
    assert "development server" not in output.lower() and "Traceback" not in output


def test_on_loopback_requests_for_other_host_names_are_refused(client: Any) -> None:
    assert client.get("/api/overview").status_code == 200
    assert client.get("/api/overview", headers={"Host": "attacker.example:7860"}).status_code == 403


def test_the_studio_command_refuses_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sftpack.cli import main

    assert main(["studio", str(tmp_path / "nope")]) == 1
    assert "is not a folder" in capsys.readouterr().err


# ---- in a real browser ------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                 "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


class Server:
    def __init__(self, root: Path) -> None:
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, create_app(root), threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def server(folder: Path) -> Iterator[Server]:
    running = Server(folder)
    yield running
    running.server.shutdown()


def wait_for(driver: Any, script: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {script}")


def screenshot(driver: Any, name: str, tmp_path: Path) -> Path:
    target = Path(os.environ.get("SFTPACK_STUDIO_SCREENSHOTS", tmp_path)) / f"studio-{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(target))
    return target


def open_view(driver: Any, server: Server, view: str) -> None:
    driver.get(server.url + f"#{view}")
    wait_for(driver, "return document.body.dataset.ready === '1'")


def test_a_pack_shows_its_rows_with_trained_tokens_highlighted(browser: Any, server: Server, tmp_path: Path) -> None:
    open_view(browser, server, "packs")
    browser.execute_script("document.querySelector('#pack-path').value = 'packs/chat';"
                           "document.querySelector('#pack-form').requestSubmit();")
    trained = wait_for(browser, "return [...document.querySelectorAll('#pack-rows .trained')].map(e => e.textContent)")
    assert any("<|im_end|>" in t for t in trained), "trained spans end with the end-of-turn token"
    summary = browser.find_element("css selector", "#pack-summary").text
    assert "192 read = 190 packed + 2 rejected + 0 dropped ✓" in summary
    rejects = wait_for(browser, "return document.querySelector('#pack-rejects').textContent")
    assert "invalid_json" in rejects and "data/chat.jsonl:51" in rejects
    assert screenshot(browser, "pack", tmp_path).stat().st_size > 10_000
    assert browser.execute_script("return location.hash") == "#packs?path=packs%2Fchat", "the view has an address"


def test_an_address_opens_its_view_as_it_was(browser: Any, server: Server, tmp_path: Path) -> None:
    def load(address: str) -> None:  # a fresh page, as a bookmark or a shared link opens it
        browser.get("about:blank")
        browser.get(server.url + address)
        wait_for(browser, "return document.body.dataset.ready === '1'")

    load("#packs?path=packs/chat&row=3")
    where = wait_for(browser, "const t = document.querySelector('#rows-where').textContent; return t.trim() && t")
    assert where.strip().startswith("rows 3–5 of"), where
    assert not browser.find_element("css selector", "#view-packs").get_attribute("hidden")
    load("#data?data=data/chat.jsonl&tokenizer=tok&max_length=64")
    report = wait_for(browser, "return document.querySelector('#data-check').textContent")
    assert "64" in report and browser.execute_script("return document.querySelector('#data-dataset').value") == \
        "data/chat.jsonl"
    load("#runs?path=runs/first")
    wait_for(browser, "return studio.charts.loss && studio.charts.loss.data.datasets.length >= 1")
    time.sleep(0.5)  # a second refresh (the run list's) has landed too
    points = browser.execute_script("return studio.charts.loss.data.datasets[0].data.map(p => p.x)")
    assert points == sorted(set(points)), "each logged step drawn once"
    screenshot(browser, "deep-link", tmp_path)


def test_a_dataset_shows_its_check_report_and_records(browser: Any, server: Server, tmp_path: Path) -> None:
    open_view(browser, server, "data")
    browser.execute_script("document.querySelector('#data-form').requestSubmit();")
    wait_for(browser, "return document.querySelectorAll('#data-records .trained').length > 0")
    report = browser.find_element("css selector", "#data-check").text
    assert "unknown_role: 1" in report and "data/chat.jsonl:121" in report
    browser.find_element("link text", "data/chat.jsonl:121").click()
    line = wait_for(browser, "return document.querySelector('#data-line').textContent")
    assert '"bot"' in line, "the example links to the record as written"
    assert wait_for(browser, "return studio.charts.histogram.data.datasets[0].data.length") > 0
    screenshot(browser, "data", tmp_path)


def test_a_runs_chart_grows_as_metrics_are_appended(browser: Any, server: Server, folder: Path,
                                                     tmp_path: Path) -> None:
    open_view(browser, server, "runs")
    points = "return (studio.charts.loss.data.datasets[0] || {data: []}).data.length"
    assert wait_for(browser, f"{points} === 3 && 3")
    write_metrics(folder / "runs" / "first", range(4, 9))
    assert wait_for(browser, f"{points} === 8 && 8", timeout=15)
    said = "studio.charts.mfu.options.plugins.title.display"
    assert browser.execute_script(f"return {said}"), "metrics without MFU (a CPU run) say so instead of empty axes"
    screenshot(browser, "runs", tmp_path)
    with open(folder / "runs" / "first" / "metrics.jsonl", "a") as metrics:
        metrics.write(json.dumps({"step": 9, "loss": 0.2, "lr": 1e-3, "tokens_per_s": 1009.0, "trained_tokens": 50,
                                  "mfu": 0.41, "max_memory_gb": 12.5}) + "\n")
    assert wait_for(browser, f"return studio.charts.mfu.data.datasets.length === 2 && !{said}", timeout=15)


def test_a_launched_preprocess_shows_its_command_and_finishes(browser: Any, server: Server, folder: Path,
                                                               tmp_path: Path) -> None:
    open_view(browser, server, "launch")
    out = browser.find_element("css selector", "#launch-form input[name=out]")
    out.clear()
    out.send_keys("packs/launched")
    preview = wait_for(browser, "const t = document.querySelector('#launch-preview').textContent;"
                                "return t.includes('packs/launched') && t")
    assert preview.startswith("sftpack preprocess ") and "--tokenizer" in preview
    browser.find_element("css selector", "#launch-form button[type=submit]").click()
    wait_for(browser, "return document.querySelector('#log-title').dataset.state === 'done'", timeout=120)
    assert "done:" in browser.find_element("css selector", "#job-log").text
    assert (folder / "packs" / "launched" / "manifest.json").is_file()
    browser.refresh()
    wait_for(browser, "return document.querySelectorAll('#job-list .job.done').length > 0"), "jobs survive a reload"
    screenshot(browser, "launch", tmp_path)


@pytest.fixture(scope="module")
def quickstart_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from sftpack.quickstart import quickstart

    root = tmp_path_factory.mktemp("studio-quickstart")
    quickstart(root / "quick", steps=40)
    return root


def test_chat_answers_as_sftpack_chat_does(browser: Any, quickstart_folder: Path, tmp_path: Path) -> None:
    from sftpack.lifecycle import ChatSession

    running = Server(quickstart_folder)
    try:
        open_view(browser, running, "chat")
        models = browser.execute_script("return studio.overview.models")
        assert "quick/run/model" in models
        browser.execute_script("document.querySelector('#chat-model').value = 'quick/run/model';")
        box = browser.find_element("css selector", "#chat-input")
        box.send_keys("Name a red fox.")
        browser.find_element("css selector", "#chat-form button").click()
        reply = wait_for(browser, "const d = document.querySelector('#chat-log .assistant .content.done');"
                                  "return d && d.textContent", timeout=120)
        expected = ChatSession(quickstart_folder / "quick" / "run" / "model").reply("Name a red fox.", 64)
        assert reply == expected and reply
        screenshot(browser, "chat", tmp_path)
        open_view(browser, running, "runs")  # a real run: loss and eval loss, lr schedule, samples, recipe
        wait_for(browser, "return studio.charts.loss.data.datasets.length >= 2")
        assert "sample_prompts" in wait_for(browser, "return document.querySelector('#run-recipe').textContent")
        screenshot(browser, "runs", tmp_path)
    finally:
        running.server.shutdown()


def test_a_pack_of_the_real_multi_turn_corpus_shows_its_trained_spans(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))
    from corpus import tokenizer_dir, write_corpus

    root = tmp_path / "work"
    root.mkdir()
    tokenizer = tokenizer_dir(root, "qwen3")
    write_corpus(root / "corpus.jsonl", 0.3)
    preprocess([root / "corpus.jsonl"], tokenizer, root / "pack", max_length=4096)
    client = create_app(root).test_client()
    summary = client.get("/api/pack?path=pack").get_json()
    assert summary["reconciles"] and summary["manifest"]["counts"]["packed"] > 100
    rows = client.get("/api/pack/rows?path=pack&count=2").get_json()["rows"]
    documents = [d for row in rows for d in row["documents"]]
    assert documents and all(any(trained for _, trained in d["runs"]) for d in documents)
    assert all(text.endswith("<|im_end|>") for d in documents for text, trained in d["runs"] if trained)
