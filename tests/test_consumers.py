"""Several consumer processes on one Redis queue and one PostgreSQL database, as on several
machines: they share a job's clusters, the job's figures still come out exact, and the bound on
LLM requests per host holds across them."""

from collections import Counter

import pytest
from workers import assert_finished_once, job_of, wait_until

from storyapp.fake_ollama import FakeOllama
from storyapp.models import JobCluster, LLMCall, Story


@pytest.mark.backends("scale")
def test_two_consumer_processes_split_a_job_and_count_it_exactly(sample_job, workers):
    # Four worker threads each, and three LLM requests in flight at most, in all.
    shared_bound = {"STORYAPP_LLM_CONCURRENCY": "3", "STORYAPP_LLM_CONCURRENCY_SCOPE": "redis"}
    with FakeOllama(latency=0.1, slots=32) as server:
        first = workers(server.url, **shared_bound)
        second = workers(server.url, "--no-scheduler", **shared_bound)
        job_id = sample_job(server)
        wait_until(lambda: job_of(job_id).status != "running" and job_of(job_id).total, 60)
        assert first.stop() == 0 and second.stop() == 0
    assert server.peak_in_flight == 3
    assert_finished_once(job_id)
    job = job_of(job_id)
    assert (job.fallback, job.cached, job.reused, job.failed) == (0, 0, 0, 0)
    assert server.chat_count == job.llm == LLMCall.select().count() > 20
    # Each cluster written by the LLM says which worker wrote it: both did, each a fair share.
    writers = Counter(
        jc.lease_holder
        for jc in JobCluster.select().where(JobCluster.job == job_id, JobCluster.outcome == "llm")
    )
    assert len(writers) == 2 and min(writers.values()) >= job.llm // 4, writers
    assert sum(writers.values()) == job.llm
    assert len({jc.story_id for jc in JobCluster.select()}) == Story.select().count() == job.total
    # Exactly one of them runs the scheduler.
    assert "Periodic tasks are enabled" in first.log.read_text()
    assert "Periodic tasks are disabled" in second.log.read_text()
