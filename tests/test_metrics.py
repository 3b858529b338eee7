import math
import random
from datetime import timedelta

import pytest
from conftest import ingest_and_generate, wait_for_job
from prometheus_client.parser import text_string_to_metric_families
from workers import wait_until

from storyapp import heartbeat, jobs, metrics
from storyapp.db import transaction
from storyapp.models import Job, LLMCall, Story, Worker, utcnow


def scrape(client) -> dict:
    """/metrics through prometheus_client's own parser: {(name, labels...): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            key = (sample.name, *sorted(sample.labels.items()))
            assert key not in found, key
            found[key] = sample.value
    return found


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(q * len(ordered)) - 1]


def test_percentiles_are_nearest_rank():
    assert metrics.percentiles(list(range(100, 0, -1))) == {"p50": 50, "p95": 95, "p99": 99}
    assert metrics.percentiles([0.25]) == {"p50": 0.25, "p95": 0.25, "p99": 0.25}
    assert metrics.percentiles([1, 2]) == {"p50": 1, "p95": 2, "p99": 2}
    assert metrics.percentiles([]) is None


def add_job(status: str, age: timedelta, duration_s: float | None = None, **counts) -> Job:
    created = utcnow() - age
    with transaction():
        return Job.create(
            status=status,
            time_window_hours=24,
            created_at=created,
            started_at=created if duration_s is not None else None,
            finished_at=created + timedelta(seconds=duration_s) if duration_s else None,
            **counts,
        )


def add_calls(job: Job, host: str, outcome: str, latencies_ms: list[float], age=timedelta(0)):
    with transaction():
        for i, latency in enumerate(latencies_ms):
            LLMCall.create(
                job=job,
                cluster_key=f"{host}-{outcome}-{i}",
                model="llama3.1:8b",
                host=host,
                attempt=1,
                outcome=outcome,
                latency_ms=latency,
                prompt_tokens=100 if outcome == "ok" else None,
                completion_tokens=40 if outcome == "ok" else None,
                created_at=utcnow() - age,
            )


@pytest.fixture
def history(configured):
    """Two days of jobs and calls: only the last 24 hours count in the windowed figures."""
    rng = random.Random(6)
    old = add_job("succeeded", timedelta(hours=30), 500.0, llm=50, fallback=50)
    add_calls(old, "http://gpu-a:11434", "timeout", [120_000.0] * 20, age=timedelta(hours=30))
    first = add_job("succeeded", timedelta(hours=5), 42.0, llm=30, cached=10, single=5)
    last = add_job("failed", timedelta(hours=1), 12.5, llm=8, fallback=2, failed=1, reused=4)
    add_job("running", timedelta(minutes=1), 0.0, llm=1)
    add_job("queued", timedelta(seconds=5))
    ok_a = [rng.uniform(400, 900) for _ in range(37)]
    ok_b = [rng.uniform(1000, 3000) for _ in range(12)]
    add_calls(first, "http://gpu-a:11434", "ok", ok_a)
    add_calls(last, "http://gpu-b:11434", "ok", ok_b)
    add_calls(last, "http://gpu-b:11434", "timeout", [5000.0, 5000.2])
    add_calls(last, "http://gpu-b:11434", "error", [1.5, 2.5, 3.5])
    add_calls(last, "http://gpu-b:11434", "invalid", [700.0])
    return {"a": ok_a, "b": ok_b + [5000.0, 5000.2, 700.0], "durations": [42.0, 12.5]}


def test_metrics_parse_and_agree_with_the_database(client, history):
    m = scrape(client)
    model = ("model", "llama3.1:8b")
    a, b = ("host", "http://gpu-a:11434"), ("host", "http://gpu-b:11434")

    assert m[("storyapp_window_seconds",)] == 86400
    for status, n in {
        "succeeded": 2,
        "failed": 1,
        "running": 1,
        "queued": 1,
        "cancelled": 0,
    }.items():
        assert m[("storyapp_jobs", ("status", status))] == n
    assert m[("storyapp_queue_tasks",)] == 0  # the jobs were written, not queued
    assert m[("storyapp_jobs_ended",)] == 2  # the 30-hour-old one is out of the window
    assert m[("storyapp_last_job_duration_seconds",)] == 12.5
    assert m[("storyapp_job_duration_seconds", ("quantile", "0.5"))] == 12.5
    assert m[("storyapp_job_duration_seconds", ("quantile", "0.99"))] == 42.0

    clusters = {"llm": 39, "cached": 10, "fallback": 2, "reused": 4, "single": 5, "failed": 1}
    for outcome, n in clusters.items():
        assert m[("storyapp_clusters", ("outcome", outcome))] == n
    assert m[("storyapp_cache_hit_ratio",)] == round(10 / (10 + 39 + 2), 4)
    assert m[("storyapp_fallback_ratio",)] == round(2 / (39 + 2), 4)
    assert m[("storyapp_llm_timeout_ratio",)] == round(2 / 55, 4)

    calls_b = {"ok": 12, "timeout": 2, "error": 3, "invalid": 1}
    for outcome, n in calls_b.items():
        assert m[("storyapp_llm_calls", a, model, ("outcome", outcome))] == (outcome == "ok") * 37
        assert m[("storyapp_llm_calls", b, model, ("outcome", outcome))] == n
    assert m[("storyapp_llm_tokens", a, ("kind", "prompt"), model)] == 3700
    assert m[("storyapp_llm_tokens", b, ("kind", "completion"), model)] == 480
    for host, timed in ((a, history["a"]), (b, history["b"])):
        for q in (0.5, 0.95, 0.99):
            value = m[("storyapp_llm_latency_seconds", host, model, ("quantile", str(q)))]
            assert value == round(nearest_rank(timed, q) / 1000, 3)
    assert m[("storyapp_llm_busy_seconds", b, model)] == pytest.approx(
        (sum(history["b"]) + 7.5) / 1000, abs=0.002
    )
    # Each call here is its own story, errors included: a story's LLM time is all its attempts.
    every_call = history["a"] + history["b"] + [1.5, 2.5, 3.5]
    story_p95 = m[("storyapp_story_llm_seconds", ("quantile", "0.95"))]
    assert story_p95 == round(nearest_rank(every_call, 0.95) / 1000, 3)
    assert m[("process_resident_memory_bytes",)] > 0


def test_stats_are_the_same_figures_as_json(client, history):
    stats = client.get("/stats").get_json()
    m = scrape(client)
    assert stats["jobs"]["succeeded"] == m[("storyapp_jobs", ("status", "succeeded"))] == 2
    assert stats["generation"]["duration_s"]["p50"] == 12.5
    assert stats["generation"]["stories_timed"] == 55
    assert stats["clusters"]["cache_hit_rate"] == m[("storyapp_cache_hit_ratio",)]
    assert stats["llm"]["calls"] == {"ok": 49, "timeout": 2, "error": 3, "invalid": 1}
    assert stats["llm"]["tokens"] == {"prompt": 4900, "completion": 1960}
    (gpu_b,) = [s for s in stats["llm"]["servers"] if s["host"] == "http://gpu-b:11434"]
    assert gpu_b["calls_timed"] == 15  # errors are counted, not timed
    assert (
        gpu_b["latency_s"]["p99"]
        == m[
            (
                "storyapp_llm_latency_seconds",
                ("host", "http://gpu-b:11434"),
                ("model", "llama3.1:8b"),
                ("quantile", "0.99"),
            )
        ]
    )
    assert stats["web_process"]["resident_memory_bytes"] > 0


def test_each_live_worker_reports_its_own_cpu_and_memory(client):
    worker = heartbeat.register()
    heartbeat.beat(worker)
    long_ago = utcnow() - timedelta(seconds=heartbeat.DEAD_AFTER_S + 1)
    with transaction():
        Worker.create(
            id="gone", host="elsewhere", pid=1, started_at=long_ago, heartbeat_at=long_ago
        )
    stats = client.get("/stats").get_json()["workers"]
    assert stats["alive"] == 1
    (alive,) = stats["processes"]
    assert alive["id"] == worker and alive["cpu_s"] > 0 and alive["resident_memory_bytes"] > 0
    m = scrape(client)
    assert m[("storyapp_workers_alive",)] == 1
    labels = (("host", heartbeat.HOST), ("worker", worker))
    assert m[("storyapp_worker_resident_memory_bytes", *labels)] == alive["resident_memory_bytes"]
    assert m[("storyapp_worker_cpu_seconds", *labels)] == alive["cpu_s"]
    assert client.get("/health").get_json()["workers"] == {"alive": 1}


def test_a_worker_process_sends_its_figures_with_its_heartbeat(tmp_path, ollama, workers, client):
    workers(ollama.url)
    wait_until(
        lambda: Worker.select().where(Worker.resident_memory_bytes > 0).count() == 1,
        what="a heartbeat with figures",
    )
    assert client.get("/stats").get_json()["workers"]["alive"] == 1


def test_an_empty_database_has_zeros_and_no_made_up_rates(client):
    m = scrape(client)
    assert m[("storyapp_jobs", ("status", "succeeded"))] == 0
    assert ("storyapp_cache_hit_ratio",) not in m
    assert not any(key[0] == "storyapp_llm_latency_seconds" for key in m)
    stats = client.get("/stats").get_json()
    assert stats["llm"]["timeout_rate"] is None and stats["generation"]["duration_s"] is None


def test_metrics_count_a_real_job(client, consumer, ollama):
    ollama.latency = 0.05
    job = ingest_and_generate(client)
    m = scrape(client)
    calls = list(LLMCall.select())
    model, host = ("model", "llama3.1:8b"), ("host", ollama.url)
    assert m[("storyapp_llm_calls", host, model, ("outcome", "ok"))] == len(calls)
    assert len(calls) == ollama.chat_count == job["counts"]["llm"] > 20
    for outcome in (*jobs.OUTCOMES, "failed"):  # `upgraded` is no outcome of its own
        assert m[("storyapp_clusters", ("outcome", outcome))] == job["counts"][outcome]
    assert m[("storyapp_llm_tokens", host, ("kind", "prompt"), model)] == sum(
        c.prompt_tokens for c in calls
    )
    p50 = m[("storyapp_llm_latency_seconds", host, model, ("quantile", "0.5"))]
    assert p50 >= 0.05
    assert m[("storyapp_last_job_duration_seconds",)] == job["duration_s"]
    assert m[("storyapp_clusters_pending",)] == 0
    rerun = wait_for_job(client, client.post("/stories/generate", json={}).get_json()["job_id"])
    assert rerun["counts"]["reused"] == job["total"]
    assert scrape(client)[("storyapp_jobs", ("status", "succeeded"))] == 2


def test_the_grounding_rate_counts_the_stories_written_in_the_window(client, configured):
    def story_with(checked: int, dropped: int, age: timedelta) -> None:
        content = {
            "title": "T",
            "summary": [{"text": "A sentence here.", "sources": [1]}],
            "key_points": [{"text": "A point here.", "sources": [1]}],
            "grounding": {"checked": checked, "dropped": dropped},
        }
        Story.create(
            cluster_key=f"k{checked}{dropped}",
            content=content,
            generator="llm",
            article_count=2,
            updated_at=utcnow() - age,
        )

    story_with(10, 1, timedelta(hours=1))
    story_with(6, 3, timedelta(hours=2))
    story_with(50, 50, timedelta(hours=30))  # out of the window
    stats = client.get("/stats").get_json()["grounding"]
    assert stats == {"checked": 16, "dropped": 4, "dropped_rate": 0.25}
    assert scrape(client)[("storyapp_grounding_dropped_ratio",)] == 0.25
