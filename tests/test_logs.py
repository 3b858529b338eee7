import json
import logging
import sys

from conftest import article
from scripted import missing

from storyapp import ingest, jobs, tasks
from storyapp.logs import JSONFormatter

FIRE = [
    article(1, "Wildfire forces evacuation of Brenton valley", "Crews fight the fire."),
    article(2, "Brenton valley wildfire: thousands evacuated", "The fire spreads."),
]


def record(msg: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    rec = logging.makeLogRecord(
        {"name": "storyapp.jobs", "levelno": logging.WARNING, "levelname": "WARNING"}
    )
    rec.msg, rec.args, rec.exc_info = msg, args, exc_info
    rec.__dict__.update(extra)
    return rec


def test_a_line_is_one_json_object_with_the_extra_fields():
    line = JSONFormatter().format(
        record("job %s cluster %s: fallback", "j1", 7, job="j1", cluster=7, counts={"llm": 2})
    )
    assert "\n" not in line
    fields = json.loads(line)
    assert fields["level"] == "warning" and fields["logger"] == "storyapp.jobs"
    assert fields["msg"] == "job j1 cluster 7: fallback"
    assert (fields["job"], fields["cluster"], fields["counts"]) == ("j1", 7, {"llm": 2})
    assert fields["ts"].endswith("+00:00")
    assert "args" not in fields and "exc" not in fields


def test_a_traceback_stays_on_the_line():
    try:
        raise OSError("disk full")
    except OSError:
        line = JSONFormatter().format(record("giving up", exc_info=sys.exc_info()))
    assert "\n" not in line
    assert "OSError: disk full" in json.loads(line)["exc"]


def test_job_and_cluster_ids_are_on_the_job_logs(configured, llm, caplog):
    ingest.store(FIRE)
    llm.enqueue(missing(llm.model))  # not retried: the cluster falls back at once
    job, _ = jobs.request_job(24, False)
    with caplog.at_level(logging.INFO, logger="storyapp"):
        (cluster_id,) = jobs.plan_job(job.id)
        jobs.run_cluster(cluster_id, llm)
    planned, ended, fallback = caplog.records  # the job ends inside the last settle
    assert (planned.levelname, planned.job, planned.clusters, planned.for_llm) == (
        "INFO",
        job.id,
        1,
        1,
    )
    assert (fallback.levelname, fallback.job, fallback.cluster) == ("WARNING", job.id, cluster_id)
    assert fallback.outcome == "fallback"
    assert (ended.levelname, ended.job, ended.status) == ("INFO", job.id, "succeeded")
    assert ended.counts["fallback"] == 1


def test_a_cluster_that_fails_is_logged_with_its_job(configured, monkeypatch, caplog):
    ingest.store(FIRE)
    job, _ = jobs.request_job(24, False)
    (cluster_id,) = jobs.plan_job(job.id)

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(jobs, "run_cluster", broken)
    with caplog.at_level(logging.INFO, logger="storyapp"):
        tasks.synthesize_cluster.call_local(cluster_id)
    giving_up = next(r for r in caplog.records if "giving up" in r.getMessage())
    assert (giving_up.levelname, giving_up.job, giving_up.cluster) == ("ERROR", job.id, cluster_id)
    assert giving_up.exc_info is not None
    ended = next(r for r in caplog.records if getattr(r, "status", None) == "failed")
    assert (ended.levelname, ended.job, ended.status) == ("WARNING", job.id, "failed")
