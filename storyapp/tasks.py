"""The tasks on the queue (queue.py): thin shells around jobs.py, feeds.py and retention.py; the
schedule of the periodic ones; the process's LLM client.

`configure()` binds the database, the queue, the schedule and the LLM client to the settings,
and migrates nothing: the commands that start a process do (cli.py, the root `tasks.py`,
`wsgi.py`). The app factory, the CLI and the root `tasks.py` call it.
"""

import logging
import os
import threading
from datetime import datetime, timedelta

from huey import crontab

from storyapp import db, feeds, heartbeat, jobs, queue, recovery, retention, synthesis
from storyapp import llm as llms
from storyapp.config import Settings, parse_schedule
from storyapp.models import utcnow
from storyapp.queue import huey
from storyapp.slots import RedisSlots

log = logging.getLogger(__name__)

_state: dict = {"settings": None, "llm": None, "schedule": None}
# Who holds the leases this process's tasks take: the worker its supervisor registered
# (supervisor.py), or host and pid without one (an in-process consumer, a test).
worker = {"id": f"{heartbeat.HOST}:{os.getpid()}"}
_llm_lock = threading.RLock()


def configure(settings: Settings) -> None:
    """Binds the queue, the database and the schedule to `settings`, migrating nothing."""
    schedule = parse_schedule(settings.schedule)
    queue.bind(settings.queue_url, settings.queue_name)
    db.bind(settings.database_url)
    with _llm_lock:
        close_llm()
        _state.update(settings=settings, schedule=schedule)


def close_llm() -> None:
    """Closes the LLM client and its open connections; the next llm() makes a new one."""
    with _llm_lock:
        if _state["llm"] is not None:
            _state["llm"].close()
            _state["llm"] = None


def close() -> None:
    """Lets go of the LLM client's connections and this thread's database connection."""
    close_llm()
    if db.database.obj is not None:
        db.database.close()


def settings() -> Settings:
    if _state["settings"] is None:
        raise RuntimeError("storyapp is not configured: call storyapp.tasks.configure()")
    return _state["settings"]


def llm() -> llms.LLM:
    # One client per process: its per-host slots bound every worker thread together.
    with _llm_lock:
        if _state["llm"] is None:
            s = settings()
            slots = shared_slots(s) if s.llm_concurrency_scope == "redis" else None
            _state["llm"] = llms.from_settings(s, slots)
        return _state["llm"]


# A slot outlives its request by this much at most (the request itself ends by its timeout):
# then a consumer killed mid-request gives its slots back by itself.
SLOT_LEASE_MARGIN_S = 30.0


def shared_slots(s: Settings) -> RedisSlots:
    """Per-host slots in the queue's Redis, shared by every consumer of the queue."""
    return RedisSlots(
        queue.redis_connection(),
        f"storyapp.llm-slots.{s.queue_name}",
        s.llm_urls,
        s.llm_concurrency,
        lease_s=s.llm_timeout + SLOT_LEASE_MARGIN_S,
    )


def start_job(hours: float, force: bool) -> tuple[dict, bool]:
    """Requests a job and queues its planning; returns (job, created)."""
    # A job no worker will finish must not take this request in as its equal: it has failed,
    # as readers were shown.
    recovery.end_orphans()
    job, created = jobs.request_job(hours, force)
    if created:
        try:
            plan_job(job.id)
        except Exception as exc:
            jobs.fail_job(job.id, f"could not queue the job: {exc}")
            raise
    return job.to_dict(), created


def lease_seconds(llm_timeout: float) -> float:
    """Longest a cluster can take: every attempt synthesis may make, each up to the timeout."""
    attempts = synthesis.TRANSPORT_ATTEMPTS + synthesis.INVALID_ATTEMPTS
    return llm_timeout * attempts + sum(synthesis.BACKOFF_S) + 30.0


# The tasks use each worker thread's own connection, opened on first use. On SQLite it is kept:
# opening one per task (and setting its pragmas) cost more than the task's own queries. A
# pooled PostgreSQL connection goes back to the pool after each task (db.release).


@huey.post_execute()
def _release_connection(task, task_value, exc) -> None:
    db.release()


@huey.task()
def plan_job(job_id: str) -> None:
    try:
        cluster_ids = jobs.plan_job(job_id, worker=worker["id"], llm=llm())
    except Exception as exc:
        log.exception("job %s: planning failed", job_id, extra={"job": job_id})
        jobs.fail_job(job_id, f"planning failed: {type(exc).__name__}: {exc}")
        return
    for cluster_id in cluster_ids:
        synthesize_cluster(cluster_id)


@huey.task(retries=2, retry_delay=2, context=True)
def synthesize_cluster(cluster_id: int, task=None) -> None:
    try:
        lease_s = lease_seconds(settings().llm_timeout)
        jobs.run_cluster(cluster_id, llm(), worker=worker["id"], lease_s=lease_s)
    except Exception as exc:
        if task is not None and task.retries:
            log.warning(
                "cluster %s: %s; Huey retries it", cluster_id, exc, extra={"cluster": cluster_id}
            )
            raise
        job_id = jobs.fail_cluster(cluster_id, f"{type(exc).__name__}: {exc}")
        log.exception(
            "job %s cluster %s: giving up",
            job_id,
            cluster_id,
            extra={"job": job_id, "cluster": cluster_id},
        )


def _schedule_due(moment) -> bool:
    schedule = _state["schedule"]
    return schedule is not None and schedule(moment)


# A queued run waits for a free worker, minutes at most; a day covers any wait.
SLOT_LOOKBACK_MINUTES = 24 * 60


def current_slot(now: datetime) -> datetime:
    """The slot a scheduled run belongs to: the schedule's latest minute at or before `now`, so
    a run that waited for a free worker still counts for the minute it was queued in. Without a
    schedule (off, or a run by hand) it is the current minute."""
    minute = now.replace(second=0, microsecond=0)
    schedule = _state["schedule"]
    if schedule is not None:
        for back in range(SLOT_LOOKBACK_MINUTES):
            moment = minute - timedelta(minutes=back)
            if schedule(moment):
                return moment
    return minute


@huey.periodic_task(_schedule_due, name="scheduled_generation")
def scheduled_generation() -> dict | None:
    """Refreshes the feeds, then generates the last 24 hours' stories: once per slot, however
    many schedulers queued it. Returns the job, or None when the slot had run already."""
    slot = current_slot(utcnow())
    # Claimed before the work: a run that dies half-way leaves its slot to the next one
    # rather than risking a second refresh and job for the same minute.
    if not jobs.claim_slot(slot):
        log.info("scheduled run %s: run already (a second scheduler, or a redelivery)", slot)
        return None
    outcomes = feeds.refresh_all()
    job, created = start_job(24.0, False)
    log.info(
        "scheduled run %s: %d feeds (%d failed), %d new articles; job %s (%s)",
        slot,
        len(outcomes),
        sum(o.status == "failed" for o in outcomes),
        sum(o.created for o in outcomes),
        job["id"],
        "new" if created else "already running",
        extra={"job": job["id"]},
    )
    return job


# Hourly, so each run deletes an hour's worth; at minute 17, away from the schedule's usual
# minute 0. Not tied to STORYAPP_SCHEDULE: data ages whether or not stories are generated.
@huey.periodic_task(crontab(minute="17"), name="prune_old_rows")
def prune_old_rows() -> dict[str, int]:
    cutoff = utcnow() - timedelta(days=settings().retention_days)
    deleted = retention.prune(cutoff)
    log.info("retention: deleted what was older than %s: %s", cutoff, deleted)
    return deleted
