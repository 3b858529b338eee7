"""Schema migrations: an append-only list, each applied once and recorded in the migration table.

A new database gets today's tables in one go and every migration recorded as applied; an
existing one gets the migrations it has not seen, in order. A released migration never changes:
add a new one (`m002_...`, using playhouse.migrate) next to the model change instead. So a
migration declares the tables it creates as they were when it was written, not through the
models of today, which a later migration may change again.
"""

import json
import re
from collections.abc import Callable
from datetime import datetime

from peewee import (
    SQL,
    BigIntegerField,
    BooleanField,
    CharField,
    CompositeKey,
    Database,
    DateTimeField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)
from playhouse import migrate as schema

from storyapp import ranking, search
from storyapp.db import in_chunks, lock
from storyapp.models import TABLES, Migration, utcnow


def m001_initial(db: Database) -> None:
    db.create_tables(TABLES)


def m002_feeds_and_story_versions(db: Database) -> None:
    """Feeds, story versions and scheduled slots; an index for retention."""

    class Base(Model):
        class Meta:
            database = db

    class Story(Base):  # only what the foreign key needs
        pass

    class Feed(Base):
        url = TextField(unique=True)
        etag = TextField(null=True)
        last_modified = TextField(null=True)
        created_at = DateTimeField(default=utcnow)
        last_fetched_at = DateTimeField(null=True)
        last_success_at = DateTimeField(null=True)
        last_error = TextField(null=True)

    class StoryVersion(Base):
        story = ForeignKeyField(Story, on_delete="CASCADE")
        version = IntegerField()
        title = TextField()
        summary = TextField()
        key_points = TextField()
        generator = CharField(max_length=16)
        model = CharField(max_length=200, null=True)
        article_ids = TextField()
        article_count = IntegerField()
        created_at = DateTimeField(default=utcnow)

        class Meta:
            indexes = ((("story", "version"), True),)

    class ScheduledRun(Base):
        slot = DateTimeField(primary_key=True)
        claimed_at = DateTimeField(default=utcnow)

    migrator = schema.SchemaMigrator.from_database(db)
    # NOT NULL with its default in one ALTER: peewee's usual way (add it nullable, fill it, then
    # SET NOT NULL) rebuilds the table on SQLite before 3.53, and dropping the old story table
    # would cascade to its article links.
    version = IntegerField(default=1, constraints=[SQL("DEFAULT 1")])
    schema.migrate(
        migrator.add_column("story", "version", version, allow_not_null=True),
        migrator.add_index("synthesiscache", ("created_at",)),
    )
    db.create_tables([Feed, StoryVersion, ScheduledRun])

    # Every existing story becomes its own version 1, so each story lists at least one version.
    links: dict[int, list[int]] = {}
    for story_id, article_id in db.execute_sql(
        "SELECT story_id, article_id FROM storyarticle ORDER BY story_id, article_id"
    ):
        links.setdefault(story_id, []).append(article_id)
    stories = db.execute_sql(
        "SELECT id, title, summary, key_points, generator, model, article_count, updated_at "
        "FROM story"
    ).fetchall()
    versions = [
        {
            "story": story_id,
            "version": 1,
            "title": title,
            "summary": summary,
            "key_points": key_points,  # JSON text already
            "generator": generator,
            "model": model,
            "article_ids": json.dumps(links.get(story_id, [])),
            "article_count": article_count,
            "created_at": updated_at,
        }
        for story_id, title, summary, key_points, generator, model, article_count, updated_at in (
            stories
        )
    ]
    for chunk in in_chunks(versions, 50):
        StoryVersion.insert_many(chunk).execute()


def m003_worker_leases(db: Database) -> None:
    """Cluster leases and the table of live workers (recovery.py)."""

    class Worker(Model):
        id = CharField(max_length=200, primary_key=True)
        host = CharField(max_length=200)
        pid = IntegerField()
        started_at = DateTimeField()
        heartbeat_at = DateTimeField()

        class Meta:
            database = db

    migrator = schema.SchemaMigrator.from_database(db)
    schema.migrate(
        migrator.add_column("job", "planner", CharField(max_length=200, null=True)),
        migrator.add_column("jobcluster", "lease_holder", CharField(max_length=200, null=True)),
        migrator.add_column("jobcluster", "leased_at", DateTimeField(null=True)),
        migrator.add_column("jobcluster", "lease_until", DateTimeField(null=True)),
        migrator.add_index("jobcluster", ("lease_holder",)),
    )
    db.create_tables([Worker])


def m004_merged_stories(db: Database) -> None:
    """Story.merged_into: the story that took in this one's event (jobs.save_story)."""

    class Story(Model):
        class Meta:
            database = db

    migrator = schema.SchemaMigrator.from_database(db)
    merged_into = ForeignKeyField(Story, field=Story.id, null=True, on_delete="SET NULL")
    schema.migrate(migrator.add_column("story", "merged_into_id", merged_into))


