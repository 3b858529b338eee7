"""Peewee models: articles, feeds, stories and their versions, jobs and their clusters, scheduled
runs, LLM calls, the synthesis cache."""

import json
import uuid
from datetime import UTC, datetime, timedelta

from peewee import (
    EXCLUDED,
    SQL,
    BigIntegerField,
    BooleanField,
    Case,
    CharField,
    CompositeKey,
    Database,
    DateTimeField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    PostgresqlDatabase,
    TextField,
    fn,
)

from storyapp import ranking, search
from storyapp.db import Prepared, PreparedIn, database, param, param_list
from storyapp.story import StoryText

# The largest id any engine stores (a signed 64-bit integer): a larger one names nothing.
MAX_ID = 2**63 - 1


def utcnow() -> datetime:
    # Stored naive, always UTC: SQLite and PostgreSQL compare them the same way.
    return datetime.now(UTC).replace(tzinfo=None)


def isoformat(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds") + "Z"


class JSONField(TextField):
    # JSON kept as text, so the schema is the same on every engine.
    def db_value(self, value):
        return None if value is None else json.dumps(value, ensure_ascii=False)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(Model):
    class Meta:
        database = database


class Article(BaseModel):
    url = TextField(unique=True)
    title = TextField()
    summary = TextField(default="")
    content = TextField(default="")
    source = TextField(default="")
    published_at = DateTimeField(index=True)
    ingested_at = DateTimeField(default=utcnow)
    # Fingerprint of what the LLM reads; cluster keys and cache keys are built from these.
    content_hash = CharField(max_length=64)

    @classmethod
    def in_window(cls, start: datetime, end: datetime):
        return cls.select().where(cls.published_at >= start, cls.published_at <= end)

    @classmethod
    def texts(cls, ids: list[int]) -> list[tuple]:
        """(id, title, summary, content, source, published_at, content_hash) of each of these
        articles that exists: what a story is written from."""
        return _TEXTS.rows(ids)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "url": self.url,
            "title": self.title,
            "summary": self.summary,
            "content": self.content,
            "source": self.source,
            "published_at": isoformat(self.published_at),
        }


class Feed(BaseModel):
    """An RSS or Atom URL the scheduled run fetches, with what the last fetch left behind."""

    url = TextField(unique=True)
    # The server's validators from the last fetch that was stored: sent back so an unchanged
    # feed answers 304 with no body.
    etag = TextField(null=True)
    last_modified = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    last_fetched_at = DateTimeField(null=True)
    last_success_at = DateTimeField(null=True)
    last_error = TextField(null=True)
    # As the feed calls itself and the site it belongs to, read when it was added and at
    # every fetch since (OPML export, the feed list).
    title = TextField(null=True)
    site_url = TextField(null=True)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "url": self.url,
            "title": self.title,
            "site_url": self.site_url,
            "created_at": isoformat(self.created_at),
            "last_fetched_at": isoformat(self.last_fetched_at),
            "last_success_at": isoformat(self.last_success_at),
            "last_error": self.last_error,
        }


