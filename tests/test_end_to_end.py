"""The whole path: the API, the queue, a real consumer with thread workers, and an HTTP server
that speaks Ollama's API (or none at all); on each backend (SQLite, or PostgreSQL and Redis)."""

import subprocess
import sys
import time

import pytest
import requests
from conftest import (
    article,
    free_port,
    ingest_and_generate,
    init,
    make_settings,
    running_consumer,
    sample_records,
    shifted_sample,
    wait_for_job,
)
from prometheus_client.parser import text_string_to_metric_families
from workers import storyapp_env

from storyapp.api import create_app
from storyapp.fake_ollama import FakeOllama, schema_reply
from storyapp.models import JobCluster, LLMCall

pytestmark = pytest.mark.backends

SAMPLE_TITLES = [r["title"] for r in sample_records()]


def titled_after_its_first_article(body: dict) -> dict:
    """A story titled after the sample article that comes first in its prompt, so a story in
    the wrong cluster's place shows."""
    prompt = body["messages"][-1]["content"]
    first = min((t for t in SAMPLE_TITLES if t in prompt), key=prompt.index)
    return {**schema_reply(body), "title": first}


def test_sample_becomes_stories_through_the_queue(client, consumer, ollama):
    ollama.reply = titled_after_its_first_article
    job = ingest_and_generate(client)
    counts = job["counts"]
    assert job["status"] == "succeeded" and job["error"] is None
    assert job["progress"] == 1.0 and job["done"] == job["total"]
    assert counts["llm"] + counts["single"] == job["total"]
    assert counts["fallback"] == counts["cached"] == counts["reused"] == 0
    assert 30 <= job["total"] <= 50  # about 40 events in the sample

    stories = client.get("/stories?limit=500").get_json()
    assert stories["total"] == job["total"]
    multi = [s for s in stories["stories"] if s["article_count"] > 1]
    assert len(multi) == counts["llm"] == ollama.chat_count
    for story in multi:
        assert story["generator"] == "llm" and story["model"] == "llama3.1:8b"
        assert len(story["articles"]) == story["article_count"]
        # Each story was written from its own cluster's articles, and cites only them: every
        # sentence and key point, each checked against what it cites.
        assert story["title"] in {a["title"] for a in story["articles"]}
        own = {a["id"] for a in story["articles"]}
        citations = story["citations"]["summary"] + story["citations"]["key_points"]
        assert citations and all(ids and set(ids) <= own for ids in citations)
        assert len(citations) == story["grounding"]["checked"]
        assert story["grounding"]["dropped"] == 0
    calls = list(LLMCall.select())
    assert len(calls) == counts["llm"]
    assert all(c.outcome == "ok" and c.job_id == job["id"] and c.latency_ms > 0 for c in calls)

    again = client.post("/stories/generate", json={}).get_json()
    rerun = wait_for_job(client, again["job_id"])
    assert rerun["counts"]["reused"] == job["total"]
    assert ollama.chat_count == counts["llm"]  # nothing changed: no new LLM call


def test_with_the_llm_down_every_story_falls_back(tmp_path, monkeypatch, backend):
    monkeypatch.setattr("storyapp.synthesis.BACKOFF_S", (0.01, 0.01))

    url = f"http://127.0.0.1:{free_port()}"
    app = create_app(init(make_settings(tmp_path, url, **backend.env)))
    with running_consumer():
        job = ingest_and_generate(app.test_client())
    counts = job["counts"]
    assert job["status"] == "succeeded"
    assert counts["llm"] == 0 and counts["fallback"] > 20
    assert counts["fallback"] + counts["single"] == job["total"]
    # Each says which host and why: refused, or skipped after refusing (breaker.py) ...
    fallbacks = JobCluster.select().where(JobCluster.outcome == "fallback")
    why = ("cannot connect", "refused connections in a row, skipped for 60 s")
    assert all(url in jc.error and any(w in jc.error for w in why) for jc in fallbacks)
    # ... and the breaker opened at the third refusal: what was in flight then (at most the
    # other three of the bound) went, not three requests for each cluster.
    assert 3 <= LLMCall.select().count() <= 6
    assert LLMCall.select().where(LLMCall.outcome == "ok").count() == 0


