"""The Huey queue: the one `huey` instance and its storage, SQLite or Redis.

`huey` exists at import so the tasks can register on it; `bind()` points it at the settings'
storage (tasks.configure calls it). Until then an enqueue fails loudly instead of vanishing.
"""

from pathlib import Path
from urllib.parse import urlsplit

from huey import Huey
from huey.constants import EmptyData
from huey.storage import BlackHoleStorage, RedisStorage, SqliteStorage

from storyapp.config import REDIS_SCHEMES, ConfigError


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


def bind(url: str, name: str) -> None:
    """Points the queue at the storage `url` names, and closes the one it had."""
    previous, huey.storage = huey.storage, queue_storage(url, name)
    close_queue(previous)


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


def close_queue(storage) -> None:
    """Closes a queue storage's connections: a storage replaced by bind() otherwise left its
    sockets for the garbage collector."""
    if isinstance(storage, RedisStorage):
        storage.pool.disconnect()
    elif isinstance(storage, SqliteStorage):
        storage.close()


def pending_count() -> int | None:
    """Tasks waiting in the queue; None when the queue cannot be read (/health says why)."""
    try:
        return huey.pending_count()
    except Exception:
        return None


def redis_connection():
    """The queue's Redis client, for what consumers of one queue share beside it (the LLM
    slots: config.py lets that scope be chosen only with a Redis queue)."""
    return huey.storage.conn
