"""Server-Sent Events for one job (GET /jobs/<id>/events): `progress` on each change, `done`
with the final job, then the end of the stream.

The consumer may be another process or another machine; the database is what both share, so a
stream polls the job's row (one primary-key read every `POLL_S`) instead of waiting on a broker.

A threaded WSGI server (waitress) gives each open stream one of its threads for as long as it
is open. So streams are bounded: at most `MAX_STREAMS` at once per process (one more gets a 429
and the page falls back to polling), each at most `MAX_STREAM_S` long (then it ends and the
browser's EventSource reconnects by itself, after `RETRY_MS`), and each ends within a poll of
the client leaving when the server can tell (waitress with `channel_request_lookahead`), or at
the next heartbeat write when it cannot.
"""

import json
import threading
import time
from collections.abc import Callable, Iterator

from storyapp.db import database
from storyapp.models import Job

POLL_S = 0.5
# A comment line when nothing else was sent for this long: proxies keep the connection open,
# and a write to a client that left fails, which ends the stream on any server.
HEARTBEAT_S = 15.0
MAX_STREAM_S = 600.0
MAX_STREAMS = 4  # of waitress's 8 threads: the other 4 keep answering the API
RETRY_MS = 2000
# Fields that change on every read of a running job; a change in them alone is not news.
_CLOCK_FIELDS = ("duration_s", "eta_s")


class StreamSlots:
    """How many streams this process has open, and how many it may."""

    def __init__(self, limit: int):
        self.limit = limit
        self.open = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.open >= self.limit:
                return False
            self.open += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.open -= 1


def job_events(job_id: str, disconnected: Callable[[], bool] | None = None) -> Iterator[str]:
    # The request's connection is closed before the server iterates the stream: keep one of
    # our own, in the server's thread, for the life of the stream.
    own_connection = database.is_closed()
    if own_connection:
        database.connect()
    try:
        yield f"retry: {RETRY_MS}\n\n"
        started = last_sent = time.monotonic()
        shown = None
        while True:
            job = Job.get_or_none(Job.id == job_id)
            if job is None:
                return
            data = job.to_dict()
            if data["status"] not in Job.ACTIVE:
                yield message("done", data)
                return
            now = time.monotonic()
            news = {k: v for k, v in data.items() if k not in _CLOCK_FIELDS}
            if news != shown:
                shown = news
                yield message("progress", data)
                last_sent = now
            elif now - last_sent >= HEARTBEAT_S:
                yield ": heartbeat\n\n"
                last_sent = now
            if now - started >= MAX_STREAM_S or (disconnected is not None and disconnected()):
                return
            time.sleep(POLL_S)
    finally:
        if own_connection:
            database.close()


def message(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
