"""The database handle, bound late, and the pragmas that make SQLite fit a threaded worker."""

import threading
from contextlib import contextmanager
from pathlib import Path

from peewee import Database, DatabaseProxy, SqliteDatabase
from playhouse.db_url import connect

# Models bind to this proxy; the app factory, the worker and the tests point it at a database.
database = DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never wait for the one writer
    # WAL with synchronous=NORMAL cannot corrupt the file; a power cut may lose the last
    # commits, which the next run redoes (stories are rebuilt from articles and the cache).
    "synchronous": 1,
    "busy_timeout": 15_000,  # ms a writer waits for the lock before "database is locked"
    "foreign_keys": 1,
    "cache_size": -16_000,  # KiB
}


def open_database(url: str) -> Database:
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # BEGIN IMMEDIATE takes the write lock up front: a deferred transaction that reads and
        # then writes can fail at once with "database is locked" instead of waiting its turn.
        return connect(url, pragmas=SQLITE_PRAGMAS, lock_type="IMMEDIATE")
    return connect(url)


def bind(url: str) -> Database:
    """Points the models at `url`; binding the same URL again keeps the open database."""
    current = database.obj
    if current is not None and getattr(current, "storyapp_url", None) == url:
        return current
    if current is not None:
        current.close()
    db = open_database(url)
    db.storyapp_url = url
    database.initialize(db)
    return db


# SQLite has one writer at a time. Threads of one process queue for it on this lock, which
# hands over at once, instead of in SQLite's busy handler, which sleeps in steps of up to
# 100 ms: with 16 worker threads that sleeping was most of a cluster's time.
_sqlite_writer = threading.RLock()


@contextmanager
def transaction():
    """A write transaction: use it for every write, one statement or many. Yields peewee's
    transaction, so the caller can roll it back."""
    if isinstance(database.obj, SqliteDatabase):
        with _sqlite_writer, database.atomic() as txn:
            yield txn
    else:
        with database.atomic() as txn:
            yield txn


def in_chunks(values: list, size: int = 500):
    """Slices of `values` small enough for one `IN (...)` on every engine."""
    for start in range(0, len(values), size):
        yield values[start : start + size]
