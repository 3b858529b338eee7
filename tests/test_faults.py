"""Faults caused for real: an LLM server that fails in each of the ways Ollama does, through the
API and a real consumer. Every cluster still ends with a story and the job still ends."""

import json
import re

import pytest
from conftest import (
    article,
    free_port,
    init,
    make_settings,
    running_consumer,
    shifted_sample,
    wait_for_job,
)
from scripted import NOT_JSON, OFF_SCHEMA, STEERED, TOO_LONG
from workers import report_from

from storyapp.api import create_app
from storyapp.fake_ollama import FakeOllama, schema_reply
from storyapp.models import Job, JobCluster, LLMCall, Story

NEWS = [
    article(1, "Quake of magnitude 6.1 hits Eldham coast", "Homes damaged in Eldham quake."),
    article(2, "Eldham coast quake damages homes", "The 6.1 quake hit Eldham overnight."),
    article(3, "Rescuers search Eldham after 6.1 quake", "Eldham homes damaged by the quake."),
    article(4, "Central bank raises interest rates half a point", "Inflation stays high."),
    article(5, "Interest rates up half a point at the central bank", "Inflation fight goes on."),
    article(6, "Local bakery wins national sourdough award", "A prize for Ferris Bakes."),
]


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr("storyapp.synthesis.BACKOFF_S", (0.01, 0.01))


def generate_with(tmp_path, url: str, **env) -> dict:
    app = create_app(init(make_settings(tmp_path, url, **env)))
    client = app.test_client()
    assert client.post("/articles", json=NEWS).status_code == 201
    with running_consumer():
        job = wait_for_job(client, client.post("/stories/generate").get_json()["job_id"])
    assert job["status"] == "succeeded"
    assert (job["total"], job["done"], job["counts"]["single"]) == (3, 3, 1)
    # Every cluster has its story, whatever the LLM did.
    assert Story.select().count() == 3
    assert JobCluster.select().where(JobCluster.story.is_null()).count() == 0
    return job


def call_outcomes() -> list[tuple]:
    return sorted(
        (c.outcome, c.status_code)
        for c in LLMCall.select().where(LLMCall.cluster_key.is_null(False))
    )


@pytest.mark.parametrize(
    "mode, content, calls_per_cluster, outcome, status",
    [
        ("error", None, 3, "error", 500),  # runner crashed: retried, then the fallback
        ("busy", None, 3, "error", 503),  # server busy: retried with backoff, then the fallback
        ("ok", NOT_JSON, 2, "invalid", None),  # not JSON: asked once more
        ("ok", OFF_SCHEMA, 2, "invalid", None),  # JSON without the schema's fields
        ("ok", TOO_LONG, 2, "invalid", None),  # far too long for the schema's limits
    ],
)
def test_llm_failures_end_in_fallback_stories(
    tmp_path, mode, content, calls_per_cluster, outcome, status
):
    with FakeOllama() as server:
        server.mode = mode
        if content is not None:
            server.reply = lambda body: content
        job = generate_with(tmp_path, server.url)
        assert server.chat_count == 2 * calls_per_cluster
    assert job["counts"]["fallback"] == 2 and job["counts"]["llm"] == 0
    assert call_outcomes() == [(outcome, status)] * (2 * calls_per_cluster)
    if outcome == "invalid":  # the server answered: what it counted is kept, valid or not
        for call in LLMCall.select():
            assert call.prompt_tokens > 0 and call.completion_tokens > 0
    assert "2 clusters used the extractive fallback" in job["error"]


def test_a_missing_model_is_said_plainly_and_not_retried(tmp_path):
    with FakeOllama() as server:
        job = generate_with(tmp_path, server.url, STORYAPP_MODEL="llama9:70b")
        assert server.chat_count == 2  # one call per cluster, no retry
        missing = make_settings(tmp_path, server.url, STORYAPP_MODEL="llama9:70b")
        report_from(missing)  # a worker checks the server
        report = create_app(missing).test_client().get("/health").get_json()
    assert call_outcomes() == [("error", 404)] * 2
    assert "not found" in job["error"] and "ollama pull llama9:70b" in job["error"]
    assert report["status"] == "degraded"
    assert report["llm"]["reachable"] is True and report["llm"]["model_available"] is False
    assert report["llm"]["errors"] == [
        f"{server.url}: has no model llama9:70b (ollama pull llama9:70b)"
    ]


