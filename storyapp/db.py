"""The database handle, bound late: SQLite with the pragmas that fit a threaded worker, or
PostgreSQL through a connection pool. Writes go through `transaction()`, and the few that must
not overlap with another process's take a named `lock()`."""

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import peewee
from peewee import (
    Alias,
    Database,
    DatabaseProxy,
    Field,
    Insert,
    PostgresqlDatabase,
    SqliteDatabase,
    Value,
)
from playhouse.db_url import connect
from playhouse.pool import PooledDatabase

from storyapp.config import POSTGRES_SCHEMES, ConfigError

# Models bind to this proxy; the app factory, the worker and the tests point it at a database.
database = DatabaseProxy()

SQLITE_PRAGMAS = {
    "busy_timeout": 15_000,  # ms a writer waits for the lock before "database is locked"
    # WAL (set once per file: _use_wal) with synchronous=NORMAL cannot corrupt the file; a
    # power cut may lose the last commits, which the next run redoes (stories are rebuilt
    # from articles and the cache).
    "synchronous": 1,
    "foreign_keys": 1,
    "cache_size": -16_000,  # KiB
}

# A pooled PostgreSQL connection is handed back after each task and request (`release()`)
# and reused; one opened more than `stale_timeout` seconds ago is closed instead, so none lives
# forever. No cap by default (peewee's is 20): each thread holds at most one connection, so a
# process needs as many as its threads, and `--workers 32` must not fail for want of one.
# The URL's query string overrides these: `?max_connections=40&timeout=10&stale_timeout=600`.
POOL_DEFAULTS = {"max_connections": 0, "stale_timeout": 300}


def open_database(url: str) -> Database:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            _use_wal(path)
        # BEGIN IMMEDIATE takes the write lock up front: a deferred transaction that reads and
        # then writes can fail at once with "database is locked" instead of waiting its turn.
        return connect(url, pragmas=SQLITE_PRAGMAS, lock_type="IMMEDIATE")
    if scheme in POSTGRES_SCHEMES:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError(
                "STORYAPP_DATABASE_URL is a PostgreSQL URL, and PostgreSQL needs psycopg: "
                "pip install 'storyapp[scale]'"
            ) from None
        # Plain postgresql:// (the contract's spelling) gets the pool too: every web request
        # and task would otherwise open a connection of its own.
        pooled = url.replace(f"{scheme}://", f"{scheme.removesuffix('+pool')}+pool://", 1)
        given = dict(parse_qsl(urlsplit(url).query))
        return connect(pooled, **{k: v for k, v in POOL_DEFAULTS.items() if k not in given})
    raise ConfigError(
        f"STORYAPP_DATABASE_URL must be sqlite:///… or postgresql://…, got {scheme}://…"
    )


def _use_wal(path: str, wait_s: float = 15.0) -> None:
    """Puts the file in WAL mode (readers never wait for the one writer); the mode is the
    file's, kept across connections. The switch fails at once with "database is locked" when
    another process is switching or writing (no busy timeout applies to it), as when a web
    process and a worker start together on a new file: so it is tried again."""
    deadline = time.monotonic() + wait_s
    while True:
        conn = sqlite3.connect(path, timeout=wait_s)
        try:
            conn.execute("PRAGMA journal_mode=wal")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
        finally:
            conn.close()


def bind(url: str) -> Database:
    """Points the models at `url`; binding the same URL again keeps the open database."""
    current = database.obj
    if current is not None and getattr(current, "storyapp_url", None) == url:
        return current
    if current is not None:
        _close_everywhere(current)
    db = open_database(url)
    db.storyapp_url = url
    database.initialize(db)
    return db


def _close_everywhere(db: Database) -> None:
    # A pool keeps the connections of other threads (a stopped consumer's); closing only this
    # thread's would leave them open until the garbage collector finds them.
    if isinstance(db, PooledDatabase):
        db.close_all()
    else:
        db.close()


def release() -> None:
    """Hands this thread's connection back to the pool, after a task or a supervisor round: a
    broken one is then replaced on next use instead of failing every later query. SQLite keeps
    its per-thread connection: opening one (and setting its pragmas) costs more than a task's
    queries."""
    if isinstance(database.obj, PooledDatabase) and not database.is_closed():
        database.close()


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


def lock(name: str, db: Database | None = None) -> None:
    """Inside a transaction: waits until no other transaction holding `name` is open, and holds
    it until this one ends. SQLite's write transactions exclude each other already (one writer,
    BEGIN IMMEDIATE); PostgreSQL's run side by side at READ COMMITTED, so there this takes a
    transaction-scoped advisory lock, which no crash can leave behind."""
    db = database.obj if db is None else db
    if isinstance(db, PostgresqlDatabase):
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (key,))


