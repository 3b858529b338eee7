import json
import os
import subprocess
import sys
import threading
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import pytest
from conftest import init
from peewee import PostgresqlDatabase, SqliteDatabase
from playhouse import migrate as schema
from playhouse.pool import PooledPostgresqlDatabase
from workers import wait_until

from storyapp import db as storyapp_db
from storyapp import ranking
from storyapp.config import ConfigError
from storyapp.db import open_database
from storyapp.migrations import MIGRATIONS, migrate
from storyapp.models import (
    TABLES,
    Feed,
    Job,
    JobCluster,
    LLMCall,
    Migration,
    Story,
    StoryArticle,
    StoryVersion,
    Worker,
)
from storyapp.story import StoryText


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

    def m901_add_column(db):
        db.execute_sql("ALTER TABLE story ADD COLUMN mood TEXT")
        ran.append("m901")

    def m902_index(db):
        db.execute_sql("CREATE INDEX story_mood ON story (mood)")
        ran.append("m902")

    upgraded = [*MIGRATIONS, m901_add_column, m902_index]
    assert migrate(database, upgraded) == ["m901_add_column", "m902_index"]
    assert migrate(database, upgraded) == []
    assert ran == ["m901", "m902"]
    assert "mood" in {c.name for c in database.get_columns("story")}
    with database.bind_ctx([Migration]):
        assert Migration.select().count() == len(MIGRATIONS) + 2


@pytest.mark.backends
def test_m014_gives_the_jobs_a_note(database):
    migrate(database)
    # As a database of before m014: no note column, and a job in it.
    database.execute_sql("ALTER TABLE job DROP COLUMN note")
    database.execute_sql("DELETE FROM migration WHERE name = 'm014_job_note'")
    database.execute_sql(
        "INSERT INTO job (id, status, time_window_hours, force, done, llm, cached, fallback,"
        " reused, single, failed, upgraded, created_at) VALUES"
        " ('j1', 'succeeded', 24, false, 0, 0, 0, 0, 0, 0, 0, 0, '2026-01-01 02:00:00')"
    )
    assert migrate(database) == ["m014_job_note"]
    with database.bind_ctx(TABLES):
        assert Job.get_by_id("j1").to_dict()["note"] is None
        Job.update(note="no article in the window").where(Job.id == "j1").execute()
        assert Job.get_by_id("j1").note == "no article in the window"


def test_m015_gives_registered_feeds_a_title_and_a_site(database):
    migrate(database)
    # Back to the schema before m015, with a feed registered then.
    migrator = schema.SchemaMigrator.from_database(database)
    schema.migrate(migrator.drop_column("feed", "title"), migrator.drop_column("feed", "site_url"))
    with database.bind_ctx([Migration]):
        Migration.delete().where(Migration.name == "m015_feed_titles").execute()
    database.execute_sql(
        "INSERT INTO feed (url, created_at) VALUES ('https://a.example/f', '2026-01-01')"
    )

    assert migrate(database) == ["m015_feed_titles"]
    with database.bind_ctx(TABLES):
        feed = Feed.get()
        assert (feed.url, feed.title, feed.site_url) == ("https://a.example/f", None, None)
        Feed.update(title="A Wire", site_url="https://a.example/").execute()
        assert Feed.get().to_dict()["title"] == "A Wire"


# Opens the database, waits for the test's word to migrate, and says when it asks for the
# migration lock and when it holds it; the holder keeps it until the test's next word.
MIGRATE_WHEN_TOLD = """
import json, sys
from peewee import SqliteDatabase
from storyapp import migrations
from storyapp.db import open_database

def say(line):
    print(line, flush=True)

database = open_database(sys.argv[1])
if isinstance(database, SqliteDatabase):
    # SQLite's lock is the one writer's, asked for as the transaction begins (BEGIN IMMEDIATE).
    database.connect()
    database.connection().set_trace_callback(lambda sql: sql.startswith("BEGIN") and say("asking"))
lock = migrations.lock

def lock_and_hold(name, db):
    if not isinstance(db, SqliteDatabase):
        say("asking")  # PostgreSQL's is an advisory lock
    lock(name, db)
    say("holding")
    sys.stdin.readline()

migrations.lock = lock_and_hold
sys.stdin.readline()
say(json.dumps(migrations.migrate(database)))
"""


