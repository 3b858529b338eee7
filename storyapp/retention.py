"""Retention: deletes what is older than STORYAPP_RETENTION_DAYS, a small batch at a time.

Old articles go, except those of a story updated within the retention age (a story still shown
keeps its articles); so do LLM call rows, ended jobs with their clusters, cached replies and
the slots of past scheduled runs. Stories and their versions stay: a story stays readable by
id after its articles are gone.
"""

from datetime import datetime

from storyapp.db import transaction
from storyapp.models import (
    Article,
    Job,
    LLMCall,
    ScheduledRun,
    Story,
    StoryArticle,
    SynthesisCache,
)

# Rows per delete transaction. SQLite has one writer: a generation job's workers wait while
# retention deletes, and a job row takes its clusters with it.
BATCH = 200


def prune(cutoff: datetime) -> dict[str, int]:
    """Deletes the rows older than `cutoff`; returns how many of each kind."""
    shown = StoryArticle.select(StoryArticle.article).join(Story).where(Story.updated_at >= cutoff)
    return {
        "llm_calls": _delete(LLMCall, LLMCall.created_at < cutoff),
        "jobs": _delete(Job, Job.created_at < cutoff, Job.status.not_in(Job.ACTIVE)),
        "articles": _delete(
            Article,
            Article.published_at < cutoff,
            # Stored recently, an old entry that a feed still lists is kept: deleted now, it
            # would come back with the next fetch.
            Article.ingested_at < cutoff,
            Article.id.not_in(shown),
        ),
        "cached_replies": _delete(SynthesisCache, SynthesisCache.created_at < cutoff),
        "scheduled_runs": _delete(ScheduledRun, ScheduledRun.slot < cutoff),
    }


def _delete(model, *conditions) -> int:
    key = model._meta.primary_key
    deleted = 0
    while True:
        keys = [k for (k,) in model.select(key).where(*conditions).limit(BATCH).tuples()]
        if not keys:
            return deleted
        with transaction():
            # The conditions again: a row may have changed since it was read (an old article
            # just taken into a story that a job is writing).
            deleted += model.delete().where(key.in_(keys), *conditions).execute()
