"""Which consumer processes are alive. Each has a row (models.Worker) that it stamps every
`HEARTBEAT_S` with its own CPU time and memory: a process can read only its own, and the figures
show them. One silent for `DEAD_AFTER_S`, or whose process is gone from this host, is dead:
recovery.py hands back what it held."""

import os
import socket
from datetime import datetime, timedelta

from prometheus_client import ProcessCollector

from storyapp.db import transaction
from storyapp.models import Worker, utcnow

HEARTBEAT_S = 2.0
# A worker silent this long is dead (one on this host is known dead sooner: its pid is gone).
DEAD_AFTER_S = 30.0

HOST = socket.gethostname()


def register() -> str:
    now = utcnow()
    worker_id = f"{HOST}:{os.getpid()}:{now:%Y%m%dT%H%M%S.%f}"
    with transaction():
        Worker.create(id=worker_id, host=HOST, pid=os.getpid(), started_at=now, heartbeat_at=now)
    return worker_id


def beat(worker_id: str, llm_hosts: str | None = None) -> None:
    """Says the worker is alive, with its process's figures and, when given, what it last found
    of its LLM hosts (llmhealth.HostChecks.report)."""
    figures = process_figures()
    own = {
        "cpu_s": figures.get("cpu_s"),
        "resident_memory_bytes": figures.get("resident_memory_bytes"),
    }
    if llm_hosts is not None:
        own["llm_hosts"] = llm_hosts
    with transaction():
        now = utcnow()
        updated = Worker.update(heartbeat_at=now, **own).where(Worker.id == worker_id).execute()
        if not updated:  # declared dead while stalled (a long GC pause, a suspended VM)
            Worker.create(
                id=worker_id, host=HOST, pid=os.getpid(), started_at=now, heartbeat_at=now, **own
            )


def alive(now: datetime | None = None):
    """The workers whose heartbeat is recent."""
    since = (now or utcnow()) - timedelta(seconds=DEAD_AFTER_S)
    return Worker.select().where(Worker.heartbeat_at >= since).order_by(Worker.started_at)


def dead(now: datetime) -> list[str]:
    found = []
    for worker in Worker.select():
        silent = (now - worker.heartbeat_at).total_seconds() > DEAD_AFTER_S
        if silent or (worker.host == HOST and not _pid_alive(worker.pid)):
            found.append(worker.id)
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


# This process's own CPU and memory, read by prometheus_client's collector (the same one
# /metrics exposes for the web process).
_PROCESS_FIGURES = {
    "process_cpu_seconds_total": "cpu_s",
    "process_resident_memory_bytes": "resident_memory_bytes",
    "process_open_fds": "open_fds",
}


def process_figures() -> dict:
    found = {}
    for family in ProcessCollector(registry=None).collect():
        for sample in family.samples:
            if sample.name in _PROCESS_FIGURES:
                found[_PROCESS_FIGURES[sample.name]] = sample.value
    return found