@pytest.mark.backends
def test_m012_gives_the_workers_their_llm_hosts_and_keeps_them(database):
    # A database as it stood before m012: made today, less the column.
    before = [m for m in MIGRATIONS if m.__name__ != "m012_worker_llm_hosts"]
    migrate(database, before)
    database.execute_sql("ALTER TABLE worker DROP COLUMN llm_hosts")
    now = datetime(2026, 1, 1, 6)
    with database.bind_ctx(TABLES):
        database.execute_sql(
            "INSERT INTO worker (id, host, pid, started_at, heartbeat_at) VALUES "
            "('w1', 'box', 7, %s, %s)" % ((database.param,) * 2),
            (now, now),
        )
        assert migrate(database) == ["m012_worker_llm_hosts"]
        assert Worker.get_by_id("w1").llm_hosts is None
        Worker.update(llm_hosts='{"http://a:11434": {}}').execute()
        assert Worker.get_by_id("w1").llm_hosts == '{"http://a:11434": {}}'
        assert migrate(database) == []


@pytest.mark.backends
def test_processes_starting_at_once_migrate_once(backend):
    # Four processes open a new database and migrate it at once: the first to take the lock
    # holds it until the test has seen the three others ask for it.
    command = [sys.executable, "-c", MIGRATE_WHEN_TOLD, backend.database_url]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with ExitStack() as stack:
        procs = [
            stack.enter_context(subprocess.Popen(command, **pipes, text=True)) for _ in range(4)
        ]
        stack.callback(lambda: [p.kill() for p in procs])  # first, if the test fails
        said: list[list[str]] = [[] for _ in procs]
        readers = [
            threading.Thread(target=lambda p=p, lines=lines: lines.extend(p.stdout))
            for p, lines in zip(procs, said, strict=True)
        ]
        for t in readers:
            t.start()

        def tell_all():
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()

        tell_all()
        wait_until(
            lambda: (
                sum("holding\n" in lines for lines in said) == 1
                and all("asking\n" in lines for lines in said)
            ),
            what="one process to hold the migration lock and the three others to ask for it",
        )
        tell_all()  # the holder goes on, and each of the others when its turn comes
        codes = [p.wait(timeout=60) for p in procs]
        for t in readers:
            t.join()
        assert codes == [0] * 4, [p.stderr.read() for p in procs]
    applied = sorted((json.loads(lines[-1]) for lines in said), key=len)
    assert applied == [[], [], [], [m.__name__ for m in MIGRATIONS]]


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
        " (1, 'https://a.example/1', 'One', '', '', 'Coast Wire', '2026-01-01 06:00:00',"
        " '2026-01-01', 'h1'),"
        " (2, 'https://a.example/2', 'Two', '', '', 'coast  wire', '2026-01-01 09:30:00',"
        " '2026-01-01', 'h2');"
        "INSERT INTO story VALUES (7, 'k7', 'Quake', 'It shook.', '[\"Homes damaged\"]',"
        " 'llm', 'llama3.1:8b', 2, '2026-01-01 01:00:00', '2026-01-01 02:00:00');"
        "INSERT INTO storyarticle (story_id, article_id) VALUES (7, 1), (7, 2);"
        "INSERT INTO job (id, status, time_window_hours, force, done, llm, cached, fallback,"
        " reused, single, failed, created_at) VALUES"
        " ('j1', 'succeeded', 24, 0, 1, 1, 0, 0, 0, 0, 0, '2026-01-01 02:00:00');"
        "INSERT INTO jobcluster (job_id, cluster_key, article_ids, status, story_id)"
        " VALUES ('j1', 'k7', '[1, 2]', 'done', 7);"
    )

    assert migrate(db) == [
        "m002_feeds_and_story_versions",
        "m003_worker_leases",
        "m004_merged_stories",
        "m005_worker_figures",
        "m006_story_content",
        "m007_cited_stories",
        "m008_story_ranking",
        "m009_upgraded_stories",
        "m010_call_contents",
        "m011_call_queueing",
        "m012_worker_llm_hosts",
        "m013_story_search",
        "m014_job_note",
        "m015_feed_titles",
        "m016_counters",
    ]
    assert migrate(db) == []

    fresh = open_database(f"sqlite:///{tmp_path}/fresh.db")
    migrate(fresh)
    assert schema_of(db) == schema_of(fresh)  # the same schema as a database made today
    fresh.close()

    with db.bind_ctx(TABLES):
        story = Story.get_by_id(7)
        assert story.version == 1
        # Ranked from the articles it has: one outlet, two articles, the later one's time.
        first, last = datetime(2026, 1, 1, 6), datetime(2026, 1, 1, 9, 30)
        assert (story.sources, story.first_seen, story.last_seen) == (1, first, last)
        assert story.rank == ranking.rank_of(1, 2, last)
        assert Job.get_by_id("j1").upgraded == 0
        assert Job.get_by_id("j1").to_dict()["note"] is None
        # The story had no citations: each sentence cites the articles it was written from.
        assert story.content == {
            "title": "Quake",
            "summary": [{"text": "It shook.", "sources": [1, 2]}],
            "key_points": [{"text": "Homes damaged", "sources": [1, 2]}],
        }
        # Adding and dropping columns must not rebuild the story table: that would cascade to
        # its links.
        assert StoryArticle.select().where(StoryArticle.story == 7).count() == 2
        assert JobCluster.get().story_id == 7
        (first,) = StoryVersion.select().where(StoryVersion.story == 7)
        assert first.to_dict() == {
            "version": 1,
            **StoryText.model_validate(story.content).public(),
            "article_count": 2,
            "article_ids": [1, 2],
            "generator": "llm",
            "model": "llama3.1:8b",
            "created_at": "2026-01-01T02:00:00Z",
        }
        assert Feed.select().count() == 0
        # The story written before the search index is found by it.
        assert [s.id for s in Story.filtered(Story.select(), text="home damage")] == [7]
    db.close()


