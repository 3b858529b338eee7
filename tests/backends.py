"""The engines the tests run on: SQLite files (the embedded default), or PostgreSQL for the data
and Redis for the queue (the "scale" backend), each test in a schema and a queue of its own."""

import itertools
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BACKENDS = ("sqlite", "scale")
POSTGRES_URL = os.environ.get(
    "STORYAPP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("STORYAPP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Backend:
    name: str
    database_url: str
    # The settings that point storyapp at it, for Settings.from_env and for subprocesses.
    env: dict[str, str]

    @classmethod
    def sqlite(cls, tmp_path: Path) -> "Backend":
        # What the settings default to with STORYAPP_DATA_DIR=tmp_path/data.
        return cls("sqlite", f"sqlite:///{tmp_path / 'data'}/storyapp.db", {})


class ScaleServices:
    """A PostgreSQL database made for the test session, dropped at its end, and Redis. Each
    test gets a schema of that database and a queue name; its keys and schema go after it."""

    def __init__(self):
        self.token = f"storyapptest{os.getpid()}{uuid.uuid4().hex[:6]}"
        self._tests = itertools.count(1)
        self.redis = None

    def start(self) -> str | None:
        """Makes the session's database; returns why it cannot, or None."""
        try:
            import psycopg
            import redis
        except ImportError as exc:
            return f"{exc.name} is not installed (pip install -e '.[dev]')"
        try:
            self.redis = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
            self.redis.ping()
        except redis.RedisError as exc:
            return f"Redis at {REDIS_URL} does not answer: {exc}"
        try:
            with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3) as conn:
                conn.execute(f"CREATE DATABASE {self.token}")
        except psycopg.Error as exc:
            return f"PostgreSQL at {POSTGRES_URL} does not answer: {exc}"
        self.database_url = urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{self.token}"))
        return None

    def stop(self) -> None:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.token} WITH (FORCE)")
        self.redis.close()

    def sql(self, statement: str, params=()) -> list[tuple]:
        """One statement on the session's database, outside storyapp's own connections."""
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    @contextmanager
    def for_test(self):
        from storyapp import db

        # Fixed width: no test's name is the prefix of another's, for the key match below.
        name = f"{self.token}t{next(self._tests):05d}"
        self.sql(f"CREATE SCHEMA {name}")
        query = f"application_name={name}&options=-csearch_path%3D{name}"
        url = f"{self.database_url}?{query}"
        env = {
            "STORYAPP_DATABASE_URL": url,
            "STORYAPP_QUEUE_URL": REDIS_URL,
            "STORYAPP_QUEUE_NAME": name,
        }
        try:
            yield Backend("scale", url, env)
        finally:
            if getattr(db.database.obj, "storyapp_url", None) == url:
                db.database.obj.close_all()  # the connections of every thread of this process
            # A worker process killed mid-test may have left its connection behind.
            self.sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            self.sql(f"DROP SCHEMA {name} CASCADE")
            keys = list(self.redis.scan_iter(match=f"*{name}*", count=1000))
            if keys:
                self.redis.delete(*keys)