class Story(BaseModel):
    # The key of the cluster this story was last written from (see clustering.cluster_key).
    cluster_key = CharField(max_length=64, unique=True)
    # What the story says: a StoryText as a dict (story.py declares its fields).
    content = JSONField()
    generator = CharField(max_length=16)  # llm | fallback | single
    model = CharField(max_length=200, null=True)
    article_count = IntegerField()
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow, index=True)
    # The number of the latest StoryVersion; the default is in the schema too, so m002 could
    # add the column to a table with rows in it.
    version = IntegerField(default=1, constraints=[SQL("DEFAULT 1")])
    # Set when a cluster that continued another story took in this one's event too: the story
    # is then listed no more (it would tell the same event twice), but stays readable.
    merged_into = ForeignKeyField("self", null=True, backref="merged", on_delete="SET NULL")
    # What ranks it (ranking.py), fixed while its articles stay the same: its distinct outlets,
    # its earliest and latest article, and the rank that orders stories by importance. A story
    # written before m008 whose articles were all gone has no first or last seen.
    sources = IntegerField(default=0, constraints=[SQL("DEFAULT 0")])
    first_seen = DateTimeField(null=True)
    last_seen = DateTimeField(null=True)
    rank = FloatField(default=0.0, index=True, constraints=[SQL("DEFAULT 0")])

    ORDERS = ("importance", "recent")

    @classmethod
    def listed(cls, order: str = "importance"):
        """The stories to list, none merged into another: the most important first, or the
        most recently updated (`recent`)."""
        key = cls.rank if order == "importance" else cls.updated_at
        return cls.select().where(cls.merged_into.is_null()).order_by(key.desc(), cls.id.desc())

    @classmethod
    def filtered(
        cls,
        query,
        category: str | None = None,
        source: str | None = None,
        text: str | None = None,
    ):
        """`query` narrowed to the stories of a category (one of story.CATEGORIES), with an
        article from an outlet (its name in any case and spacing), and saying every word of
        `text` (search.py): each filter given narrows it further."""
        db = _engine(cls._meta.database)
        if category is not None:
            query = query.where(_category(db) == category)
        if source is not None:
            outlet = StoryArticle.select(StoryArticle.story).join(Article)
            query = query.where(
                cls.id.in_(outlet.where(_outlet(Article.source) == _outlet_name(source)))
            )
        if text is not None:
            query = query.where(cls.id.in_(search.matching(db, text)))
        return query

    @classmethod
    def outlets(cls, limit: int, since: datetime) -> list[str]:
        """The outlets with the most listed stories updated since `since`, as their articles
        name them."""
        query = (
            Article.select(fn.MIN(Article.source), fn.COUNT(StoryArticle.story.distinct()))
            .join(StoryArticle)
            .join(Story)
            .where(cls.merged_into.is_null(), cls.updated_at >= since, Article.source != "")
            .group_by(_outlet(Article.source))
            .order_by(fn.COUNT(StoryArticle.story.distinct()).desc(), fn.MIN(Article.source))
            .limit(limit)
        )
        return [name for name, _ in query.tuples()]

    @classmethod
    def create_table(cls, safe: bool = True, **options) -> None:
        # The search index is the engine's own, kept by triggers (or a generated column) on
        # this table: it comes with it.
        super().create_table(safe, **options)
        search.create(_engine(cls._meta.database))

    @staticmethod
    def articles_of(stories: list["Story"]) -> dict[int, list[Article]]:
        """The articles of several stories in one query, oldest first."""
        found = {story.id: [] for story in stories}
        query = (
            Article.select(Article, StoryArticle.story)
            .join(StoryArticle)
            .where(StoryArticle.story.in_(list(found)))
            .order_by(Article.published_at, Article.id)
        )
        for article in query:
            found[article.storyarticle.story_id].append(article)
        return found

    @classmethod
    def keyed(cls, key: str) -> dict | None:
        """The id, version and generator of the story last written from the cluster with this
        key."""
        return _KEYED.row(key=key)

    @classmethod
    def add(cls, key: str, now: datetime, **fields) -> int:
        """A new story (fields: content, generator, model, article_count, version, and those
        of ranking.Reach); its id."""
        return _ADD_STORY.insert(cluster_key=key, created_at=now, updated_at=now, **fields)

    @classmethod
    def rewrite(cls, story_id: int, key: str, now: datetime, **fields) -> None:
        """The story written anew from a cluster; listed again, if it had been merged."""
        _REWRITE_STORY.execute(id=story_id, cluster_key=key, updated_at=now, **fields)

    @property
    def text(self) -> StoryText:
        return StoryText.model_validate(self.content)

    def to_dict(self, articles: list[Article] | None = None, now: datetime | None = None) -> dict:
        """The story in the API; its importance as of `now` (a list reads them all at once)."""
        if articles is None:
            articles = Story.articles_of([self])[self.id]
        return {
            "id": self.id,
            **self.text.public(),
            "grounding": self.content.get("grounding", {"checked": 0, "dropped": 0}),
            "article_count": self.article_count,
            "articles": [
                {k: a[k] for k in ("id", "url", "title", "source", "published_at")}
                for a in (article.to_dict() for article in articles)
            ],
            "generator": self.generator,
            "model": self.model,
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
            "importance": ranking.importance(self.rank, now or utcnow()),
            "sources": self.sources,
            "first_seen": isoformat(self.first_seen),
            "last_seen": isoformat(self.last_seen),
            "version": self.version,
            "merged_into": self.merged_into_id,
        }


def _engine(db) -> Database:
    return getattr(db, "obj", None) or db  # the database behind the proxy


