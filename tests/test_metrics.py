import math
import random
from datetime import timedelta

import pytest
from conftest import ingest_and_generate, wait_for_job
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString
from workers import wait_until

from storyapp import counters, heartbeat, jobs, metrics
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


def test_stats_windowed_figures_agree_with_the_database(client, history):
    stats = client.get("/stats").get_json()
    assert stats["window_hours"] == 24
    assert stats["jobs"] == {"succeeded": 2, "failed": 1, "running": 1, "queued": 1, "cancelled": 0}
    assert stats["queue"]["tasks"] == 0  # the jobs were written, not queued
    g = stats["generation"]
    assert g["jobs_ended"] == 2  # the 30-hour-old one is out of the window
    assert g["last_duration_s"] == 12.5
    assert (g["duration_s"]["p50"], g["duration_s"]["p99"]) == (12.5, 42.0)

    c = stats["clusters"]
    assert c["by_outcome"] == {
        "llm": 39,
        "cached": 10,
        "fallback": 2,
        "reused": 4,
        "single": 5,
        "failed": 1,
    }
    assert c["cache_hit_rate"] == round(10 / (10 + 39 + 2), 4)
    assert c["fallback_rate"] == round(2 / (39 + 2), 4)

    llm = stats["llm"]
    assert llm["timeout_rate"] == round(2 / 55, 4)
    assert llm["calls"] == {"ok": 49, "timeout": 2, "error": 3, "invalid": 1}
    assert llm["tokens"] == {"prompt": 4900, "completion": 1960}
    servers = {s["host"]: s for s in llm["servers"]}
    a, b = servers["http://gpu-a:11434"], servers["http://gpu-b:11434"]
    assert a["calls"] == {"ok": 37, "timeout": 0, "error": 0, "invalid": 0}
    assert b["calls"] == {"ok": 12, "timeout": 2, "error": 3, "invalid": 1}
    assert a["tokens"] == {"prompt": 3700, "completion": 1480}
    assert b["calls_timed"] == 15  # errors are counted, not timed
    for server, timed in ((a, history["a"]), (b, history["b"])):
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            assert server["latency_s"][name] == round(nearest_rank(timed, q) / 1000, 3)
    assert b["busy_s"] == pytest.approx((sum(history["b"]) + 7.5) / 1000, abs=0.002)
    # Each call here is its own story, errors included: a story's LLM time is all its attempts.
    every_call = history["a"] + history["b"] + [1.5, 2.5, 3.5]
    assert g["stories_timed"] == 55
    assert g["per_story_s"]["p95"] == round(nearest_rank(every_call, 0.95) / 1000, 3)
    assert stats["web_process"]["resident_memory_bytes"] > 0


def test_metrics_give_the_state_as_gauges_and_leave_windows_to_prometheus(client, history):
    m = scrape(client)
    for status, n in {"succeeded": 2, "failed": 1, "running": 1, "queued": 1}.items():
        assert m[("storyapp_jobs", ("status", status))] == n
    assert m[("storyapp_queue_tasks",)] == 0
    assert m[("storyapp_last_job_duration_seconds",)] == 12.5
    assert m[("process_resident_memory_bytes",)] > 0
    # The rows written by hand above were counted by nothing: counters count the work as it
    # is done, not the rows that happen to be in the tables.
    assert m[("storyapp_clusters_total", ("outcome", "llm"))] == 0
    windowed = ("storyapp_window_seconds", "storyapp_llm_latency_seconds", "storyapp_clusters")
    assert not any(key[0] in windowed for key in m)


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
    # In Prometheus by host, summed over its live workers: no series per process, so a
    # restart starts none.
    host = ("host", heartbeat.HOST)
    assert m[("storyapp_worker_resident_memory_bytes", host)] == alive["resident_memory_bytes"]
    assert m[("storyapp_worker_cpu_seconds", host)] == alive["cpu_s"]
    assert not any(label == "worker" for key in m for label, *_ in key[1:])
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
    # Counters of a known label set start at 0, so rate() sees their first increment.
    for outcome in (*jobs.OUTCOMES, "failed"):
        assert m[("storyapp_clusters_total", ("outcome", outcome))] == 0
    for status in ("succeeded", "failed", "cancelled"):
        assert m[("storyapp_jobs_ended_total", ("status", status))] == 0
    assert not any(key[0].startswith("storyapp_llm_") for key in m)
    stats = client.get("/stats").get_json()
    assert stats["llm"]["timeout_rate"] is None and stats["generation"]["duration_s"] is None


