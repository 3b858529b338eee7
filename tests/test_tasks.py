import sys
import time
from datetime import datetime

import pytest
from conftest import article, make_settings, wait_for_job

from storyapp import ingest, jobs, tasks
from storyapp.config import ConfigError
from storyapp.models import Job, JobCluster


def test_schedule_follows_the_crontab(configured):
    due = tasks.parse_schedule("*/15 6-8 * * *")
    assert due(datetime(2026, 11, 28, 7, 30))
    assert not due(datetime(2026, 11, 28, 7, 31))
    assert not due(datetime(2026, 11, 28, 9, 0))
    assert tasks.parse_schedule("off") is None


@pytest.mark.parametrize("text", ["* * *", "61 * * * *", "every hour"])
def test_a_bad_schedule_is_a_config_error(text):
    with pytest.raises(ConfigError, match="STORYAPP_SCHEDULE"):
        tasks.parse_schedule(text)


def due_tasks(moment: datetime) -> list[str]:
    # What the consumer's scheduler asks Huey each minute.
    return [task.name for task in tasks.huey.read_periodic(moment)]


def test_the_periodic_task_runs_only_when_scheduled(tmp_path, ollama):
    tasks.configure(make_settings(tmp_path, ollama.url, STORYAPP_SCHEDULE="0 * * * *"))
    assert due_tasks(datetime(2026, 11, 28, 10, 0)) == ["scheduled_generation"]
    assert due_tasks(datetime(2026, 11, 28, 10, 1)) == []
    tasks.configure(make_settings(tmp_path, ollama.url, STORYAPP_SCHEDULE="off"))
    assert due_tasks(datetime(2026, 11, 28, 10, 0)) == []


def test_the_periodic_task_queues_one_job(configured):
    tasks.scheduled_generation.call_local()
    tasks.scheduled_generation.call_local()  # a slot run twice does not make two jobs
    assert Job.select().count() == 1
    job = Job.get()
    assert (job.status, job.time_window_hours, job.force) == ("queued", 24.0, False)
    assert tasks.huey.pending_count() == 1  # its planning task waits for a consumer


def test_an_unconfigured_queue_refuses_to_take_work():
    storage = tasks.UnconfiguredStorage("storyapp")
    with pytest.raises(RuntimeError, match="not configured"):
        storage.enqueue(b"task")


def test_queue_urls(tmp_path):
    sqlite = tasks.queue_storage(f"sqlite:///{tmp_path}/q/queue.db", "stories")
    assert (sqlite.filename, sqlite.name) == (str(tmp_path / "q" / "queue.db"), "stories")
    sqlite.close()
    redis = tasks.queue_storage("redis://127.0.0.1:6379/3", "stories")
    assert redis.queue_key == "huey.redis.stories" and redis.blocking
    assert redis.pool.connection_kwargs["db"] == 3
    with pytest.raises(ConfigError, match="STORYAPP_QUEUE_URL"):
        tasks.queue_storage("amqp://localhost")


def test_scale_urls_without_their_packages_say_what_to_install(monkeypatch):
    from storyapp.db import open_database

    monkeypatch.setitem(sys.modules, "redis", None)  # import redis now fails
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError, match=r"pip install 'storyapp\[scale\]'"):
        tasks.queue_storage("redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError, match=r"pip install 'storyapp\[scale\]'"):
        open_database("postgresql://127.0.0.1/stories")


def test_a_cluster_that_keeps_failing_is_counted_and_ends_the_job(configured, monkeypatch):
    ingest.store(
        [
            article(1, "Wildfire forces evacuation of Brenton valley", "Crews fight the fire."),
            article(2, "Brenton valley wildfire: thousands evacuated", "The fire spreads."),
        ]
    )
    job, _ = jobs.request_job(24, False)
    (cluster_id,) = jobs.plan_job(job.id, "llama3.1:8b")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(jobs, "run_cluster", broken)
    tasks.synthesize_cluster.call_local(cluster_id)  # no retries left: the cluster fails
    assert JobCluster.get_by_id(cluster_id).status == "failed"
    job = Job.get_by_id(job.id)
    assert job.status == "failed" and "disk full" in job.error


@pytest.mark.backends("scale")
def test_worker_threads_hand_their_pooled_connections_back(client, consumer):
    from storyapp.db import database

    client.post("/articles", json=[article(1, "Quake hits Eldham"), article(2, "Eldham quake")])
    job = wait_for_job(client, client.post("/stories/generate").get_json()["job_id"])
    assert job["status"] == "succeeded" and job["total"] == 1
    # Every task gave its connection back to the pool when it ended: a broken one (a server
    # restart) is replaced on next use instead of failing every later task of that thread.
    deadline = time.monotonic() + 5
    while database.obj._in_use and time.monotonic() < deadline:
        time.sleep(0.02)
    assert database.obj._in_use == {}
    assert database.obj._connections  # and they wait there to be used again