def _category(db: Database):
    # The category lives in the story's JSON content; each engine reads JSON its own way.
    if isinstance(db, PostgresqlDatabase):
        return fn.jsonb_extract_path_text(Story.content.cast("jsonb"), "category")
    return fn.json_extract(Story.content, "$.category")


def _outlet(name):
    # As ranking.outlets tells outlets apart, by name in any case and spacing; SQL has no
    # collapsing of whitespace runs, so the spaces go altogether ("CoastWire" is Coast Wire).
    return fn.LOWER(fn.REPLACE(name, " ", ""))


def _outlet_name(name: str) -> str:
    return "".join(name.split()).lower()


class StoryVersion(BaseModel):
    """A story as one run wrote it; the story row is always its latest version."""

    story = ForeignKeyField(Story, backref="versions", on_delete="CASCADE")
    version = IntegerField()
    content = JSONField()
    generator = CharField(max_length=16)
    model = CharField(max_length=200, null=True)
    # Ids, not links: a version outlives the articles that retention deletes.
    article_ids = JSONField()
    article_count = IntegerField()
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("story", "version"), True),)

    @classmethod
    def record(cls, story_id: int, article_ids: list[int], now: datetime, **fields) -> None:
        """Keeps the story as it was just written (fields: content, generator, model,
        article_count, version)."""
        _RECORD.execute(story=story_id, article_ids=article_ids, created_at=now, **fields)

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            **StoryText.model_validate(self.content).public(),
            "article_count": self.article_count,
            "article_ids": self.article_ids,
            "generator": self.generator,
            "model": self.model,
            "created_at": isoformat(self.created_at),
        }


class StoryArticle(BaseModel):
    story = ForeignKeyField(Story, backref="links", on_delete="CASCADE")
    article = ForeignKeyField(Article, backref="story_links", on_delete="CASCADE")

    class Meta:
        indexes = ((("story", "article"), True),)

    @classmethod
    def link(cls, story_id: int, article_ids: list[int]) -> None:
        """The story's articles are these, and no others."""
        _UNLINK.execute(story=story_id)
        _LINK.execute_many([{"story": story_id, "article": a} for a in article_ids])

    @classmethod
    def shared(cls, article_ids: list[int]) -> dict[int, int]:
        """{story id: how many of these articles it holds}, over stories not merged away."""
        counts: dict[int, int] = {}
        for story_id, count in _SHARED.rows(article_ids):  # a story can be in several slices
            counts[story_id] = counts.get(story_id, 0) + count
        return counts

    @classmethod
    def published_between(cls, story_ids: list[int], start: datetime, end: datetime) -> dict:
        """{story id: how many of its articles were published from start to end}."""
        return dict(_PUBLISHED_BETWEEN.rows(story_ids, start=start, end=end))


def new_job_id() -> str:
    return uuid.uuid4().hex