def m005_worker_figures(db: Database) -> None:
    """Each worker's CPU time and memory, as of its last heartbeat (recovery.heartbeat)."""
    migrator = schema.SchemaMigrator.from_database(db)
    schema.migrate(
        migrator.add_column("worker", "cpu_s", FloatField(null=True)),
        migrator.add_column("worker", "resident_memory_bytes", BigIntegerField(null=True)),
    )


def m006_story_content(db: Database) -> None:
    """What a story says, as one JSON column (`content`, the fields story.py declares) in story
    and storyversion, instead of a column a field: a new field needs no migration."""

    class Base(Model):
        content = TextField()
        title = TextField()
        summary = TextField()
        key_points = TextField()

        class Meta:
            database = db

    class Story(Base):
        pass

    class StoryVersion(Base):
        pass

    migrator = schema.SchemaMigrator.from_database(db)
    # NOT NULL with a default in one ALTER, as m002 did: no table rebuild; filled just below.
    schema.migrate(
        *(
            migrator.add_column(
                table,
                "content",
                TextField(constraints=[SQL("DEFAULT '{}'")]),
                allow_not_null=True,
            )
            for table in ("story", "storyversion")
        )
    )
    for model in (Story, StoryVersion):
        rows = list(model.select(model.id, model.title, model.summary, model.key_points).tuples())
        for row_id, title, summary, key_points in rows:
            content = {"title": title, "summary": summary, "key_points": json.loads(key_points)}
            model.update(content=json.dumps(content, ensure_ascii=False)).where(
                model.id == row_id
            ).execute()
    schema.migrate(
        *(
            migrator.drop_column(table, column)
            for table in ("story", "storyversion")
            for column in ("title", "summary", "key_points")
        )
    )


def m007_cited_stories(db: Database) -> None:
    """Every sentence of a story names the articles it rests on (story.py): the summary becomes
    a list of cited sentences, each key point a cited one. A story written before knew no
    citations, so each of its sentences cites all the articles it was written from: true of
    the whole, if not of each sentence. The next write of the story cites properly."""

    class Base(Model):
        content = TextField()

        class Meta:
            database = db

    class Story(Base):
        pass

    class StoryVersion(Base):
        article_ids = TextField()

    links: dict[int, list[int]] = {}
    for story_id, article_id in db.execute_sql(
        "SELECT story_id, article_id FROM storyarticle ORDER BY story_id, article_id"
    ):
        links.setdefault(story_id, []).append(article_id)

    # A story's articles may have gone (retention); its latest version still names them.
    for story_id, article_ids in db.execute_sql(
        "SELECT story_id, article_ids FROM storyversion ORDER BY story_id, version DESC"
    ):
        if story_id not in links or not links[story_id]:
            links[story_id] = json.loads(article_ids)

    def cited(content: dict, article_ids: list[int]) -> dict:
        if isinstance(content.get("summary"), list):  # cited already
            return content
        sources = article_ids[:12]
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", content["summary"]) if s.strip()]
        return {
            "title": content["title"],
            "summary": [{"text": s, "sources": sources} for s in sentences[:4]],
            "key_points": [{"text": p, "sources": sources} for p in content["key_points"]],
        }

    for row_id, content in Story.select(Story.id, Story.content).tuples():
        new = cited(json.loads(content), links.get(row_id, []))
        Story.update(content=json.dumps(new, ensure_ascii=False)).where(
            Story.id == row_id
        ).execute()
    query = StoryVersion.select(StoryVersion.id, StoryVersion.content, StoryVersion.article_ids)
    for row_id, content, article_ids in query.tuples():
        new = cited(json.loads(content), json.loads(article_ids))
        StoryVersion.update(content=json.dumps(new, ensure_ascii=False)).where(
            StoryVersion.id == row_id
        ).execute()


def m008_story_ranking(db: Database) -> None:
    """What ranks a story (ranking.py): its distinct outlets, its first and last article, and
    its rank. Existing stories are ranked from the articles they still have."""

    class Base(Model):
        class Meta:
            database = db

    class Story(Base):
        article_count = IntegerField()
        updated_at = DateTimeField()
        sources = IntegerField()
        first_seen = DateTimeField(null=True)
        last_seen = DateTimeField(null=True)
        rank = FloatField()

    class Article(Base):
        source = TextField()
        published_at = DateTimeField()

    class StoryArticle(Base):
        story = ForeignKeyField(Story)
        article = ForeignKeyField(Article)

    migrator = schema.SchemaMigrator.from_database(db)
    # NOT NULL with a default in one ALTER, as m002 did: no table rebuild.
    schema.migrate(
        migrator.add_column(
            "story",
            "sources",
            IntegerField(default=0, constraints=[SQL("DEFAULT 0")]),
            allow_not_null=True,
        ),
        migrator.add_column("story", "first_seen", DateTimeField(null=True)),
        migrator.add_column("story", "last_seen", DateTimeField(null=True)),
        migrator.add_column(
            "story",
            "rank",
            FloatField(default=0.0, index=True, constraints=[SQL("DEFAULT 0")]),
            allow_not_null=True,
        ),
    )

    articles: dict[int, list[tuple[str, datetime]]] = {}
    query = StoryArticle.select(StoryArticle.story, Article.source, Article.published_at).join(
        Article
    )
    for story_id, source, published in query.tuples():
        articles.setdefault(story_id, []).append((source, published))
    now = utcnow()
    for story_id, article_count, updated_at in Story.select(
        Story.id, Story.article_count, Story.updated_at
    ).tuples():
        found = articles.get(story_id)
        if found:
            sources = ranking.outlets(source for source, _ in found)
            first_seen = min(published for _, published in found)
            last_seen = max(published for _, published in found)
        else:
            # Its articles are gone (retention): it ranks as of its last write.
            sources, first_seen, last_seen = 0, None, None
        # By today's formula: a change to it is a migration of its own that ranks them again.
        rank = ranking.rank_of(sources, article_count, min(last_seen or updated_at, now))
        Story.update(sources=sources, first_seen=first_seen, last_seen=last_seen, rank=rank).where(
            Story.id == story_id
        ).execute()