class Param:
    """A value a `Prepared` statement is given each time it runs, by name, converted as
    `field` converts it (a JSON field's list to text); with `index`, that item of a list."""

    def __init__(self, name: str, field: Field | None = None, index: int | None = None):
        self.name = name
        self.field = field
        self.index = index

    def bind(self, values: dict):
        value = values[self.name]
        if self.index is not None:
            value = value[self.index]
        return value if self.field is None else self.field.db_value(value)


def param(name: str, field: Field | None = None) -> Value:
    # Not converted while the SQL is built: a placeholder until the statement runs.
    return Value(Param(name, field), converter=False)


def param_list(name: str, size: int) -> list[Value]:
    """Placeholders for the `size` items of the list given as `name`, for an `IN (...)`."""
    return [Value(Param(name, index=i), converter=False) for i in range(size)]


class Prepared:
    """A peewee query whose SQL is built once per database, then run with new values in its
    `param()`s. Peewee builds the SQL again on every execute, and for the few statements each
    cluster runs (models.py) that cost more than running them: with a zero-latency LLM server,
    1.4 of 2.1 ms per cluster went to building SQL, and the queue moved 112-155 clusters/s
    against 234-286 with these prepared (BENCHMARKS.md). Only the models use it, behind names
    such as JobCluster.settle."""

    def __init__(self, build: Callable):
        self._build = build
        self._compiled: tuple | None = None  # (database, sql, params, columns)

    def _compile(self) -> tuple:
        db = database.obj
        if self._compiled is None or self._compiled[0] is not db:
            query = self._build()
            if isinstance(query, Insert) and db.returning_clause:
                query = query.returning(query.model._meta.primary_key)
            sql, params = db.get_sql_context().sql(query).query()
            # A SELECT's columns: each name, and how its field reads a value back (SQLite
            # keeps datetimes and JSON as text).
            columns = [_reader(c) for c in getattr(query, "selected_columns", None) or []]
            self._compiled = (db, sql, params, columns)
        return self._compiled

    def execute(self, **values):
        db, sql, params, _ = self._compile()
        bound = [p.bind(values) if isinstance(p, Param) else p for p in params]
        return db.execute_sql(sql, bound)

    def execute_many(self, rows: list[dict]) -> None:
        """Runs the statement once per row of values, in one call to the driver."""
        if not rows:
            return
        db, sql, params, _ = self._compile()
        bound = [[p.bind(row) if isinstance(p, Param) else p for p in params] for row in rows]
        with peewee.__exception_wrapper__:  # the driver's errors as peewee's, as execute_sql
            db.cursor().executemany(sql, bound)

    def rowcount(self, **values) -> int:
        return self.execute(**values).rowcount

    def insert(self, **values) -> int:
        """Runs an INSERT into a table with an integer id; returns the new row's id."""
        cursor = self.execute(**values)
        return cursor.fetchone()[0] if self._compiled[0].returning_clause else cursor.lastrowid

    def row(self, **values) -> dict | None:
        """A SELECT's first row, by column name (or alias)."""
        found = self.execute(**values).fetchone()
        if found is None:
            return None
        names = [name for name, _ in self._compiled[3]]
        return dict(zip(names, self._read(found), strict=True))

    def rows(self, **values) -> list[tuple]:
        """A SELECT's rows, as tuples in the order of its columns."""
        return [self._read(found) for found in self.execute(**values).fetchall()]

    def _read(self, found: tuple) -> tuple:
        return tuple(
            value if read is None or value is None else read(value)
            for (_, read), value in zip(self._compiled[3], found, strict=True)
        )


class PreparedIn:
    """A `Prepared` SELECT with an `IN (...)` over a list, whose SQL depends on the list's
    length: `build(size)` builds it with `param_list(name, size)`, and each length is built
    once. `rows` runs it over any list, in slices small enough for every engine."""

    def __init__(self, name: str, build: Callable[[int], object]):
        self._name = name
        self._build = build
        self._by_size: dict[int, Prepared] = {}

    def rows(self, items: list, **values) -> list[tuple]:
        found = []
        for chunk in in_chunks(items):
            size = len(chunk)
            prepared = self._by_size.get(size)
            if prepared is None:
                prepared = self._by_size.setdefault(size, Prepared(partial(self._build, size)))
            found.extend(prepared.rows(**values, **{self._name: chunk}))
        return found


def _reader(column) -> tuple[str, Callable | None]:
    if isinstance(column, Alias):
        field = column.node if isinstance(column.node, Field) else None
        return column._alias, None if field is None else field.python_value
    if isinstance(column, Field):
        return column.name, column.python_value
    # A function such as COUNT: its value as the driver gives it (peewee's Function would
    # answer `.python_value` with a new SQL function of that name).
    return column.name, None


def in_chunks(values: list, size: int = 500):
    """Slices of `values` small enough for one `IN (...)` on every engine."""
    for start in range(0, len(values), size):
        yield values[start : start + size]
