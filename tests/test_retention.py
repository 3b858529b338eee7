from datetime import datetime, timedelta

import pytest
from conftest import article, init, make_settings

from storyapp import ingest, retention, tasks
from storyapp.db import database, transaction
from storyapp.models import (
    Article,
    Job,
    JobCluster,
    LLMCall,
    ScheduledRun,
    Story,
    StoryArticle,
    StoryVersion,
    SynthesisCache,
    utcnow,
)
from storyapp.queue import huey

NOW = utcnow()
OLD = NOW - timedelta(days=40)
RECENT = NOW - timedelta(days=2)


def stored(n: int, published: datetime, ingested: datetime) -> int:
    ingest.store([article(n, f"Article {n}")])
    a = Article.get(Article.url == f"https://news.example/{n}")
    with transaction():
        Article.update(published_at=published, ingested_at=ingested).where(
            Article.id == a.id
        ).execute()
    return a.id


def story_of(article_ids: list[int], updated: datetime) -> int:
    with transaction():
        story = Story.create(
            cluster_key=f"k{article_ids}",
            content={
                "title": "T",
                "summary": [{"text": "S", "sources": article_ids}],
                "key_points": [{"text": "K", "sources": article_ids}],
            },
            generator="fallback",
            article_count=len(article_ids),
            created_at=updated,
            updated_at=updated,
        )
        StoryArticle.insert_many([(story.id, a) for a in article_ids]).execute()
        StoryVersion.create(
            story=story,
            version=1,
            content={
                "title": "T",
                "summary": [{"text": "S", "sources": article_ids}],
                "key_points": [{"text": "K", "sources": article_ids}],
            },
            generator="fallback",
            article_ids=article_ids,
            article_count=len(article_ids),
        )
    return story.id


def job_at(created: datetime, status: str) -> str:
    with transaction():
        job = Job.create(time_window_hours=24, status=status, created_at=created)
        JobCluster.create(job=job, cluster_key="c", article_ids=[], status="done")
        LLMCall.create(
            job=job, model="m", host="h", attempt=1, outcome="ok", latency_ms=1, created_at=created
        )
    return job.id


@pytest.fixture
def aged(configured):
    """Rows of every kind, some older than 30 days and some not."""
    ids = {
        "old": stored(1, OLD, OLD),
        "recent": stored(2, RECENT, RECENT),
        "old_in_a_shown_story": stored(3, OLD, OLD),
        "old_in_an_old_story": stored(4, OLD, OLD),
        "old_but_just_stored": stored(5, OLD, NOW),
    }
    stories = {
        "shown": story_of([ids["old_in_a_shown_story"], ids["recent"]], RECENT),
        "old": story_of([ids["old_in_an_old_story"]], OLD),
    }
    jobs = {
        "old": job_at(OLD, "succeeded"),
        "old_but_running": job_at(OLD, "running"),
        "recent": job_at(RECENT, "failed"),
    }
    with transaction():
        for key, created in (("old", OLD), ("recent", RECENT)):
            SynthesisCache.create(key=key, model="m", story={}, created_at=created)
        for slot in (OLD, RECENT):
            ScheduledRun.create(slot=slot.replace(second=0, microsecond=0))
    return ids, stories, jobs


def test_prune_deletes_what_is_old_and_keeps_what_a_story_shows(aged, monkeypatch):
    ids, stories, jobs = aged
    monkeypatch.setattr(retention, "BATCH", 1)  # every kind takes more than one batch
    deleted = retention.prune(NOW - timedelta(days=30))
    assert deleted == {
        "llm_calls": 2,
        "jobs": 1,
        "articles": 2,
        "cached_replies": 1,
        "scheduled_runs": 1,
    }
    assert {a.id for a in Article.select()} == {
        ids["recent"],
        ids["old_in_a_shown_story"],
        ids["old_but_just_stored"],
    }
    assert {j.id for j in Job.select()} == {jobs["old_but_running"], jobs["recent"]}
    assert {jc.job_id for jc in JobCluster.select()} == {jobs["old_but_running"], jobs["recent"]}
    assert [c.job_id for c in LLMCall.select()] == [jobs["recent"]]
    assert [c.key for c in SynthesisCache.select()] == ["recent"]
    assert ScheduledRun.select().count() == 1

    # Both stories stay readable; the old one has lost its articles, not its versions.
    shown, old = Story.get_by_id(stories["shown"]), Story.get_by_id(stories["old"])
    assert len(shown.to_dict()["articles"]) == 2
    assert old.to_dict()["articles"] == [] and old.versions.count() == 1

    assert set(retention.prune(NOW - timedelta(days=30)).values()) == {0}  # nothing left


def test_the_periodic_task_prunes_by_the_configured_age(tmp_path, ollama):
    init(make_settings(tmp_path, ollama.url, STORYAPP_RETENTION_DAYS="50"))
    try:
        stored(1, OLD, OLD)  # 40 days: young enough for 50
        assert tasks.prune_old_rows.call_local()["articles"] == 0
        tasks.configure(make_settings(tmp_path, ollama.url, STORYAPP_RETENTION_DAYS="10"))
        assert tasks.prune_old_rows.call_local()["articles"] == 1
        assert Article.select().count() == 0
    finally:
        database.close()


def test_pruning_runs_hourly_whatever_the_schedule(tmp_path, ollama):
    for schedule in ("0 * * * *", "off"):
        tasks.configure(make_settings(tmp_path, ollama.url, STORYAPP_SCHEDULE=schedule))
        due = [t.name for t in huey.read_periodic(datetime(2026, 11, 28, 10, 17))]
        assert due == ["prune_old_rows"]
    database.close()