def m009_upgraded_stories(db: Database) -> None:
    """Job.upgraded: the fallback's stories the LLM wrote again (jobs.plan_job)."""
    migrator = schema.SchemaMigrator.from_database(db)
    upgraded = IntegerField(default=0, constraints=[SQL("DEFAULT 0")])
    schema.migrate(migrator.add_column("job", "upgraded", upgraded, allow_not_null=True))


def m010_call_contents(db: Database) -> None:
    """In the call log, the story and version each call was made for, its prompt and reply."""

    class Story(Model):
        class Meta:
            database = db

    migrator = schema.SchemaMigrator.from_database(db)
    story = ForeignKeyField(Story, field=Story.id, null=True, on_delete="SET NULL")
    schema.migrate(
        migrator.add_column("llmcall", "story_id", story),
        migrator.add_column("llmcall", "story_version", IntegerField(null=True)),
        migrator.add_column("llmcall", "prompt", TextField(null=True)),
        migrator.add_column("llmcall", "reply", TextField(null=True)),
    )


def m011_call_queueing(db: Database) -> None:
    """LLMCall.latency_includes_queue: whether a call's latency holds its wait in the server's
    queue (the server did not say its own time); unknown (null) for the calls before."""
    migrator = schema.SchemaMigrator.from_database(db)
    queued = BooleanField(null=True)
    schema.migrate(migrator.add_column("llmcall", "latency_includes_queue", queued))


def m012_worker_llm_hosts(db: Database) -> None:
    """Worker.llm_hosts: each worker's last check of each LLM host (llmhealth.py)."""
    migrator = schema.SchemaMigrator.from_database(db)
    schema.migrate(migrator.add_column("worker", "llm_hosts", TextField(null=True)))


def m013_story_search(db: Database) -> None:
    """The stories' text search (search.py): SQLite's FTS5 table and the triggers that keep it,
    or PostgreSQL's generated tsvector column and its GIN index; filled for every story there
    is. The story table's own create_table makes the same on a new database."""
    search.create(db)


def m014_job_note(db: Database) -> None:
    """Job.note: why a job did nothing worth noticing (an empty window)."""
    migrator = schema.SchemaMigrator.from_database(db)
    schema.migrate(migrator.add_column("job", "note", TextField(null=True)))


def m015_feed_titles(db: Database) -> None:
    """A feed's own title and site link."""
    migrator = schema.SchemaMigrator.from_database(db)
    schema.migrate(
        migrator.add_column("feed", "title", TextField(null=True)),
        migrator.add_column("feed", "site_url", TextField(null=True)),
    )


def m016_counters(db: Database) -> None:
    """Prometheus counters and histograms that outlive processes and retention."""

    class Counter(Model):
        name = CharField(max_length=100)
        labels = CharField(max_length=1000)
        value = FloatField(default=0.0)

        class Meta:
            database = db
            primary_key = CompositeKey("name", "labels")

    db.create_tables([Counter])


MIGRATIONS: list[Callable[[Database], None]] = [
    m001_initial,
    m002_feeds_and_story_versions,
    m003_worker_leases,
    m004_merged_stories,
    m005_worker_figures,
    m006_story_content,
    m007_cited_stories,
    m008_story_ranking,
    m009_upgraded_stories,
    m010_call_contents,
    m011_call_queueing,
    m012_worker_llm_hosts,
    m013_story_search,
    m014_job_note,
    m015_feed_titles,
    m016_counters,
]


def migrate(db: Database, migrations: list[Callable[[Database], None]] = MIGRATIONS) -> list[str]:
    """Brings `db` up to date; returns the names applied. Safe to run twice, or from several
    processes at once: the first migrates while the others wait, then find nothing to do."""
    with db.bind_ctx(TABLES), db.atomic():
        lock("storyapp.migrate", db)
        if not db.table_exists(Migration._meta.table_name):
            db.create_tables(TABLES)
            names = [m.__name__ for m in migrations]
            Migration.insert_many([{"name": n} for n in names]).execute()
            return names
        applied = {m.name for m in Migration.select(Migration.name)}
        ran = []
        for migration in migrations:
            if migration.__name__ not in applied:
                migration(db)
                Migration.create(name=migration.__name__)
                ran.append(migration.__name__)
        return ran
