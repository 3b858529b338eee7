from peewee import SqliteDatabase

from storyapp.db import open_database
from storyapp.migrations import MIGRATIONS, migrate
from storyapp.models import TABLES, Migration


def test_a_new_database_gets_every_table_once(tmp_path):
    db = open_database(f"sqlite:///{tmp_path}/new/app.db")
    assert migrate(db) == [m.__name__ for m in MIGRATIONS]
    assert set(db.get_tables()) >= {m._meta.table_name for m in TABLES}
    assert migrate(db) == []  # safe to run twice
    db.close()


def test_pending_migrations_run_once_in_order(tmp_path):
    db = open_database(f"sqlite:///{tmp_path}/app.db")
    migrate(db)
    ran = []

    def m002_add_column(database):
        database.execute_sql("ALTER TABLE story ADD COLUMN mood TEXT")
        ran.append("m002")

    def m003_index(database):
        database.execute_sql("CREATE INDEX story_mood ON story (mood)")
        ran.append("m003")

    upgraded = [*MIGRATIONS, m002_add_column, m003_index]
    assert migrate(db, upgraded) == ["m002_add_column", "m003_index"]
    assert migrate(db, upgraded) == []
    assert ran == ["m002", "m003"]
    assert "mood" in {c.name for c in db.get_columns("story")}
    with db.bind_ctx([Migration]):
        assert Migration.select().count() == len(MIGRATIONS) + 2
    db.close()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    db = open_database(f"sqlite:///{tmp_path}/app.db")
    assert isinstance(db, SqliteDatabase)
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    db.close()


def test_a_database_from_before_leases_is_upgraded(tmp_path):
    from storyapp.migrations import m001_initial

    db = open_database(f"sqlite:///{tmp_path}/old.db")
    migrate(db, [m001_initial])
    # Back to the tables as m001 made them before leases existed.
    for table, column in [
        ("job", "planner"),
        ("jobcluster", "lease_holder"),
        ("jobcluster", "leased_at"),
        ("jobcluster", "lease_until"),
    ]:
        if column == "lease_holder":
            db.execute_sql("DROP INDEX IF EXISTS jobcluster_lease_holder")
        db.execute_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.execute_sql("DROP TABLE worker")
    assert migrate(db) == ["m003_worker_leases"]
    assert "lease_until" in {c.name for c in db.get_columns("jobcluster")}
    assert "worker" in db.get_tables()
    db.close()
