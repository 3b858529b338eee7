"""Who may read, and what `storyapp serve` writes of each request: STORYAPP_READ_TOKEN guards
every GET but /health; the access log is one JSON line a request."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import free_port, init, make_settings

from storyapp import jobs
from storyapp.access import AccessLog
from storyapp.api import TOKEN_COOKIE, create_app

READ, WRITE = "r3ad-token", "wr1te-token"


@pytest.fixture
def guarded(tmp_path, backend, ollama):
    settings = make_settings(
        tmp_path, ollama.url, STORYAPP_READ_TOKEN=READ, STORYAPP_API_TOKEN=WRITE, **backend.env
    )
    return create_app(init(settings))


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def status(client, path: str, **kwargs) -> int:
    with client.get(path, **kwargs) as response:  # a static file is open until closed
        return response.status_code


def every_get_path(app) -> list[str]:
    """A URL for each GET route of the app, with made-up ids: a guard answers before the route
    looks for them."""
    paths = []
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods:
            values = {arg: 1 if arg != "job_id" else "0" * 32 for arg in rule.arguments}
            values = {**values, "filename": "dashboard.js"} if rule.endpoint == "static" else values
            paths.append(rule.build(values)[1])
    return sorted(paths)


def test_every_get_but_health_needs_the_read_token(guarded):
    client = guarded.test_client()
    paths = every_get_path(guarded)
    assert {"/", "/stories", "/feed.xml", "/stats", "/static/dashboard.js"} <= set(paths)
    for path in paths:
        if path == "/health":
            continue
        for headers in ({}, bearer("wrong"), {"Authorization": READ}, bearer(READ + "x")):
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.get_json()["error"]["code"] == "unauthorized"
            assert response.headers["WWW-Authenticate"] == "Bearer"
        for token in (READ, WRITE):  # the API token reads too
            assert status(client, path, headers=bearer(token)) != 401, path
    assert client.get("/health").status_code in (200, 503)


def test_the_read_token_does_not_write(guarded):
    client = guarded.test_client()
    for headers in ({}, bearer(READ)):
        response = client.post("/stories/generate", json={}, headers=headers)
        assert response.status_code == 401
    client.get(f"/stories?token={READ}")  # a cookie now, which must not write either
    assert client.post("/stories/generate", json={}).status_code == 401
    assert client.post("/stories/generate", json={}, headers=bearer(WRITE)).status_code == 202


def test_a_browser_or_feed_reader_passes_it_once_in_the_url(guarded):
    client = guarded.test_client()
    assert client.get("/feed.xml?token=wrong").status_code == 401
    assert client.get_cookie(TOKEN_COOKIE) is None
    response = client.get(f"/feed.xml?token={READ}")
    assert response.status_code == 200
    cookie = client.get_cookie(TOKEN_COOKIE)
    assert cookie.value == READ and cookie.http_only and cookie.same_site == "Lax"
    # The pages after it, the page's script and its event stream carry the cookie.
    job, _ = jobs.request_job(24, False)
    for path in ("/", "/static/dashboard.js", "/stories", f"/jobs/{job.id}"):
        assert status(client, path) == 200, path
    # Pages opened with the token in their URL do not pass it on to the sites they link to.
    assert response.headers["Referrer-Policy"] == "same-origin"


def test_without_a_read_token_reading_is_open(client):
    assert client.get("/stories").status_code == 200
    assert client.get("/feed.atom").status_code == 200
    assert "Referrer-Policy" not in client.get("/stories").headers


def test_the_access_log_has_a_line_per_request(app, caplog):
    app.wsgi_app = AccessLog(app.wsgi_app)
    client = app.test_client()
    with caplog.at_level("INFO", logger="storyapp.access"):
        # A line is written as the answer is closed: once sent, not when it is made.
        status(client, "/stories?q=secret")
        status(client, "/stories/999")
        with client.post("/stories/generate", data="x", content_type="text/plain"):
            pass
    lines = [(r.method, r.path, r.status) for r in caplog.records if r.name == "storyapp.access"]
    assert lines == [
        ("GET", "/stories", 200),
        ("GET", "/stories/999", 404),
        ("POST", "/stories/generate", 415),
    ]
    assert all(r.duration_ms >= 0 for r in caplog.records if r.name == "storyapp.access")
    assert "secret" not in caplog.text  # the query string, where a token may be, stays out


def test_storyapp_serve_writes_one_json_line_per_request(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "STORYAPP_DATA_DIR": str(tmp_path / "data"),
        "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",
        "STORYAPP_SCHEDULE": "off",
        "STORYAPP_READ_TOKEN": READ,
    }
    for name in ("STORYAPP_DATABASE_URL", "STORYAPP_QUEUE_URL", "STORYAPP_API_TOKEN"):
        env.pop(name, None)
    command = [sys.executable, "-c", "from storyapp.cli import main; main()"]
    server = subprocess.Popen(
        [*command, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5):
                    break
            except urllib.error.HTTPError as answer:  # it answers
                answer.close()
                break
            except OSError:
                assert time.monotonic() < deadline, "storyapp serve did not answer"
                time.sleep(0.1)
        request = urllib.request.Request(f"{base}/stories", headers=bearer(READ))
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/stories?limit=5", timeout=5)
        refused.value.close()
        assert refused.value.code == 401
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    logged = []
    for line in err.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry["logger"] == "storyapp.access":
                logged.append(entry)
    # Each thread writes its line as it ends its answer: in any order.
    seen = sorted((e["method"], e["path"], e["status"]) for e in logged if e["path"] != "/health")
    assert seen == [("GET", "/stories", 200), ("GET", "/stories", 401)]
    assert all(isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0 for e in logged)
    assert ("GET", "/health") in {(e["method"], e["path"]) for e in logged}