def test_fallback_stories_are_upgraded_when_the_llm_comes_back(tmp_path, monkeypatch, backend):
    monkeypatch.setattr("storyapp.synthesis.BACKOFF_S", (0.01, 0.01))
    port = free_port()
    app = create_app(init(make_settings(tmp_path, f"http://127.0.0.1:{port}", **backend.env)))
    client = app.test_client()

    def rerun() -> dict:
        return wait_for_job(client, client.post("/stories/generate", json={}).get_json()["job_id"])

    with running_consumer():
        outage = ingest_and_generate(client)
        fallback, calls = outage["counts"]["fallback"], LLMCall.select().count()
        assert fallback > 20
        still_down = rerun()  # the planner's check finds no server: no request is sent
        assert still_down["counts"]["reused"] == outage["total"]
        assert LLMCall.select().count() == calls
        with FakeOllama(port=port) as ollama:
            back = rerun()
    counts = back["counts"]
    assert (counts["upgraded"], counts["llm"], counts["fallback"]) == (fallback, fallback, 0)
    assert ollama.chat_count == fallback
    generators = {s["generator"] for s in client.get("/stories?limit=500").get_json()["stories"]}
    assert generators == {"llm", "single"}


@pytest.fixture
def served(tmp_path, ollama, backend):
    """`storyapp serve` and `storyapp worker` as the README starts them, in subprocesses."""
    port = free_port()
    env = storyapp_env(tmp_path, ollama.url, **backend.env)
    storyapp = [sys.executable, "-m", "storyapp.cli"]
    procs = [
        subprocess.Popen(
            [*storyapp, "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen([*storyapp, "worker"], env=env, cwd=tmp_path, stderr=subprocess.DEVNULL),
    ]
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(f"{base}/health", timeout=1).raise_for_status()
            break
        except requests.RequestException:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise
            time.sleep(0.1)
    yield base
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=20)


def test_serve_and_worker_processes_turn_the_sample_into_stories(served, ollama):
    with requests.Session() as http:
        created = http.post(f"{served}/articles", json=shifted_sample(), timeout=30).json()
        assert created["created"] >= 150
        answer = http.post(f"{served}/stories/generate", json={}, timeout=5)
        assert answer.status_code == 202
        job_url = f"{served}{answer.json()['status_url']}"
        deadline = time.monotonic() + 60
        while (job := http.get(job_url, timeout=5).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert job["status"] == "succeeded"
        stories = http.get(f"{served}/stories?limit=500", timeout=5).json()
        figures = http.get(f"{served}/metrics", timeout=5).text
    assert stories["total"] == job["total"]
    assert ollama.chat_count == job["counts"]["llm"] > 20
    # The worker made the calls; the web process counts them from the database.
    calls = {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(figures)
        if family.name == "storyapp_llm_calls"
        for s in family.samples
    }
    assert calls == {"ok": ollama.chat_count, "timeout": 0, "error": 0, "invalid": 0}


def test_llm_requests_in_flight_stay_within_the_per_host_bound(tmp_path, backend):
    # Eight worker threads, a server with room for 32, and a bound of 3: the bound holds.
    with FakeOllama(latency=0.05, slots=32) as server:
        settings = make_settings(
            tmp_path,
            server.url,
            STORYAPP_LLM_CONCURRENCY="3",
            STORYAPP_WORKERS="8",
            **backend.env,
        )
        app = create_app(init(settings))
        with running_consumer(workers=8):
            job = ingest_and_generate(app.test_client())
        assert job["status"] == "succeeded" and job["counts"]["llm"] > 20
        assert server.peak_in_flight == 3


def test_a_busy_server_is_retried_and_the_story_still_comes_from_the_llm(client, consumer, ollama):
    ollama.script = ["busy", "busy"]
    client.post(
        "/articles",
        json=[
            article(1, "Quake hits Eldham coast", "Eldham quake."),
            article(2, "Eldham coast hit by quake", "Quake in Eldham."),
        ],
    )
    job = wait_for_job(client, client.post("/stories/generate").get_json()["job_id"])
    assert job["counts"]["llm"] == 1 and job["counts"]["fallback"] == 0
    calls = [(c.attempt, c.outcome, c.status_code) for c in LLMCall.select().order_by(LLMCall.id)]
    assert calls == [(1, "error", 503), (2, "error", 503), (3, "ok", None)]
