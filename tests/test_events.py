import json
import time
from itertools import pairwise

import requests
from conftest import serving, shifted_sample
from test_api import assert_error

from storyapp import events, jobs
from storyapp.api import create_app


def parse(text: str) -> list[tuple[str, object]]:
    """SSE blocks as (event, data); a comment is ("comment", text), a bare field is skipped."""
    found = []
    for block in text.split("\n\n"):
        if block.startswith(":"):
            found.append(("comment", block[1:].strip()))
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


def read_stream(client, job_id: str) -> tuple[object, list]:
    response = client.get(f"/jobs/{job_id}/events", buffered=False)
    try:
        text = b"".join(response.response).decode()
    finally:
        response.close()
    return response, parse(text)


def test_the_stream_follows_a_real_job_to_done(client, consumer, ollama, monkeypatch):
    monkeypatch.setattr(events, "POLL_S", 0.05)
    ollama.latency = 0.1
    assert client.post("/articles", json=shifted_sample()).status_code == 201
    job_id = client.post("/stories/generate", json={}).get_json()["job_id"]
    started = time.monotonic()
    response, got = read_stream(client, job_id)
    assert time.monotonic() - started < 30
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"

    names = [name for name, _ in got]
    assert names[-1] == "done" and names.count("done") == 1
    progress = [data for name, data in got if name == "progress"]
    assert len(progress) >= 3, names
    done_counts = [p["done"] for p in progress]
    assert done_counts == sorted(done_counts)  # never backwards
    assert any(0 < p["done"] < p["total"] for p in progress if p["total"])  # seen mid-way
    # One event a change: the clock fields move on every read and are no change by themselves.
    news = [{k: v for k, v in p.items() if k not in ("duration_s", "eta_s")} for p in progress]
    assert all(a != b for a, b in pairwise(news))
    final = got[-1][1]
    assert final == client.get(f"/jobs/{job_id}").get_json()
    assert final["status"] == "succeeded" and final["done"] == final["total"] > 30
    assert client.application.extensions["storyapp.streams"].open == 0


def test_an_ended_job_gets_done_at_once(client):
    job, _ = jobs.request_job(24, False)
    jobs.cancel_job(job.id)
    response, got = read_stream(client, job.id)
    assert [name for name, _ in got] == ["done"]
    assert got[0][1]["status"] == "cancelled"


def test_an_unknown_job_is_a_json_404(client):
    assert_error(client.get("/jobs/nope/events"), 404, "not_found")


def test_a_quiet_stream_sends_heartbeats_and_ends_in_time(client, monkeypatch):
    monkeypatch.setattr(events, "POLL_S", 0.01)
    monkeypatch.setattr(events, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(events, "MAX_STREAM_S", 0.4)
    job, _ = jobs.request_job(24, False)  # queued, no consumer: nothing changes
    started = time.monotonic()
    _, got = read_stream(client, job.id)
    assert 0.4 <= time.monotonic() - started < 2
    assert got[0][0] == "progress" and got[0][1]["status"] == "queued"
    assert {name for name, _ in got[1:]} == {"comment"}
    assert 4 <= len(got) - 1 <= 9  # a heartbeat each 0.05 s of silence


def test_streams_are_limited_per_process(configured, monkeypatch):
    monkeypatch.setattr(events, "MAX_STREAMS", 1)
    client = create_app(configured).test_client()
    job, _ = jobs.request_job(24, False)
    first = client.get(f"/jobs/{job.id}/events", buffered=False)
    assert first.status_code == 200
    refused = client.get(f"/jobs/{job.id}/events")
    assert_error(refused, 429, "too_many_streams")
    assert refused.headers["Retry-After"] == "5"
    assert client.get(f"/jobs/{job.id}").status_code == 200  # the API still answers
    first.close()  # never read: the slot comes back all the same
    again = client.get(f"/jobs/{job.id}/events", buffered=False)
    assert again.status_code == 200
    again.close()


def test_a_client_that_leaves_ends_its_stream(app, monkeypatch):
    # Heartbeats far away: only waitress noticing the closed connection can end the stream.
    monkeypatch.setattr(events, "HEARTBEAT_S", 600)
    streams = app.extensions["storyapp.streams"]
    job, _ = jobs.request_job(24, False)
    with serving(app) as base:
        response = requests.get(f"{base}/jobs/{job.id}/events", stream=True, timeout=5)
        assert response.status_code == 200
        lines = response.iter_lines(decode_unicode=True)
        while not next(lines).startswith("data:"):  # all the server has to say until a change
            pass
        assert streams.open == 1
        response.close()
        deadline = time.monotonic() + 3
        while streams.open and time.monotonic() < deadline:
            time.sleep(0.05)
        assert streams.open == 0