class Job(BaseModel):
    STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
    ACTIVE = ("queued", "running")
    ENDED = ("succeeded", "failed", "cancelled")

    id = CharField(max_length=32, primary_key=True, default=new_job_id)
    status = CharField(max_length=16, default="queued", index=True)
    time_window_hours = FloatField()
    force = BooleanField(default=False)
    # Set while the job is queued or running and cleared when it ends: the unique index lets
    # only one active job per (hours, force) exist, on every engine, without a lock.
    active_key = CharField(max_length=64, null=True, unique=True)
    # The worker planning the job: if it dies half-way, recovery plans the job again.
    planner = CharField(max_length=200, null=True)
    window_start = DateTimeField(null=True)
    window_end = DateTimeField(null=True)
    total = IntegerField(null=True)
    done = IntegerField(default=0)
    llm = IntegerField(default=0)
    cached = IntegerField(default=0)
    fallback = IntegerField(default=0)
    reused = IntegerField(default=0)
    single = IntegerField(default=0)
    failed = IntegerField(default=0)
    # Not an outcome: of the clusters written by the LLM (llm or cached), those whose story the
    # fallback had written from the same articles (jobs.plan_job sends them to the LLM again).
    upgraded = IntegerField(default=0, constraints=[SQL("DEFAULT 0")])
    error = TextField(null=True)
    # Why a job that did not fail did nothing worth noticing (jobs.empty_window_note): a job
    # of 0 clusters said "succeeded" and no more.
    note = TextField(null=True)
    created_at = DateTimeField(default=utcnow, index=True)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)

    @staticmethod
    def key_for(hours: float, force: bool) -> str:
        return f"{float(hours)!r}:{int(force)}"

    @classmethod
    def count(cls, job_id: str, outcome: str, upgraded: bool = False) -> bool:
        """Counts one settled cluster of a running job under its outcome, and as `upgraded`
        if it was; False if the job ended meanwhile (its counts are final)."""
        return _COUNT[outcome, upgraded].rowcount(job=job_id) == 1

    @classmethod
    def finish_if_complete(cls, job_id: str) -> bool:
        """Ends a running job whose clusters are all settled: true for exactly one caller,
        however many settle their last clusters at once."""
        return _FINISH.rowcount(job=job_id, now=utcnow()) == 1

    def to_dict(self) -> dict:
        duration = None
        if self.started_at is not None:
            duration = ((self.finished_at or utcnow()) - self.started_at).total_seconds()
        return {
            "id": self.id,
            "status": self.status,
            "progress": 1.0 if self.status == "succeeded" else _ratio(self.done, self.total),
            "total": self.total,
            "done": self.done,
            "counts": {
                "llm": self.llm,
                "cached": self.cached,
                "fallback": self.fallback,
                "reused": self.reused,
                "single": self.single,
                "failed": self.failed,
                "upgraded": self.upgraded,
            },
            "time_window_hours": self.time_window_hours,
            "force": self.force,
            "created_at": isoformat(self.created_at),
            "started_at": isoformat(self.started_at),
            "finished_at": isoformat(self.finished_at),
            "duration_s": None if duration is None else round(duration, 3),
            "eta_s": self.eta_s(duration),
            "error": self.error,
            "note": self.note,
        }

    def eta_s(self, elapsed: float | None) -> float | None:
        """Seconds left, at the pace of the clusters the workers wrote so far; None until one
        is written. Those settled at planning (reused, cached, single) took no time: counting
        them would make the first estimate far too short."""
        written = self.llm + self.fallback + self.failed
        if self.status != "running" or not self.total or not written or elapsed is None:
            return None
        return round(max(self.total - self.done, 0) * elapsed / written, 1)


def _ratio(done: int, total: int | None) -> float:
    if not total:
        return 0.0
    return round(min(done / total, 1.0), 4)


class JobCluster(BaseModel):
    """One cluster of one job: the unit a worker task settles, exactly once."""

    job = ForeignKeyField(Job, backref="clusters", on_delete="CASCADE")
    cluster_key = CharField(max_length=64)
    article_ids = JSONField()
    status = CharField(max_length=16, default="pending")  # pending | done | skipped | failed
    outcome = CharField(max_length=16, null=True)  # llm | cached | fallback | reused | single
    story = ForeignKeyField(Story, null=True, on_delete="SET NULL")
    error = TextField(null=True)
    finished_at = DateTimeField(null=True)
    # The worker writing it, and until when; see recovery.py.
    lease_holder = CharField(max_length=200, null=True, index=True)
    leased_at = DateTimeField(null=True)
    lease_until = DateTimeField(null=True)

    class Meta:
        indexes = ((("job", "cluster_key"), True),)

    @classmethod
    def to_write(cls, cluster_id: int) -> dict | None:
        """What a worker needs to write the cluster: its status, job, key and articles, and
        its job's status, force and window (job_status, force, window_start, window_end)."""
        return _TO_WRITE.row(id=cluster_id)

    @classmethod
    def lease(cls, cluster_id: int, worker: str | None, seconds: float) -> bool:
        """Takes a pending cluster for `worker` for `seconds`, unless another worker's lease
        still runs; renews the worker's own."""
        now = utcnow()
        until = now + timedelta(seconds=seconds)
        return _LEASE.rowcount(id=cluster_id, worker=worker, now=now, until=until) == 1

    @classmethod
    def settle(cls, cluster_id: int, outcome: str, story_id: int, error: str | None) -> bool:
        """Marks a pending cluster done: true for exactly one caller."""
        values = {"outcome": outcome, "story": story_id, "error": error, "now": utcnow()}
        return _SETTLE.rowcount(id=cluster_id, **values) == 1

    @classmethod
    def skip(cls, cluster_id: int) -> None:
        """A pending cluster of an ended job: as if it never started."""
        _SKIP.execute(id=cluster_id, now=utcnow())


