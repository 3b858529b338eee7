"""A worker killed mid-job, or stopped by a signal: nothing lost, nothing written twice, nothing
left running. The workers are real `storyapp worker` processes; the kill is a real SIGKILL."""

import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from workers import HUEY_CONSUMER, assert_finished_once, job_of, wait_until

from storyapp import heartbeat, jobs, queue, recovery, supervisor, tasks
from storyapp.fake_ollama import FakeOllama
from storyapp.models import Job, JobCluster, Worker, utcnow
from storyapp.ollama_llm import OllamaLLM

# A worker runs four threads (workers.storyapp_env): with every reply held, each of them waits
# for one in the middle of a cluster.
THREADS = 4


@pytest.mark.backends
def test_a_killed_worker_loses_nothing(sample_job, workers):
    with FakeOllama(slots=8) as server:
        server.hold(after=12)
        job_id = sample_job(server)
        first = workers(server.url)
        wait_until(lambda: server.held == THREADS, what="every thread mid-cluster")
        first.proc.kill()  # SIGKILL: LLM calls in flight, leases held
        first.proc.wait()
        held = JobCluster.select().where(
            JobCluster.status == "pending", JobCluster.lease_holder.is_null(False)
        )
        assert held.count() == THREADS
        server.release()
        second = workers(server.url)
        wait_until(lambda: job_of(job_id).status != "running", what="the job to end")
        assert second.stop() == 0
    assert_finished_once(job_id)
    assert "recovered" in second.log.read_text()


def test_sigterm_lets_running_clusters_finish(sample_job, workers):
    with FakeOllama(slots=8) as server:
        server.hold(after=4)
        job_id = sample_job(server)
        worker = workers(server.url)
        wait_until(lambda: server.held == THREADS, what="every thread mid-cluster")
        done_before = job_of(job_id).done
        worker.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "Shutting down gracefully" in worker.log.read_text(), what="the signal")
        server.release()
        assert worker.proc.wait(timeout=90) == 0  # (a second SIGTERM would stop it at once)
        # What was running when the signal came was finished, not abandoned, and no more.
        assert job_of(job_id).done == done_before + THREADS
        assert (
            JobCluster.select()
            .where(JobCluster.lease_holder.is_null(False), JobCluster.status == "pending")
            .count()
            == 0
        )
        assert Worker.select().count() == 0  # it retired
        workers(server.url)
        wait_until(lambda: job_of(job_id).status != "running", what="the job to end")
    assert_finished_once(job_id)


def test_sigint_stops_at_once_and_hands_the_work_back(sample_job, workers):
    with FakeOllama(slots=8) as server:
        server.hold(after=4)
        job_id = sample_job(server)
        worker = workers(server.url)
        wait_until(lambda: server.held == THREADS, what="every thread mid-cluster")
        # At once: while the replies it waits for are still held.
        assert worker.stop(signal.SIGINT, timeout=20) == 0
        server.release()
        assert "handed back" in worker.log.read_text()
        assert (
            JobCluster.select()
            .where(JobCluster.lease_holder.is_null(False), JobCluster.status == "pending")
            .count()
            == 0
        )
        second = workers(server.url)
        wait_until(lambda: job_of(job_id).status != "running", what="the job to end")
        second.stop()
    assert_finished_once(job_id)


@pytest.mark.backends
def test_huey_consumer_runs_the_same_supervisor_as_storyapp_worker(sample_job, workers):
    with FakeOllama(latency=0.05, slots=4) as server:
        job_id = sample_job(server)
        consumer = workers(server.url, command=[*HUEY_CONSUMER, "-w", "4"])
        wait_until(lambda: job_of(job_id).status not in Job.ACTIVE, what="the job to end")
        (worker,) = Worker.select()
        assert worker.pid == consumer.proc.pid
        assert consumer.stop() == 0
        assert Worker.select().count() == 0  # it retired on its way out
    assert_finished_once(job_id)


# --- recovery's rules, on the database alone ----------------------------------------------


@pytest.fixture
def planned(configured):
    from conftest import article

    from storyapp import ingest

    ingest.store(
        [
            article(1, "Quake hits Eldham coast", "Eldham quake damages homes."),
            article(2, "Eldham coast quake damages homes", "The quake hit Eldham."),
            article(3, "Central bank raises rates", "Rates up at the central bank."),
            article(4, "Rates raised by central bank", "The central bank raised rates."),
        ]
    )
    job, _ = jobs.request_job(24, False)
    return job.id, jobs.plan_job(job.id, worker="planner")


def test_leases_of_a_dead_worker_are_handed_back(planned):
    job_id, (first, second) = planned
    worker = heartbeat.register()
    assert JobCluster.lease(first, worker, 600)
    assert not JobCluster.lease(first, "someone-else", 600)  # a live lease keeps others out
    assert recovery.reclaim() == ([], [])  # the worker is alive: nothing to do
    Worker.update(heartbeat_at=utcnow() - timedelta(minutes=5)).execute()
    assert recovery.reclaim() == ([first], [])
    assert JobCluster.get_by_id(first).lease_holder is None
    assert Worker.select().count() == 0


