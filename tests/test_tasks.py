import sys
import time
from dataclasses import replace
from datetime import datetime

import pytest
from conftest import article, init, make_settings, running_consumer, wait_for_job
from feedserver import item, rss
from huey.consumer import Scheduler
from huey.signals import SIGNAL_COMPLETE, SIGNAL_ERROR
from peewee import OperationalError

from storyapp import feeds, heartbeat, ingest, jobs, queue, supervisor, tasks
from storyapp.config import ConfigError
from storyapp.db import database
from storyapp.models import Article, Feed, Job, JobCluster, ScheduledRun, Story, Worker


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
    return [task.name for task in queue.huey.read_periodic(moment)]


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
    assert queue.huey.pending_count() == 1  # its planning task waits for a consumer


def test_an_unconfigured_queue_refuses_to_take_work():
    storage = queue.UnconfiguredStorage("storyapp")
    with pytest.raises(RuntimeError, match="not configured"):
        storage.enqueue(b"task")


def test_queue_urls(tmp_path):
    sqlite = queue.queue_storage(f"sqlite:///{tmp_path}/q/queue.db", "stories")
    assert (sqlite.filename, sqlite.name) == (str(tmp_path / "q" / "queue.db"), "stories")
    sqlite.close()
    redis = queue.queue_storage("redis://127.0.0.1:6379/3", "stories")
    assert redis.queue_key == "huey.redis.stories" and redis.blocking
    assert redis.pool.connection_kwargs["db"] == 3
    with pytest.raises(ConfigError, match="STORYAPP_QUEUE_URL"):
        queue.queue_storage("amqp://localhost")


def test_scale_urls_without_their_packages_say_what_to_install(monkeypatch):
    from storyapp.db import open_database

    monkeypatch.setitem(sys.modules, "redis", None)  # import redis now fails
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError, match=r"pip install 'storyapp\[scale\]'"):
        queue.queue_storage("redis://127.0.0.1:6379/0")
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
    (cluster_id,) = jobs.plan_job(job.id)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(jobs, "run_cluster", broken)
    tasks.synthesize_cluster.call_local(cluster_id)  # no retries left: the cluster fails
    assert JobCluster.get_by_id(cluster_id).status == "failed"
    job = Job.get_by_id(job.id)
    assert job.status == "failed" and "disk full" in job.error


# --- scheduled runs -----------------------------------------------------------------------------

QUAKE = [
    item(1, "Earthquake of magnitude 6.1 strikes Eldham coast", "Homes damaged in Eldham."),
    item(2, "Eldham earthquake: rescuers search damaged homes", "The 6.1 quake hit Eldham."),
    item(3, "Magnitude 6.1 quake shakes Eldham, homes damaged", "Coastal Eldham towns hit."),
]
BAKERY = [item(4, "Local bakery wins national sourdough award", "A prize for Ferris Bakes.")]


@pytest.fixture
def hourly(tmp_path, ollama, feed_server, monkeypatch):
    """Schedule at minute 0 of every hour, a clock stopped at 10:00:30, and one feed."""
    init(make_settings(tmp_path, ollama.url, STORYAPP_SCHEDULE="0 * * * *"))
    clock = {"now": datetime(2026, 11, 28, 10, 0, 30)}
    monkeypatch.setattr(tasks, "utcnow", lambda: clock["now"])
    feed_server.publish("/wire.rss", rss("Wire", QUAKE + BAKERY))
    feeds.add(feed_server.url("/wire.rss"))
    feed_server.requests.clear()  # the fetch that checked it: the tests count the runs' own
    yield clock
    database.close()