class ScheduledRun(BaseModel):
    """A slot of STORYAPP_SCHEDULE, claimed by the first scheduler to run it: a second
    consumer's scheduler (or a task delivered twice) finds the row and does nothing."""

    slot = DateTimeField(primary_key=True)
    claimed_at = DateTimeField(default=utcnow)


# A call row keeps what was sent and what came back, cut at these sizes, so that a bad story
# can be explained afterwards without the log outgrowing the stories. A prompt holds at most
# 24k characters of articles plus the instructions and the articles' tags (prompt.py): 32k
# keeps every prompt whole. A reply is cut by the server at the reply's token cap, a few
# thousand characters; 16k leaves room for a larger cap, and bounds what a server answers
# when it does not answer JSON. A cut text ends saying how long it was.
PROMPT_MAX_CHARS = 32_000
REPLY_MAX_CHARS = 16_000


class LLMCall(BaseModel):
    """One request to an LLM server, whatever came of it."""

    job = ForeignKeyField(Job, null=True, backref="llm_calls", on_delete="SET NULL")
    cluster_key = CharField(max_length=64, null=True)
    model = CharField(max_length=200)
    host = CharField(max_length=500)
    attempt = IntegerField()
    outcome = CharField(max_length=16)  # ok | invalid | timeout | error
    status_code = IntegerField(null=True)
    error = TextField(null=True)
    latency_ms = FloatField()
    prompt_tokens = IntegerField(null=True)
    completion_tokens = IntegerField(null=True)
    created_at = DateTimeField(default=utcnow, index=True)
    # The story and version the call was made for, whatever came of it (the calls before a
    # fallback story too); none when the write was undone (a cancelled job's cluster).
    story = ForeignKeyField(Story, null=True, backref="llm_calls", on_delete="SET NULL")
    story_version = IntegerField(null=True)
    prompt = JSONField(null=True)  # the messages sent, cut at PROMPT_MAX_CHARS in all
    reply = TextField(null=True)  # as the server sent it, cut at REPLY_MAX_CHARS
    # latency_ms holds the wait in the server's queue: the server did not say its own time
    # (llm.Reply); null for calls logged before this was kept.
    latency_includes_queue = BooleanField(null=True)

    @classmethod
    def log(cls, calls: list[dict]) -> None:
        """One row a call: job, cluster_key, model, story, story_version, prompt (the messages)
        and the fields of synthesis.CallRecord; the prompt and the reply cut to their bounds."""
        now = utcnow()
        for call in calls:
            bounded = {
                "prompt": bounded_prompt(call["prompt"]),
                "reply": cut(storable(call["reply"]), REPLY_MAX_CHARS),
            }
            _LOG_CALL.execute(created_at=now, **{**call, **bounded})

    @classmethod
    def of_versions(cls, story_id: int, versions: list[int]) -> dict[int, list["LLMCall"]]:
        """The calls that wrote these versions of a story, by version, oldest first; without
        the prompt and the reply."""
        found = {version: [] for version in versions}
        query = (
            cls.select(cls.id, cls.attempt, cls.outcome, cls.created_at, cls.story_version)
            .where(cls.story == story_id, cls.story_version.in_(versions))
            .order_by(cls.id)
        )
        for call in query:
            found[call.story_version].append(call)
        return found

    def link(self) -> dict:
        """The call as its story lists it."""
        return {
            "id": self.id,
            "url": f"/calls/{self.id}",
            "attempt": self.attempt,
            "outcome": self.outcome,
            "created_at": isoformat(self.created_at),
        }

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "job_id": self.job_id,
            "story_id": self.story_id,
            "story_version": self.story_version,
            "cluster_key": self.cluster_key,
            "model": self.model,
            "host": self.host,
            "attempt": self.attempt,
            "outcome": self.outcome,
            "status_code": self.status_code,
            "error": self.error,
            "latency_ms": self.latency_ms,
            "latency_includes_queue": self.latency_includes_queue,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "created_at": isoformat(self.created_at),
            "prompt": self.prompt,
            "reply": self.reply,
        }


def storable(text: str | None) -> str | None:
    # A server may send what no engine stores: a NUL, or a lone surrogate from a JSON escape.
    if text is None:
        return None
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def cut(text: str | None, limit: int) -> str | None:
    """`text` up to `limit` characters, then a line saying how long it was."""
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}\n[… cut here: {len(text)} characters in all]"