@pytest.mark.backends
def test_consumers_reclaiming_at_once_hand_back_each_cluster_once(planned, monkeypatch, lock_waits):
    _, pending = planned
    dead = heartbeat.register()
    for cluster_id in pending:
        assert JobCluster.lease(cluster_id, dead, 600)
    Worker.update(heartbeat_at=utcnow() - timedelta(minutes=5)).execute()
    stalled = recovery._stalled_clusters
    holding, may_commit = threading.Event(), threading.Event()

    def held_open(now):
        if not holding.is_set():  # the first consumer here keeps its transaction open
            holding.set()
            may_commit.wait(60)
        return stalled(now)

    monkeypatch.setattr(recovery, "_stalled_clusters", held_open)
    handed_back = []

    def consumer():
        handed_back.extend(recovery.reclaim()[0])
        tasks.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            runs = [pool.submit(consumer) for _ in range(2)]
            wait_until(holding.is_set, what="a consumer to reclaim")
            wait_until(lambda: lock_waits() == 1, what="the other to wait for it")
        finally:
            may_commit.set()
        for run in runs:
            run.result()
    assert sorted(handed_back) == sorted(pending)


def test_a_worker_whose_process_is_gone_is_dead_at_once(configured):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    Worker.create(
        id="ghost", host=heartbeat.HOST, pid=gone.pid, started_at=utcnow(), heartbeat_at=utcnow()
    )
    assert heartbeat.dead(utcnow()) == ["ghost"]


def test_a_job_left_half_planned_is_planned_again(configured):
    job, _ = jobs.request_job(24, False)
    Job.update(status="running", planner="ghost", started_at=utcnow()).execute()
    Worker.create(
        id="ghost",
        host="elsewhere",
        pid=1,
        started_at=utcnow(),
        heartbeat_at=utcnow() - timedelta(minutes=5),
    )
    assert recovery.reclaim() == ([], [job.id])
    assert job_of(job.id).status == "queued"


def test_a_job_whose_planning_task_was_lost_is_planned_again(configured):
    job, _ = jobs.request_job(24, False)
    queue.huey.flush()  # the queue lost its planning task
    assert recovery.forgotten_jobs() == []  # just asked for: it may be waiting its turn
    later = utcnow() + timedelta(seconds=recovery.STALLED_AFTER_S + 1)
    assert recovery.forgotten_jobs(later) == [job.id]
    Job.update(created_at=utcnow() - timedelta(hours=1)).execute()
    supervisor.recover()
    assert queue.huey.pending_count() == 1  # planning queued again


@pytest.mark.backends
def test_a_stalled_job_gets_its_pending_clusters_queued_again(planned):
    job_id, pending = planned
    assert recovery.reclaim() == ([], [])
    later = utcnow() + timedelta(seconds=recovery.STALLED_AFTER_S + 1)
    assert recovery.reclaim(later) == (sorted(pending), [])
    # Once per quiet spell, however many consumers look and however often.
    assert recovery.reclaim(later + timedelta(seconds=heartbeat.HEARTBEAT_S)) == ([], [])
    much_later = later + timedelta(seconds=recovery.STALLED_AFTER_S + 1)
    assert recovery.reclaim(much_later) == (sorted(pending), [])


@pytest.mark.backends
def test_a_job_stalled_after_some_clusters_were_written_is_found(planned, llm):
    job_id, (first, second) = planned
    assert jobs.run_cluster(first, llm) == "llm"
    later = utcnow() + timedelta(seconds=recovery.STALLED_AFTER_S + 1)
    assert recovery.reclaim(later) == ([second], [])


def test_a_running_job_with_no_worker_alive_is_failed_not_left_running(planned):
    job_id, _ = planned
    assert recovery.end_orphans() == 0  # just started: give workers time
    later = utcnow() + timedelta(seconds=recovery.ORPHANED_AFTER_S + 1)
    assert recovery.end_orphans(later) == 1
    job = job_of(job_id)
    assert job.status == "failed" and "no worker" in job.error and job.active_key is None


def test_a_worker_starting_records_the_jobs_no_worker_was_alive_to_finish(planned):
    job_id, _ = planned
    long_ago = utcnow() - timedelta(seconds=recovery.ORPHANED_AFTER_S + 60)
    Job.update(started_at=long_ago).where(Job.id == job_id).execute()
    shown = recovery.Orphans.as_of().seen(job_of(job_id)).to_dict()  # what readers were told
    assert shown["status"] == "failed" and job_of(job_id).status == "running"
    supervisor.start_supervisor()
    try:
        assert job_of(job_id).to_dict() == shown  # failed as shown, not taken up again
    finally:
        supervisor.stop_supervisor()


def test_a_cluster_waiting_for_an_llm_slot_keeps_its_lease_until_it_is_taken(planned):
    _, (first, _) = planned
    with FakeOllama() as server:
        llm = OllamaLLM((server.url,), "llama3.1:8b", timeout=5, concurrency=1)
        outcome = []
        with llm._slots.take():  # the one slot, held: the cluster waits in line
            waiting = threading.Thread(
                target=lambda: outcome.append(jobs.run_cluster(first, llm, "w1", lease_s=0.4))
            )
            waiting.start()
            # Its lease of 0.4 s is renewed as it waits (every 0.1 s): still its own later.
            wait_until(lambda: JobCluster.get_by_id(first).lease_holder == "w1", what="lease")
            time.sleep(1.0)
            assert not JobCluster.lease(first, "w2", 600)
            assert recovery.reclaim() == ([], [])
            # Taken from it all the same (an operator, a clock gone wrong): it stops waiting.
            JobCluster.update(lease_holder="w2").where(JobCluster.id == first).execute()
            waiting.join(timeout=10)
        llm.close()
        assert outcome == [None] and server.chat_count == 0
    assert JobCluster.get_by_id(first).status == "pending"