# Two clusters, each tried again after a failure: the third failure in a row opens the host's
# breaker (breaker.py), and what was sent before that is all that goes. Not the 6 calls that
# three attempts for each would make.
AT_MOST_BEFORE_THE_BREAKER_OPENS = (3, 4)


def test_a_refused_connection_is_retried_then_falls_back(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    job = generate_with(tmp_path, url)
    assert job["counts"]["fallback"] == 2
    calls = call_outcomes()
    assert len(calls) in AT_MOST_BEFORE_THE_BREAKER_OPENS
    assert set(calls) == {("error", None)}
    # Which host and why (the count is the breaker's when the cluster was turned away).
    assert re.search(f"{url}: [34] refused connections in a row, skipped for 60 s", job["error"])


def test_a_server_that_never_answers_is_cut_off_by_the_timeout(tmp_path):
    with FakeOllama() as server:
        server.mode = "hang"
        job = generate_with(tmp_path, server.url, STORYAPP_LLM_TIMEOUT="0.3")
    assert job["counts"]["fallback"] == 2
    calls = call_outcomes()
    assert len(calls) in AT_MOST_BEFORE_THE_BREAKER_OPENS
    assert set(calls) == {("timeout", None)}
    assert re.search(f"{server.url}: [34] timeouts in a row, skipped for 60 s", job["error"])


def test_hung_servers_cost_one_timeout_each_not_three_per_cluster(tmp_path):
    # Two servers that take every request and never answer, eight threads, four requests in
    # flight per host: the first ones time out together and open both breakers, and every
    # other cluster falls back at once. Before, each of the sample's clusters waited out three
    # timeouts.
    timeout = 2.0
    with FakeOllama() as one, FakeOllama() as two:
        one.mode = two.mode = "hang"
        settings = make_settings(
            tmp_path,
            f"{one.url},{two.url}",
            STORYAPP_LLM_TIMEOUT=str(timeout),
            STORYAPP_LLM_CONCURRENCY="4",
            STORYAPP_WORKERS="8",
        )
        client = create_app(init(settings)).test_client()
        assert client.post("/articles", json=shifted_sample()).status_code == 201
        with running_consumer(workers=8):
            job = wait_for_job(client, client.post("/stories/generate").get_json()["job_id"])
        sent = (one.chat_count, two.chat_count)
    assert job["status"] == "succeeded" and job["counts"]["fallback"] > 20
    assert job["counts"]["llm"] == 0
    # At most what was in flight per host when the first timed out (the bound halves on a
    # timeout, so nothing more went before the third opened the breaker).
    assert all(3 <= n <= 4 for n in sent), sent
    assert set(call_outcomes()) == {("timeout", None)} and len(call_outcomes()) == sum(sent)
    assert job["duration_s"] < 4 * timeout
    page = client.get("/").get_data(as_text=True)
    for server in (one, two):  # which host, and why: in the job's error, and on the page
        why = f"{server.url}: [34] timeouts in a row, skipped for 60 s"
        assert re.search(why, job["error"]) and re.search(why, page)


def test_a_steered_reply_changes_only_the_story_text(tmp_path):
    # Sentences borne out by the articles (the default reply's), the rest steered.
    def steered(body):
        return {
            **schema_reply(body),
            **{k: v for k, v in STEERED.items() if k not in ("summary", "key_points")},
        }

    with FakeOllama(reply=steered) as server:
        job = generate_with(tmp_path, server.url)
    assert job["counts"]["llm"] == 2 and job["error"] is None
    story = Story.get(Story.generator == "llm")
    # Extra fields of the reply went nowhere; markup stays text for the page to escape.
    assert story.text.title.startswith("<script>") and story.article_count in (2, 3)
    assert Job.get_by_id(job["id"]).force is False
    shown = story.to_dict()
    assert "status" not in shown and "force" not in shown
    assert shown["article_count"] == len(shown["articles"])


def test_a_steered_reply_whose_sentences_no_article_says_is_not_stored(tmp_path):
    with FakeOllama(reply=lambda body: STEERED) as server:
        job = generate_with(tmp_path, server.url)
    # No story (a key point "<b>bold</b>"), and "Status: failed. Delete all stories." is in no
    # article: the replies are refused, the fallback writes the stories from the articles.
    assert job["counts"]["llm"] == 0 and job["counts"]["fallback"] == 2
    assert "invalid reply" in job["error"]
    for story in Story.select():
        assert "Delete all stories" not in json.dumps(story.to_dict())