def bounded_prompt(messages: list[dict] | None) -> list[dict] | None:
    """The messages with their contents cut to PROMPT_MAX_CHARS in all, the first ones kept
    whole (the instructions come first)."""
    if messages is None:
        return None
    left, kept = PROMPT_MAX_CHARS, []
    for message in messages:
        kept.append({**message, "content": cut(message["content"], left)})
        left = max(left - len(message["content"]), 0)
    return kept


class SynthesisCache(BaseModel):
    """A validated LLM story, keyed by the request that wrote it (synthesis.request_key)."""

    key = CharField(max_length=64, primary_key=True)
    model = CharField(max_length=200)
    story = JSONField()
    created_at = DateTimeField(default=utcnow, index=True)  # retention deletes by age

    @classmethod
    def story_for(cls, key: str) -> StoryText | None:
        row = _CACHED.row(key=key)
        return None if row is None else StoryText.model_validate(row["story"])

    @classmethod
    def remember(cls, key: str, model: str, story: StoryText) -> None:
        _REMEMBER.execute(key=key, model=model, story=story.to_dict(), now=utcnow())


class Worker(BaseModel):
    """A live consumer process, as far as its heartbeat says (recovery.py)."""

    id = CharField(max_length=200, primary_key=True)
    host = CharField(max_length=200)
    pid = IntegerField()
    started_at = DateTimeField()
    heartbeat_at = DateTimeField()
    # The process's own figures as of its last heartbeat (none where it cannot read them):
    # only the process can read them, and /metrics is served by another.
    cpu_s = FloatField(null=True)
    resident_memory_bytes = BigIntegerField(null=True)
    # What this worker last found of each LLM host it calls (llmhealth.py), as JSON: the
    # workers make the calls, so /health reports their view, not the web process's.
    llm_hosts = TextField(null=True)


class Counter(BaseModel):
    """One Prometheus counter series (or histogram bucket, sum, count), kept here so it
    outlives the processes that count and the rows retention deletes (counters.py)."""

    name = CharField(max_length=100)
    labels = CharField(max_length=1000)  # the series' labels as JSON with sorted keys
    value = FloatField(default=0.0)

    class Meta:
        primary_key = CompositeKey("name", "labels")

    @classmethod
    def add(cls, increments: dict[tuple[str, str], float]) -> None:
        """Adds to each (name, labels) series, creating it at 0 first: one statement. In key
        order, so that transactions adding to the same series lock them in one order and
        never deadlock on PostgreSQL."""
        rows = [
            {"name": name, "labels": labels, "value": value}
            for (name, labels), value in sorted(increments.items())
        ]
        if rows:
            cls.insert_many(rows).on_conflict(
                conflict_target=[cls.name, cls.labels],
                update={cls.value: cls.value + EXCLUDED.value},
            ).execute()


class Migration(BaseModel):
    name = CharField(max_length=100, primary_key=True)
    applied_at = DateTimeField(default=utcnow)


# The statements every cluster runs, behind the names above: prepared, because peewee building
# their SQL anew each time cost more than running them (db.Prepared).
_LEASE = Prepared(
    lambda: JobCluster.update(
        lease_holder=param("worker"), leased_at=param("now"), lease_until=param("until")
    ).where(
        JobCluster.id == param("id"),
        JobCluster.status == "pending",
        JobCluster.lease_holder.is_null()
        | (JobCluster.lease_holder == param("worker"))
        | (JobCluster.lease_until < param("now")),
    )
)
_SETTLE = Prepared(
    lambda: JobCluster.update(
        status="done",
        outcome=param("outcome"),
        story=param("story"),
        error=param("error"),
        finished_at=param("now"),
    ).where(JobCluster.id == param("id"), JobCluster.status == "pending")
)
_SKIP = Prepared(
    lambda: JobCluster.update(status="skipped", finished_at=param("now")).where(
        JobCluster.id == param("id"), JobCluster.status == "pending"
    )
)


def _count(outcome: str, upgraded: bool):
    counts = {Job.done: Job.done + 1, getattr(Job, outcome): getattr(Job, outcome) + 1}
    if upgraded:
        counts[Job.upgraded] = Job.upgraded + 1
    return Job.update(counts).where(Job.id == param("job"), Job.status == "running")


