from datetime import datetime

import pytest
from conftest import article, make_settings

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
    sqlite = tasks.queue_storage(f"sqlite:///{tmp_path}/q/queue.db")
    assert sqlite.filename == str(tmp_path / "q" / "queue.db")
    sqlite.close()
    with pytest.raises(ConfigError, match="STORYAPP_QUEUE_URL"):
        tasks.queue_storage("amqp://localhost")


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
