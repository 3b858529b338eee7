"""Nothing lost, nothing stuck: cluster leases, and handing back the work of workers that died.

Huey deletes a task from the queue when a worker takes it, so a worker killed mid-task (or a
power cut that loses the queue's last writes) would lose clusters. Instead, every worker
process keeps a row with a heartbeat (heartbeat.py), and a cluster being written holds a lease
naming its worker. Any live worker, every few seconds, hands back what dead workers held: a
cluster's lease is cleared and its task queued again, a job stuck half-planned is queued again.
The database, not the queue, is what says what is left to do; a task queued twice is harmless
because settling a cluster is a conditional update (jobs.run_cluster).
"""

from datetime import datetime, timedelta

from peewee import fn

from storyapp import heartbeat
from storyapp.db import lock, transaction
from storyapp.models import Job, JobCluster, Worker, utcnow

# A running job with pending clusters nobody holds, and no progress for this long, has lost
# tasks somewhere: its pending clusters are queued again.
STALLED_AFTER_S = 120.0
# A running job with no live worker at all for this long is ended as failed.
ORPHANED_AFTER_S = 600.0


def retire(worker_id: str) -> list[int]:
    """A worker on its way out gives back the clusters it still holds (after a graceful stop,
    none) and leaves; returns their ids, for the caller to queue again."""
    with transaction():
        held = [
            jc.id
            for jc in JobCluster.select(JobCluster.id).where(
                JobCluster.lease_holder == worker_id, JobCluster.status == "pending"
            )
        ]
        if held:
            JobCluster.update(lease_holder=None, lease_until=None).where(
                JobCluster.id.in_(held)
            ).execute()
        Worker.delete().where(Worker.id == worker_id).execute()
    return held


def reclaim(now: datetime | None = None) -> tuple[list[int], list[str]]:
    """Hands back what dead workers held and what was lost: returns (cluster ids to queue
    again, job ids to plan again)."""
    now = now or utcnow()
    with transaction():
        # Every consumer reclaims every few seconds: one at a time, so the next sees what the
        # last handed back instead of handing it back (and queuing it) again.
        lock("storyapp.reclaim")
        dead = heartbeat.dead(now)
        lost = JobCluster.status == "pending"
        held_by_dead = JobCluster.lease_holder.in_(dead) if dead else False
        expired = JobCluster.lease_until < now
        clusters = [
            jc.id
            for jc in JobCluster.select(JobCluster.id)
            .join(Job)
            .where(lost, Job.status == "running", held_by_dead | expired)
        ]
        if clusters:
            JobCluster.update(lease_holder=None, lease_until=None).where(
                JobCluster.id.in_(clusters)
            ).execute()
        stalled = _stalled_clusters(now)
        if stalled:
            # Queued again as of now: so not again for STALLED_AFTER_S. Without the stamp every
            # consumer queued them again every round while they waited behind a long job,
            # filling the queue with copies.
            JobCluster.update(leased_at=now).where(JobCluster.id.in_(stalled)).execute()
        clusters += stalled
        half_planned = []
        if dead:
            half_planned = [
                job.id
                for job in Job.select(Job.id).where(
                    Job.status == "running", Job.total.is_null(), Job.planner.in_(dead)
                )
            ]
            if half_planned:
                Job.update(status="queued", planner=None, started_at=None).where(
                    Job.id.in_(half_planned)
                ).execute()
            Worker.delete().where(Worker.id.in_(dead)).execute()
    return sorted(set(clusters)), half_planned


def forgotten_jobs(now: datetime | None = None) -> list[str]:
    """Jobs still queued STALLED_AFTER_S after they were asked for. Only the caller knows
    whether the queue is empty, which is what makes them forgotten rather than waiting."""
    quiet_since = (now or utcnow()) - timedelta(seconds=STALLED_AFTER_S)
    query = Job.select(Job.id).where(Job.status == "queued", Job.created_at < quiet_since)
    return [job.id for job in query]


def _stalled_clusters(now: datetime) -> list[int]:
    """Pending clusters nobody holds, of running jobs where nothing happened for a while."""
    quiet_since = now - timedelta(seconds=STALLED_AFTER_S)
    stalled = []
    for job in Job.select(Job.id, Job.started_at).where(
        Job.status == "running", Job.total.is_null(False), Job.started_at < quiet_since
    ):
        clusters = JobCluster.select().where(JobCluster.job == job.id)
        # Typed by hand: SQLite gives a function's result back as text, and text compared
        # with a datetime raised, failing every round of recovery once a job ran 2 minutes.
        latest = fn.MAX(fn.COALESCE(JobCluster.finished_at, JobCluster.leased_at))
        last = clusters.select(latest.python_value(JobCluster.leased_at.python_value)).scalar()
        if last is not None and last > quiet_since:
            continue
        stalled += [
            jc.id
            for jc in clusters.select(JobCluster.id).where(
                JobCluster.status == "pending", JobCluster.lease_holder.is_null()
            )
        ]
    return stalled


def end_orphans(now: datetime | None = None) -> int:
    """Fails running jobs when no worker has been alive for ORPHANED_AFTER_S: with nobody
    to finish them they would say "running" forever."""
    now = now or utcnow()
    last_seen = Worker.select(fn.MAX(Worker.heartbeat_at)).scalar()
    if last_seen is not None and (now - last_seen).total_seconds() < ORPHANED_AFTER_S:
        return 0
    quiet_since = now - timedelta(seconds=ORPHANED_AFTER_S)
    with transaction():
        return (
            Job.update(
                status="failed",
                finished_at=now,
                active_key=None,
                error="no worker has been alive for 10 minutes: start `storyapp worker` "
                "and generate again",
            )
            .where(Job.status == "running", Job.started_at < quiet_since)
            .execute()
        )
