"""The Huey queue and its tasks: thin shells around jobs.py.

`huey` exists at import so the tasks can register on it; `configure()` binds it, the database
and the LLM client to the settings. The app factory, the CLI and the root `tasks.py` (for
`huey_consumer tasks.huey`) call it; until then an enqueue fails loudly instead of vanishing.
"""

import atexit
import logging
import os
import threading
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from huey import Huey, crontab
from huey.constants import EmptyData
from huey.storage import BlackHoleStorage, RedisStorage, SqliteStorage

from storyapp import db, feeds, heartbeat, jobs, recovery, retention, synthesis
from storyapp.config import REDIS_SCHEMES, ConfigError, Settings
from storyapp.llm import OllamaLLM
from storyapp.migrations import migrate
from storyapp.models import utcnow
from storyapp.slots import RedisSlots
from storyapp.synthesis import LLM_OPTIONS

log = logging.getLogger(__name__)


class SqliteQueueStorage(SqliteStorage):
    """Huey's SQLite storage with synchronous=NORMAL instead of FULL. In WAL mode that cannot
    corrupt the queue; a power cut (not a crash) can lose the last tasks queued. Those are
    the clusters of a job still running, which the next run plans again. FULL costs an fsync
    per task: 376 enqueues took 0.12 s on this machine's disk against 0.01 s (and FIELD-NOTES
    saw 260 a second on another: 1.4 s)."""

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("pragma synchronous=1")
        return conn

    def pop_data(self, key):
        # Huey pops the task's revoke flag after every task, in an exclusive transaction, and
        # there almost never is one: look first, without the write lock.
        if not self.has_data_for_key(key):
            return EmptyData
        return super().pop_data(key)


class UnconfiguredStorage(BlackHoleStorage):
    def enqueue(self, data, priority=None):
        raise RuntimeError("storyapp's queue is not configured: call storyapp.tasks.configure()")


# No results are stored: jobs and their progress live in the database (FIELD-NOTES).
huey = Huey("storyapp", results=False, storage_class=UnconfiguredStorage)

_state: dict = {"settings": None, "llm": None, "schedule": None}
# Who holds the leases this process takes: the registered worker id in `storyapp worker`,
# host and pid elsewhere (an in-process consumer, a test).
_worker = {"id": f"{heartbeat.HOST}:{os.getpid()}"}
_llm_lock = threading.RLock()


def configure(settings: Settings) -> None:
    """Binds the queue, the database (migrated) and the schedule to `settings`."""
    schedule = parse_schedule(settings.schedule)
    previous, huey.storage = huey.storage, queue_storage(settings.queue_url, settings.queue_name)
    close_queue(previous)
    migrate(db.bind(settings.database_url))
    with _llm_lock:
        close_llm()
        _state.update(settings=settings, schedule=schedule)


def close_queue(storage) -> None:
    """Closes a queue storage's connections: a storage replaced by configure() otherwise left
    its sockets for the garbage collector."""
    if isinstance(storage, RedisStorage):
        storage.pool.disconnect()
    elif isinstance(storage, SqliteStorage):
        storage.close()


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


def queue_storage(url: str, name: str = "storyapp"):
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteQueueStorage(name, filename=str(path.resolve()))
    if parts.scheme in REDIS_SCHEMES:
        try:
            import redis  # noqa: F401
        except ImportError:
            raise ConfigError(
                "STORYAPP_QUEUE_URL is a Redis URL, and Redis needs its client: "
                "pip install 'storyapp[scale]'"
            ) from None
        # Blocking pops: an idle worker thread hears of a new task at once, without polling.
        return RedisStorage(name, url=url, blocking=True)
    raise ConfigError(f"STORYAPP_QUEUE_URL must be sqlite:///… or redis://…, got {url!r}")


def parse_schedule(text: str):
    """A crontab validator for the periodic task, or None for "off"."""
    if text.lower() == "off":
        return None
    fields = text.split()
    if len(fields) != 5:
        raise ConfigError(f"STORYAPP_SCHEDULE must have 5 crontab fields or be 'off': {text!r}")
    try:
        return crontab(*fields)
    except ValueError as exc:
        raise ConfigError(f"STORYAPP_SCHEDULE {text!r}: {exc}") from None


def llm() -> OllamaLLM:
    # One client per process: its per-host slots bound every worker thread together.
    with _llm_lock:
        if _state["llm"] is None:
            s = settings()
            _state["llm"] = OllamaLLM(
                s.ollama_hosts,
                s.model,
                timeout=s.llm_timeout,
                concurrency=s.llm_concurrency,
                options=LLM_OPTIONS,
                slots=shared_slots(s) if s.llm_concurrency_scope == "redis" else None,
            )
        return _state["llm"]