def families(client) -> dict:
    text = client.get("/metrics").get_data(as_text=True)
    return {f.name: f for f in text_string_to_metric_families(text)}


def check_histogram(m: dict, name: str, labels: tuple, bounds: tuple) -> int:
    """The buckets are cumulative and end in +Inf, which equals _count; returns the count."""
    counts = [m[(f"{name}_bucket", *sorted((*labels, ("le", le))))] for le in bounds]
    assert counts == sorted(counts)
    assert counts[-1] == m[(f"{name}_count", *labels)]
    return int(counts[-1])


@pytest.mark.backends
def test_counters_count_real_jobs_and_survive_a_worker_restart(tmp_path, ollama, workers, client):
    ollama.latency = 0.05
    first_worker = workers(ollama.url)
    job = ingest_and_generate(client)
    first = scrape(client)
    assert families(client)["storyapp_llm_calls"].type == "counter"
    assert families(client)["storyapp_llm_call_duration_seconds"].type == "histogram"

    calls = list(LLMCall.select())
    server = (("host", ollama.url), ("model", "llama3.1:8b"))
    assert len(calls) == ollama.chat_count == job["counts"]["llm"] > 20
    assert first[("storyapp_llm_calls_total", *server, ("outcome", "ok"))] == len(calls)
    # The outcomes not met yet are there at 0 for the same server, ready for rate().
    assert first[("storyapp_llm_calls_total", *server, ("outcome", "timeout"))] == 0
    for outcome in (*jobs.OUTCOMES, "failed"):  # `upgraded` is no outcome of its own
        assert first[("storyapp_clusters_total", ("outcome", outcome))] == job["counts"][outcome]
    tokens = first[("storyapp_llm_tokens_total", server[0], ("kind", "prompt"), server[1])]
    assert tokens == sum(c.prompt_tokens for c in calls)
    bounds = [*(floatToGoString(b) for b in counters.LLM_SECONDS), "+Inf"]
    assert check_histogram(first, "storyapp_llm_call_duration_seconds", server, bounds) == len(
        calls
    )
    assert first[("storyapp_llm_call_duration_seconds_sum", *server)] == pytest.approx(
        sum(c.latency_ms for c in calls) / 1000,
        abs=0.001,  # the log rounds each to a µs
    )
    assert first[("storyapp_jobs_ended_total", ("status", "succeeded"))] == 1
    job_bounds = [*(floatToGoString(b) for b in counters.JOB_SECONDS), "+Inf"]
    assert check_histogram(first, "storyapp_job_duration_seconds", (), job_bounds) == 1
    checked = first[("storyapp_grounding_statements_total", ("result", "checked"))]
    assert checked > 0

    # A new worker process: counts go on from where the last one left them.
    assert first_worker.stop() == 0
    workers(ollama.url)
    forced = client.post("/stories/generate", json={"time_window_hours": 24, "force": True})
    again = wait_for_job(client, forced.get_json()["job_id"])
    assert again["status"] == "succeeded" and again["counts"]["llm"] > 20  # forced: no cache
    second = scrape(client)
    ok = ("storyapp_llm_calls_total", *server, ("outcome", "ok"))
    all_calls = LLMCall.select().count()
    assert second[ok] == all_calls == len(calls) + again["counts"]["llm"]
    duration = "storyapp_llm_call_duration_seconds"
    assert check_histogram(second, duration, server, bounds) == all_calls
    for outcome in (*jobs.OUTCOMES, "failed"):
        key = ("storyapp_clusters_total", ("outcome", outcome))
        assert second[key] == first[key] + again["counts"][outcome]
    assert second[("storyapp_jobs_ended_total", ("status", "succeeded"))] == 2
    assert check_histogram(second, "storyapp_job_duration_seconds", (), job_bounds) == 2
    assert second[("storyapp_grounding_statements_total", ("result", "checked"))] > checked

    # Retention deletes the call rows, not what they counted.
    with transaction():
        LLMCall.delete().execute()
    assert scrape(client)[ok] == all_calls


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
