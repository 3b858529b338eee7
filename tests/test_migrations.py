import json
import subprocess
import sys
import time

import pytest
from peewee import PostgresqlDatabase, SqliteDatabase
from playhouse.pool import PooledPostgresqlDatabase

from storyapp import db as storyapp_db
from storyapp.config import ConfigError
from storyapp.db import open_database
from storyapp.migrations import MIGRATIONS, migrate
from storyapp.models import TABLES, Migration


@pytest.fixture
def database(backend):
    db = open_database(backend.database_url)
    yield db
    db.close_all() if isinstance(db, PooledPostgresqlDatabase) else db.close()


@pytest.mark.backends
def test_a_new_database_gets_every_table_once(database):
    assert migrate(database) == [m.__name__ for m in MIGRATIONS]
    assert set(database.get_tables()) >= {m._meta.table_name for m in TABLES}
    assert migrate(database) == []  # safe to run twice


@pytest.mark.backends
def test_pending_migrations_run_once_in_order(database):
    migrate(database)
    ran = []

    def m002_add_column(db):
        db.execute_sql("ALTER TABLE story ADD COLUMN mood TEXT")
        ran.append("m002")

    def m003_index(db):
        db.execute_sql("CREATE INDEX story_mood ON story (mood)")
        ran.append("m003")

    upgraded = [*MIGRATIONS, m002_add_column, m003_index]
    assert migrate(database, upgraded) == ["m002_add_column", "m003_index"]
    assert migrate(database, upgraded) == []
    assert ran == ["m002", "m003"]
    assert "mood" in {c.name for c in database.get_columns("story")}
    with database.bind_ctx([Migration]):
        assert Migration.select().count() == len(MIGRATIONS) + 2


MIGRATE_AT = """
import json, sys, time
from storyapp.db import open_database
from storyapp.migrations import migrate
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
print(json.dumps(migrate(open_database(sys.argv[1]))))
"""


@pytest.mark.backends
def test_processes_starting_at_once_migrate_once(backend):
    # Four processes open a new database and migrate it at the same moment.
    at = str(time.time() + 2.0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATE_AT, backend.database_url, at],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in results]
    applied = sorted((json.loads(out) for out, _ in results), key=len)
    assert applied == [[], [], [], [m.__name__ for m in MIGRATIONS]]


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    db = open_database(f"sqlite:///{tmp_path}/app.db")
    assert isinstance(db, SqliteDatabase)
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    db.close()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+pool"])
def test_postgresql_urls_get_a_pool_without_a_cap(scheme):
    db = open_database(f"{scheme}://someone@db.example:5433/stories?sslmode=require")
    assert isinstance(db, PooledPostgresqlDatabase)
    assert (db._max_connections, db._stale_timeout) == (0, 300)
    assert db.connect_params == {
        "user": "someone",
        "host": "db.example",
        "port": 5433,
        "sslmode": "require",
    }
    assert db.database == "stories"


def test_the_url_can_size_the_pool():
    db = open_database("postgresql://db.example/stories?max_connections=40&timeout=10")
    assert (db._max_connections, db._wait_timeout, db._stale_timeout) == (40, 10, 300)


def test_an_unknown_database_url_is_a_config_error():
    with pytest.raises(ConfigError, match="STORYAPP_DATABASE_URL must be sqlite"):
        open_database("mysql://db.example/stories")


@pytest.mark.backends
def test_the_app_binds_the_configured_engine(configured, backend):
    engine = PostgresqlDatabase if backend.name == "scale" else SqliteDatabase
    assert isinstance(storyapp_db.database.obj, engine)


@pytest.mark.backends
def test_a_database_from_before_leases_is_upgraded(database):
    from storyapp.migrations import m001_initial

    migrate(database, [m001_initial])
    # Back to the tables as m001 made them before leases existed.
    for table, column in [
        ("job", "planner"),
        ("jobcluster", "lease_holder"),
        ("jobcluster", "leased_at"),
        ("jobcluster", "lease_until"),
    ]:
        if column == "lease_holder":
            database.execute_sql("DROP INDEX IF EXISTS jobcluster_lease_holder")
        database.execute_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
    database.execute_sql("DROP TABLE worker")
    assert migrate(database) == ["m003_worker_leases"]
    assert "lease_until" in {c.name for c in database.get_columns("jobcluster")}
    assert "worker" in database.get_tables()
