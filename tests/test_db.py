"""The named operations of the per-cluster path (models.py), on SQLite and PostgreSQL: each is
one conditional statement, true for exactly one caller."""

from datetime import timedelta

import pytest

from storyapp.db import transaction
from storyapp.models import Job, JobCluster, SynthesisCache, utcnow
from storyapp.story import Cited, StoryText

pytestmark = pytest.mark.backends


def running_job(total: int = 2) -> tuple[Job, list[int]]:
    with transaction():
        job = Job.create(time_window_hours=24, status="running", total=total)
        ids = [
            JobCluster.create(job=job, cluster_key=f"k{n}", article_ids=[n]).id
            for n in range(total)
        ]
    return job, ids


def test_a_lease_keeps_other_workers_out_until_it_runs_out(configured):
    _, (cluster, _) = running_job()
    assert JobCluster.lease(cluster, "w1", 600)
    assert JobCluster.lease(cluster, "w1", 600)  # renewed by its holder
    assert not JobCluster.lease(cluster, "w2", 600)
    JobCluster.update(lease_until=utcnow() - timedelta(seconds=1)).execute()
    assert JobCluster.lease(cluster, "w2", 600)  # a lapsed lease is anyone's
    assert JobCluster.get_by_id(cluster).lease_holder == "w2"


def test_a_cluster_is_settled_and_counted_once_and_the_last_one_ends_the_job(configured):
    job, (first, second) = running_job()
    assert JobCluster.settle(first, "llm", None, None)
    assert not JobCluster.settle(first, "llm", None, None)
    assert Job.count(job.id, "llm")
    assert not Job.finish_if_complete(job.id)  # one of two
    assert JobCluster.settle(second, "fallback", None, "down")
    assert Job.count(job.id, "fallback")
    assert Job.finish_if_complete(job.id)
    assert not Job.finish_if_complete(job.id)  # exactly once
    ended = Job.get_by_id(job.id)
    assert (ended.status, ended.done, ended.llm, ended.fallback) == ("succeeded", 2, 1, 1)
    assert ended.active_key is None and ended.finished_at is not None
    # The job has ended: its counts are final.
    assert not Job.count(job.id, "llm")


def test_a_job_with_a_failed_cluster_ends_failed(configured):
    job, _ = running_job(total=1)
    Job.update(done=1, failed=1).execute()
    assert Job.finish_if_complete(job.id)
    assert Job.get_by_id(job.id).status == "failed"


def test_a_skipped_cluster_stays_skipped(configured):
    _, (cluster, _) = running_job()
    JobCluster.skip(cluster)
    assert not JobCluster.settle(cluster, "llm", None, None)
    assert not JobCluster.lease(cluster, "w1", 600)
    assert JobCluster.get_by_id(cluster).status == "skipped"


def test_the_cache_keeps_the_latest_reply_for_a_key(configured):
    first = StoryText(
        title="First",
        summary=[Cited(text="s", sources=[1])],
        key_points=[Cited(text="k", sources=[1])],
    )
    second = StoryText(
        title="Second",
        summary=[Cited(text="s", sources=[1])],
        key_points=[Cited(text="k", sources=[1])],
    )
    SynthesisCache.remember("key", "m1", first)
    SynthesisCache.remember("key", "m2", second)
    (entry,) = SynthesisCache.select()
    assert (entry.model, entry.story["title"]) == ("m2", "Second")