def test_a_late_run_belongs_to_the_slot_it_was_queued_for(configured):
    tasks.configure(replace(configured, schedule="*/15 * * * *"))
    assert tasks.current_slot(datetime(2026, 11, 28, 10, 29, 59)) == datetime(2026, 11, 28, 10, 15)
    assert tasks.current_slot(datetime(2026, 11, 28, 10, 30, 1)) == datetime(2026, 11, 28, 10, 30)
    tasks.configure(replace(configured, schedule="0 6 * * *"))
    assert tasks.current_slot(datetime(2026, 11, 28, 5, 0)) == datetime(2026, 11, 27, 6, 0)
    tasks.configure(replace(configured, schedule="off"))  # by hand: the current minute
    assert tasks.current_slot(datetime(2026, 11, 28, 5, 7, 9)) == datetime(2026, 11, 28, 5, 7)


def test_a_scheduled_run_refreshes_the_feeds_then_queues_the_job(hourly, feed_server):
    job = tasks.scheduled_generation.call_local()
    assert job["status"] == "queued" and job["time_window_hours"] == 24.0
    assert Article.select().count() == 4  # fetched before the job was asked for
    assert Feed.get().last_success_at is not None
    assert [r.slot for r in ScheduledRun.select()] == [datetime(2026, 11, 28, 10, 0)]

    hourly["now"] = datetime(2026, 11, 28, 10, 20)  # the same slot, run late or again
    assert tasks.scheduled_generation.call_local() is None
    assert len(feed_server.headers_sent_to("/wire.rss")) == 1
    assert Job.select().count() == 1

    hourly["now"] = datetime(2026, 11, 28, 11, 0, 5)  # the next slot: a conditional fetch
    again = tasks.scheduled_generation.call_local()
    assert again["id"] == job["id"]  # the first job still waits for a worker: deduplicated
    (_, second) = feed_server.headers_sent_to("/wire.rss")
    assert second["If-None-Match"] == Feed.get().etag
    assert ScheduledRun.select().count() == 2


def test_two_schedulers_run_a_slot_once_through_a_real_consumer(hourly, feed_server):
    finished = []

    @queue.huey.signal(SIGNAL_COMPLETE, SIGNAL_ERROR)
    def note(signal, task, *exc):
        if task.name == "scheduled_generation":
            finished.append(signal)

    try:
        with running_consumer() as consumer:
            # What each consumer's scheduler does at 10:00: two of them, by mistake.
            for _ in range(2):
                Scheduler(queue.huey, consumer.stop_flag, 1, True).enqueue_periodic_tasks(
                    datetime(2026, 11, 28, 10, 0, 1)
                )
            deadline = time.monotonic() + 30
            while (len(finished) < 2 or not ended_jobs()) and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        queue.huey.disconnect_signal(note)
    assert finished == [SIGNAL_COMPLETE, SIGNAL_COMPLETE]
    assert len(feed_server.headers_sent_to("/wire.rss")) == 1
    (job,) = Job.select()
    assert (job.status, job.llm, job.single) == ("succeeded", 1, 1)
    assert sorted(s.article_count for s in Story.select()) == [1, 3]


def ended_jobs() -> list[Job]:
    return list(Job.select().where(Job.status.not_in(Job.ACTIVE)))


@pytest.mark.backends("scale")
def test_worker_threads_hand_their_pooled_connections_back(client, consumer, ollama):
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


def test_a_supervisor_that_cannot_register_is_left_for_the_next_thread(configured, monkeypatch):
    register = heartbeat.register

    def database_down():
        raise OperationalError("unable to open database file")

    monkeypatch.setattr(heartbeat, "register", database_down)
    with pytest.raises(OperationalError):
        supervisor._worker_thread_started()  # Huey logs it; the thread runs on
    monkeypatch.setattr(heartbeat, "register", register)
    supervisor._worker_thread_started()  # the next thread starts it
    assert Worker.select().count() == 1
    supervisor._worker_thread_ended()
    assert Worker.select().count() == 1  # one thread still runs
    supervisor._worker_thread_ended()
    assert Worker.select().count() == 0  # the last one stopped it: the worker retired
    supervisor.stop_supervisor()  # and again, at exit: nothing left to do


def test_a_clusters_lease_covers_every_attempt_synthesis_makes():
    assert tasks.lease_seconds(120) > 120 * 4