def pending_count() -> int | None:
    """Tasks waiting in the queue; None when the queue cannot be read (/health says why)."""
    try:
        return huey.pending_count()
    except Exception:
        return None


# A slot outlives its request by this much at most (the request itself ends by its timeout):
# then a consumer killed mid-request gives its slots back by itself.
SLOT_LEASE_MARGIN_S = 30.0


def shared_slots(s: Settings) -> RedisSlots:
    """Per-host slots in the queue's Redis, shared by every consumer of the queue."""
    return RedisSlots(
        huey.storage.conn,
        f"storyapp.llm-slots.{s.queue_name}",
        s.ollama_hosts,
        s.llm_concurrency,
        lease_s=s.llm_timeout + SLOT_LEASE_MARGIN_S,
    )


def start_job(hours: float, force: bool) -> tuple[dict, bool]:
    """Requests a job and queues its planning; returns (job, created)."""
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
        cluster_ids = jobs.plan_job(job_id, settings().model, worker=_worker["id"])
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
        jobs.run_cluster(cluster_id, llm(), worker=_worker["id"], lease_s=lease_s)
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


def recover() -> None:
    """Queues again what dead workers held or what was lost (recovery.reclaim)."""
    clusters, job_ids = recovery.reclaim()
    if huey.pending_count() == 0:
        # An empty queue and a job still queued: its planning task was lost (the queue's last
        # writes before a power cut). Planning twice is harmless: only one run starts it.
        job_ids += recovery.forgotten_jobs()
    for job_id in job_ids:
        plan_job(job_id)
    for cluster_id in clusters:
        synthesize_cluster(cluster_id)
    if clusters or job_ids:
        log.warning(
            "recovered %d clusters and %d jobs from dead workers or lost tasks",
            len(clusters),
            len(job_ids),
        )


class Supervisor(threading.Thread):
    """Beside a consumer: registers the worker, beats its heart, recovers what others lost,
    and on the way out hands back whatever this worker still holds."""

    def __init__(self):
        super().__init__(name="storyapp-supervisor", daemon=True)
        self._stop_event = threading.Event()

    def start(self) -> None:
        _worker["id"] = heartbeat.register()
        recover()  # a worker starting after a crash picks up the pieces at once
        super().start()

    def run(self) -> None:
        while not self._stop_event.wait(heartbeat.HEARTBEAT_S):
            try:
                heartbeat.beat(_worker["id"])
                recover()
            except Exception:
                log.exception("supervisor: heartbeat or recovery failed; trying again")
            finally:
                db.release()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        handed_back = recovery.retire(_worker["id"])
        for cluster_id in handed_back:
            synthesize_cluster(cluster_id)
        if handed_back:
            log.warning("handed back %d unfinished clusters", len(handed_back))


_supervision = {"supervisor": None, "threads": 0}
_supervision_lock = threading.RLock()


def supervise_consumer() -> None:
    """Runs a Supervisor beside the consumer this process is about to run, whoever runs it
    (`storyapp worker`, or `huey_consumer tasks.huey`): started by the first worker thread,
    before it takes a task (or earlier by `start_supervisor`), stopped after the last one's
    end, or at exit for a consumer stopped at once."""
    huey.on_startup("storyapp-supervisor")(_worker_thread_started)
    huey.on_shutdown("storyapp-supervisor")(_worker_thread_ended)
    atexit.register(stop_supervisor)


def start_supervisor() -> None:
    """Starts this process's Supervisor unless it runs. Raises if it cannot register the
    worker (the database is down): then nothing is left half-started, and the next worker
    thread tries again."""
    with _supervision_lock:
        if _supervision["supervisor"] is None:
            supervisor = Supervisor()
            supervisor.start()
            _supervision["supervisor"] = supervisor


def stop_supervisor() -> None:
    """Stops this process's Supervisor, if it runs: it hands back what the worker still holds.
    A second caller waits for the first to finish: the process must not exit mid-way."""
    with _supervision_lock:
        supervisor, _supervision["supervisor"] = _supervision["supervisor"], None
        if supervisor is not None:
            supervisor.stop()


def _worker_thread_started() -> None:
    with _supervision_lock:
        _supervision["threads"] += 1
        start_supervisor()


def _worker_thread_ended() -> None:
    with _supervision_lock:  # held throughout: a thread starting meanwhile finds it stopped
        _supervision["threads"] -= 1
        if _supervision["threads"] == 0:
            stop_supervisor()


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
