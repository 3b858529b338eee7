"""Nothing lost, nothing stuck: cluster leases, handing back the work of workers that died, and
ending the jobs no worker is left to finish. The supervisor (supervisor.py) runs it.

Huey deletes a task from the queue when a worker takes it, so a worker killed mid-task (or a
power cut that loses the queue's last writes) would lose clusters. Instead, every worker
process keeps a row with a heartbeat (heartbeat.py), and a cluster being written holds a lease
naming its worker. Any live worker, every few seconds, hands back what dead workers held: a
cluster's lease is cleared and its task queued again, a job stuck half-planned is queued again.
The database, not the queue, is what says what is left to do; a task queued twice is harmless
because settling a cluster is a conditional update (jobs.run_cluster).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import fn

from storyapp import counters, heartbeat
from storyapp.counters import Counts
from storyapp.db import lock, transaction
from storyapp.models import Job, JobCluster, Worker, utcnow

# A running job with pending clusters nobody holds, and no progress for this long, has lost
# tasks somewhere: its pending clusters are queued again.
STALLED_AFTER_S = 120.0


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
        last = _last_progress(job.id)
        if last is not None and last > quiet_since:
            continue
        stalled += [
            jc.id
            for jc in JobCluster.select(JobCluster.id).where(
                JobCluster.job == job.id,
                JobCluster.status == "pending",
                JobCluster.lease_holder.is_null(),
            )
        ]
    return stalled


def _last_progress(job_id: str) -> datetime | None:
    """When a cluster of the job was last taken or settled; None before any was."""
    # Typed by hand: SQLite gives a function's result back as text, and text compared with a
    # datetime raised, failing every round of recovery once a job ran 2 minutes.
    latest = fn.MAX(fn.COALESCE(JobCluster.finished_at, JobCluster.leased_at))
    return (
        JobCluster.select(latest.python_value(JobCluster.leased_at.python_value))
        .where(JobCluster.job == job_id)
        .scalar()
    )


# A running job with no live worker at all for this long has failed: nobody is there to finish
# it. Reading writes nothing, so a reader is shown the orphan failed (`Orphans`) and the next
# writer records it (`end_orphans`).
ORPHANED_AFTER_S = 600.0
ORPHAN_ERROR = "no worker has been alive for 10 minutes: start `storyapp worker` and generate again"


@dataclass(frozen=True)
class Orphans:
    """The running jobs nobody will finish, as of one moment: those started before `cutoff`,
    when no worker has been alive since (`cutoff` is None when one has). An orphan ended where
    it stopped: at its last progress."""

    cutoff: datetime | None

    @classmethod
    def as_of(cls, now: datetime | None = None) -> "Orphans":
        quiet_since = (now or utcnow()) - timedelta(seconds=ORPHANED_AFTER_S)
        last_heartbeat = Worker.select(fn.MAX(Worker.heartbeat_at)).scalar()
        if last_heartbeat is not None and last_heartbeat > quiet_since:
            return cls(None)
        return cls(quiet_since)

    def status_is(self, status: str):
        """An expression over Job: true where the status a reader sees is `status`."""
        if self.cutoff is None or status not in ("running", "failed"):
            return Job.status == status
        if status == "failed":
            return (Job.status == "failed") | self.where()
        return (Job.status == "running") & ~self.where()

    def where(self):
        """An expression over Job: true for the orphans (with a cutoff)."""
        return (Job.status == "running") & (Job.started_at < self.cutoff)

    def seen(self, job: Job) -> Job:
        """`job` as a reader sees it: an orphan has failed. Changed in memory only."""
        if self.cutoff is not None and job.status == "running" and job.started_at < self.cutoff:
            job.status, job.active_key, job.error = "failed", None, ORPHAN_ERROR
            job.finished_at = max(job.started_at, _last_progress(job.id) or job.started_at)
        return job


def jobs_as_seen(status: str | None = None, limit: int = 50) -> list[dict]:
    """The jobs as a reader sees them (an orphan has failed), newest first; only those in
    `status` if given. GET /jobs and `storyapp jobs` list these."""
    orphans = Orphans.as_of()
    query = Job.select().order_by(Job.created_at.desc(), Job.id)
    if status:
        query = query.where(orphans.status_is(status))
    return [orphans.seen(job).to_dict() for job in query.limit(limit)]


def end_orphans(now: datetime | None = None) -> int:
    """Records the orphans as failed, as readers were shown them; returns how many. A worker
    does it as it starts, before it would take them up again, and so does a request for a new
    job, which an orphan would otherwise take in as its equal."""
    orphans = Orphans.as_of(now)
    if orphans.cutoff is None:
        return 0
    with transaction():
        ended = [orphans.seen(job) for job in Job.select().where(orphans.where())]
        counts = Counts()
        for job in ended:
            if (
                Job.update(
                    status=job.status,
                    finished_at=job.finished_at,
                    active_key=None,
                    error=job.error,
                )
                .where(Job.id == job.id, Job.status == "running")
                .execute()
            ):
                counts.add(counters.JOBS_ENDED, status=job.status)
        counts.save()
    return len(ended)