@pytest.mark.backends
def test_m013_indexes_the_stories_there_are_and_keeps_up_with_writes(database):
    # A database as it was before m013: every migration but it applied, and a story in it.
    before = [m for m in MIGRATIONS if m.__name__ != "m013_story_search"]
    with database.bind_ctx(TABLES):
        migrate(database, before)
        if isinstance(database, PostgresqlDatabase):
            database.execute_sql("ALTER TABLE story DROP COLUMN search")
        else:
            for trigger in ("insert", "update", "delete"):
                database.execute_sql(f"DROP TRIGGER storysearch_{trigger}")
            database.execute_sql("DROP TABLE storysearch")
        flood = {
            "title": "Floods close the valley road",
            "summary": [{"text": "Rivers rose overnight.", "sources": [1]}],
            "key_points": [{"text": "Schools shut", "sources": [1]}],
            "category": "environment",
        }
        values = {"content": flood, "generator": "llm", "article_count": 1}
        old = Story.create(cluster_key="k1", **values)

        def found(text):
            return sorted(s.id for s in Story.filtered(Story.select(), text=text))

        assert migrate(database) == ["m013_story_search"]
        assert found("flooding rivers") == [old.id]  # stemmed: flood, river
        assert found("schools") == [old.id]
        assert found("environment") == [old.id]  # the category is text too
        assert found("wildfire") == []

        wildfire = {**flood, "title": "A wildfire"}
        new = Story.create(cluster_key="k2", **{**values, "content": wildfire})
        assert found("wildfire") == [new.id]
        Story.update(content={**flood, "title": "Wildfire spreads"}).where(
            Story.id == old.id
        ).execute()
        assert found("wildfire") == [old.id, new.id]
        assert found("valley") == []  # the old title no longer finds the rewritten story
        Story.delete().where(Story.id == new.id).execute()
        assert found("wildfire") == [old.id]


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
def test_the_app_factory_binds_the_database_and_migrates_nothing(settings):
    from storyapp.api import create_app

    create_app(settings)
    # `storyapp serve`, wsgi.py and `storyapp worker` migrate as they start; the factory does not.
    assert storyapp_db.database.get_tables() == []
    init(settings)
    assert "migration" in storyapp_db.database.get_tables()


def test_importing_storyapp_touches_no_database(tmp_path):
    # Only the entry points that a server names start a process: the root tasks.py, wsgi.py.
    package = Path(storyapp_db.__file__).parent
    modules = sorted(path.stem for path in package.glob("*.py") if path.stem != "__init__")
    imports = "; ".join(f"import storyapp.{module}" for module in modules)
    env = {**os.environ, "STORYAPP_DATA_DIR": str(tmp_path / "data")}
    subprocess.run([sys.executable, "-c", imports], env=env, cwd=tmp_path, check=True, timeout=120)
    assert not (tmp_path / "data").exists()


@pytest.mark.backends
def test_m011_adds_whether_a_calls_latency_holds_the_queue(database):
    # A database as m010 left it: today's tables without the column, with a call logged.
    migrate(database)
    with database.bind_ctx(TABLES):
        schema.migrate(
            schema.SchemaMigrator.from_database(database).drop_column(
                "llmcall", "latency_includes_queue"
            )
        )
        Migration.delete().where(Migration.name == "m011_call_queueing").execute()
        database.execute_sql(
            "INSERT INTO llmcall (model, host, attempt, outcome, latency_ms, created_at)"
            " VALUES ('m', 'http://h:11434', 1, 'ok', 12.5, '2026-01-01 00:00:00')"
        )
    assert migrate(database) == ["m011_call_queueing"]
    with database.bind_ctx(TABLES):
        (old,) = LLMCall.select()
        assert old.latency_includes_queue is None  # not known for the calls before
        LLMCall.update(latency_includes_queue=True).execute()
        assert LLMCall.get().to_dict()["latency_includes_queue"] is True