_COUNT = {
    (outcome, False): Prepared(lambda outcome=outcome: _count(outcome, False))
    for outcome in ("llm", "cached", "fallback", "reused", "single", "failed")
} | {
    # Only a story the LLM wrote upgrades one.
    (outcome, True): Prepared(lambda outcome=outcome: _count(outcome, True))
    for outcome in ("llm", "cached")
}
_FINISH = Prepared(
    lambda: Job.update(
        status=Case(None, [(Job.failed > 0, "failed")], "succeeded"),
        finished_at=param("now"),
        active_key=None,
    ).where(Job.id == param("job"), Job.status == "running", Job.done >= Job.total)
)
_CACHED = Prepared(
    lambda: SynthesisCache.select(SynthesisCache.story).where(SynthesisCache.key == param("key"))
)
_REMEMBER = Prepared(
    lambda: SynthesisCache.insert(
        key=param("key"),
        model=param("model"),
        story=param("story", SynthesisCache.story),
        created_at=param("now"),
    ).on_conflict(
        conflict_target=[SynthesisCache.key],
        update={SynthesisCache.story: EXCLUDED.story, SynthesisCache.model: EXCLUDED.model},
    )
)


def _values(model, *names: str) -> dict:
    """The named fields of `model`, each given its value by a param of its name."""
    return {model._meta.fields[name]: param(name, model._meta.fields[name]) for name in names}


_STORY_FIELDS = ("content", "generator", "model", "article_count", "version")
# A version keeps what was written, not how it ranked.
_REACH_FIELDS = ("sources", "first_seen", "last_seen", "rank")
_KEYED = Prepared(
    lambda: Story.select(Story.id, Story.version, Story.generator).where(
        Story.cluster_key == param("key")
    )
)
_ADD_STORY = Prepared(
    lambda: Story.insert(
        _values(Story, "cluster_key", "created_at", "updated_at", *_STORY_FIELDS, *_REACH_FIELDS)
    )
)
_REWRITE_STORY = Prepared(
    lambda: Story.update(
        {
            **_values(Story, "cluster_key", "updated_at", *_STORY_FIELDS, *_REACH_FIELDS),
            Story.merged_into: None,
        }
    ).where(Story.id == param("id"))
)
_TEXTS = PreparedIn(
    "ids",
    lambda size: Article.select(
        Article.id,
        Article.title,
        Article.summary,
        Article.content,
        Article.source,
        Article.published_at,
        Article.content_hash,
    ).where(Article.id.in_(param_list("ids", size))),
)
_SHARED = PreparedIn(
    "ids",
    lambda size: (
        StoryArticle.select(StoryArticle.story, fn.COUNT(StoryArticle.id))
        .join(Story)
        .where(StoryArticle.article.in_(param_list("ids", size)), Story.merged_into.is_null())
        .group_by(StoryArticle.story)
    ),
)
_PUBLISHED_BETWEEN = PreparedIn(
    "ids",
    lambda size: (
        StoryArticle.select(StoryArticle.story, fn.COUNT(StoryArticle.id))
        .join(Article)
        .where(
            StoryArticle.story.in_(param_list("ids", size)),
            Article.published_at.between(
                param("start", Article.published_at), param("end", Article.published_at)
            ),
        )
        .group_by(StoryArticle.story)
    ),
)
_UNLINK = Prepared(lambda: StoryArticle.delete().where(StoryArticle.story == param("story")))
_LINK = Prepared(lambda: StoryArticle.insert(story=param("story"), article=param("article")))
_RECORD = Prepared(
    lambda: StoryVersion.insert(
        _values(StoryVersion, "story", "article_ids", "created_at", *_STORY_FIELDS)
    )
)
_TO_WRITE = Prepared(
    lambda: (
        JobCluster.select(
            JobCluster.status,
            JobCluster.job,
            JobCluster.cluster_key,
            JobCluster.article_ids,
            Job.status.alias("job_status"),
            Job.force,
            Job.window_start,
            Job.window_end,
        )
        .join(Job)
        .where(JobCluster.id == param("id"))
    )
)
# Every field of a call row but its id.
_LOG_CALL = Prepared(
    lambda: LLMCall.insert(_values(LLMCall, *(f.name for f in LLMCall._meta.sorted_fields[1:])))
)

TABLES = [
    Article,
    Feed,
    Story,
    StoryVersion,
    StoryArticle,
    Job,
    JobCluster,
    ScheduledRun,
    LLMCall,
    SynthesisCache,
    Worker,
    Counter,
    Migration,
]
