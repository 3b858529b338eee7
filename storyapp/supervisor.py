"""The supervisor beside each consumer, whoever runs it (`storyapp worker`, or `huey_consumer
tasks.huey`): it registers the worker, beats its heart (heartbeat.py), queues again what dead
workers held or what the queue lost (recovery.py), and on the way out hands back whatever this
worker still holds. It is a thread, started and stopped by the consumer's worker threads."""

import atexit
import logging
import threading

from storyapp import db, heartbeat, llmhealth, recovery, tasks
from storyapp.queue import huey

log = logging.getLogger(__name__)


def recover() -> None:
    """Queues again what dead workers held or what was lost (recovery.reclaim)."""
    clusters, job_ids = recovery.reclaim()
    if huey.pending_count() == 0:
        # An empty queue and a job still queued: its planning task was lost (the queue's last
        # writes before a power cut). Planning twice is harmless: only one run starts it.
        job_ids += recovery.forgotten_jobs()
    for job_id in job_ids:
        tasks.plan_job(job_id)
    for cluster_id in clusters:
        tasks.synthesize_cluster(cluster_id)
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
        self._llm_hosts = llmhealth.HostChecks()

    def start(self) -> None:
        # The jobs no worker was alive to finish have failed, as readers were shown: recorded
        # before this worker registers, as its heartbeat would make them look attended.
        recovery.end_orphans()
        tasks.worker["id"] = heartbeat.register()
        recover()  # a worker starting after a crash picks up the pieces at once
        super().start()

    def run(self) -> None:
        while True:
            self._check_llm_host()
            if self._stop_event.wait(heartbeat.HEARTBEAT_S):
                break
            try:
                heartbeat.beat(tasks.worker["id"], self._llm_hosts.report())
                recover()
            except Exception:
                log.exception("supervisor: heartbeat or recovery failed; trying again")
            finally:
                db.release()

    def _check_llm_host(self) -> None:
        # Apart from the beat: a check that fails must not stop the worker looking alive.
        try:
            self._llm_hosts.check_next(tasks.llm())
        except Exception:
            log.exception("supervisor: checking an LLM host failed; trying again")

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        handed_back = recovery.retire(tasks.worker["id"])
        for cluster_id in handed_back:
            tasks.synthesize_cluster(cluster_id)
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
