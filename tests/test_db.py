"""db.Statement: SQL built once, run with new values, the same on SQLite and PostgreSQL."""

import time
from datetime import timedelta

import pytest
from peewee import fn

from storyapp import db
from storyapp.db import Statement, inserting, slot, transaction
from storyapp.models import Job, JobCluster, LLMCall, Story, utcnow

pytestmark = pytest.mark.backends


def test_an_insert_returns_each_new_rows_id_and_converts_json(configured):
    new_cluster = inserting(JobCluster, "job", "cluster_key", "article_ids")
    job = Job.create(time_window_hours=24)
    with transaction():
        first = new_cluster.insert(job=job.id, cluster_key="a", article_ids=[1, 2])
        second = new_cluster.insert(job=job.id, cluster_key="b", article_ids=[3])
    assert second == first + 1
    rows = JobCluster.select().order_by(JobCluster.id)
    assert [(r.id, r.cluster_key, r.article_ids) for r in rows] == [
        (first, "a", [1, 2]),
        (second, "b", [3]),
    ]


def test_rows_come_back_typed_as_their_fields(configured):
    job = Job.create(time_window_hours=24, window_start=utcnow() - timedelta(hours=24))
    JobCluster.create(job=job.id, cluster_key="k", article_ids=[7, 8])
    query = Statement(
        lambda: (
            JobCluster.select(JobCluster.article_ids, Job.window_start, Job.window_end)
            .join(Job)
            .where(JobCluster.cluster_key == slot("key"))
        )
    )
    ((article_ids, start, end),) = query.rows(key="k")
    assert article_ids == [7, 8]
    assert start == job.window_start and end is None
    assert query.rows(key="missing") == []


def test_an_update_counts_the_rows_it_changed_and_reuses_its_sql(configured):
    job = Job.create(time_window_hours=24, status="running")
    finish = Statement(
        lambda: Job.update(status=slot("status")).where(
            Job.id == slot("id"), Job.status == "running"
        )
    )
    with transaction():
        assert finish.rowcount(id=job.id, status="succeeded") == 1
        assert finish.rowcount(id=job.id, status="failed") == 0  # no longer running
    assert Job.get_by_id(job.id).status == "succeeded"


def test_a_statement_is_built_again_for_another_database(tmp_path, configured):
    story = inserting(Story, "cluster_key", "title", "summary", "generator", "article_count")
    values = {"title": "T", "summary": "S", "generator": "single", "article_count": 1}
    with transaction():
        story.insert(cluster_key="first", **values)
    other = db.bind(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        other.create_tables([Story])
        with transaction():
            assert story.insert(cluster_key="second", **values) == 1
        assert [s.cluster_key for s in Story.select()] == ["second"]
    finally:
        db.bind(configured.database_url)
    assert [s.cluster_key for s in Story.select()] == ["first"]


def test_a_default_is_made_for_each_row_not_once_when_the_sql_is_built(configured):
    log_call = inserting(LLMCall, "model", "host", "attempt", "outcome", "latency_ms")
    values = {"model": "m", "host": "h", "attempt": 1, "outcome": "ok", "latency_ms": 1.0}
    with transaction():
        log_call.insert(**values)
    time.sleep(0.01)
    with transaction():
        log_call.insert(**values)
    first, second = LLMCall.select(LLMCall.created_at).order_by(LLMCall.id)
    assert second.created_at - first.created_at >= timedelta(milliseconds=10)


def test_a_value_left_out_is_an_error_not_a_default(configured):
    retitle = Statement(
        lambda: Story.update(key_points=slot("key_points", Story.key_points)).where(
            Story.id == slot("id")
        )
    )
    with pytest.raises(KeyError, match="key_points"):
        retitle.execute(id=1)


def test_rows_of_a_function_are_its_values(configured):
    Job.create(time_window_hours=24)
    Job.create(time_window_hours=12)
    count = Statement(
        lambda: Job.select(fn.COUNT(Job.id), fn.MAX(Job.time_window_hours)).where(
            Job.status == slot("status")
        )
    )
    assert count.rows(status="queued") == [(2, 24)]
