from pathlib import Path

from peewee import SqliteDatabase

from storyapp.db import open_database
from storyapp.migrations import MIGRATIONS, migrate
from storyapp.models import (
    TABLES,
    Feed,
    JobCluster,
    Migration,
    Story,
    StoryArticle,
    StoryVersion,
)


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

    def m901_add_column(database):
        database.execute_sql("ALTER TABLE story ADD COLUMN mood TEXT")
        ran.append("m901")

    def m902_index(database):
        database.execute_sql("CREATE INDEX story_mood ON story (mood)")
        ran.append("m902")

    upgraded = [*MIGRATIONS, m901_add_column, m902_index]
    assert migrate(db, upgraded) == ["m901_add_column", "m902_index"]
    assert migrate(db, upgraded) == []
    assert ran == ["m901", "m902"]
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


M001_SCHEMA = Path(__file__).with_name("m001_schema.sql")


def schema_of(db) -> dict:
    """Every table's columns, indexes and foreign keys, as SQLite reports them."""
    return {
        table: (
            sorted((c.name, c.data_type, c.null, c.primary_key) for c in db.get_columns(table)),
            sorted((i.name, tuple(i.columns), i.unique) for i in db.get_indexes(table)),
            sorted((f.column, f.dest_table, f.dest_column) for f in db.get_foreign_keys(table)),
        )
        for table in db.get_tables()
    }


def test_a_database_made_by_m001_upgrades_and_keeps_its_data(tmp_path):
    db = open_database(f"sqlite:///{tmp_path}/old.db")
    db.connection().executescript(M001_SCHEMA.read_text())
    db.connection().executescript(
        "INSERT INTO migration VALUES ('m001_initial', '2026-01-01 00:00:00');"
        "INSERT INTO article (id, url, title, summary, content, source, published_at,"
        " ingested_at, content_hash) VALUES"
        " (1, 'https://a.example/1', 'One', '', '', '', '2026-01-01', '2026-01-01', 'h1'),"
        " (2, 'https://a.example/2', 'Two', '', '', '', '2026-01-01', '2026-01-01', 'h2');"
        "INSERT INTO story VALUES (7, 'k7', 'Quake', 'It shook.', '[\"Homes damaged\"]',"
        " 'llm', 'llama3.1:8b', 2, '2026-01-01 01:00:00', '2026-01-01 02:00:00');"
        "INSERT INTO storyarticle (story_id, article_id) VALUES (7, 1), (7, 2);"
        "INSERT INTO job (id, status, time_window_hours, force, done, llm, cached, fallback,"
        " reused, single, failed, created_at) VALUES"
        " ('j1', 'succeeded', 24, 0, 1, 1, 0, 0, 0, 0, 0, '2026-01-01 02:00:00');"
        "INSERT INTO jobcluster (job_id, cluster_key, article_ids, status, story_id)"
        " VALUES ('j1', 'k7', '[1, 2]', 'done', 7);"
    )

    assert migrate(db) == ["m002_feeds_and_story_versions", "m003_worker_leases"]
    assert migrate(db) == []

    fresh = open_database(f"sqlite:///{tmp_path}/fresh.db")
    migrate(fresh)
    assert schema_of(db) == schema_of(fresh)  # the same schema as a database made today
    fresh.close()

    with db.bind_ctx(TABLES):
        story = Story.get_by_id(7)
        assert (story.version, story.title, story.key_points) == (1, "Quake", ["Homes damaged"])
        # Adding the column must not rebuild the story table: that would cascade to its links.
        assert StoryArticle.select().where(StoryArticle.story == 7).count() == 2
        assert JobCluster.get().story_id == 7
        (first,) = StoryVersion.select().where(StoryVersion.story == 7)
        assert first.to_dict() == {
            "version": 1,
            "title": "Quake",
            "summary": "It shook.",
            "key_points": ["Homes damaged"],
            "article_count": 2,
            "article_ids": [1, 2],
            "generator": "llm",
            "model": "llama3.1:8b",
            "created_at": "2026-01-01T02:00:00Z",
        }
        assert Feed.select().count() == 0
    db.close()
