"""Generation jobs over the database: request, plan, settle each cluster, finish exactly once.

No Huey here: tasks.py calls these functions. Planning settles every cluster that needs no LLM
(unchanged, cached, one article) on the spot and returns the ones that do; each of those is
settled by `run_cluster`, in whatever thread and order, and the last one ends the job. Every
write is a short transaction: the LLM is never called with one open.
"""

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from peewee import IntegrityError, fn

from storyapp import clustering, counters, ranking, slots, synthesis
from storyapp.counters import Counts
from storyapp.db import in_chunks, lock, transaction
from storyapp.llm import LLM
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
from storyapp.story import ArticleText, StoryText

log = logging.getLogger(__name__)

OUTCOMES = ("llm", "cached", "fallback", "reused", "single")
# A cluster continues a story when it holds at least this share of the story's articles that
# are still in the window.
SAME_STORY_SHARE = 0.5
# Characters of an article's content read for clustering: enough for its lead (clustering.Doc).
LEAD_CHARS = 1500
# The longest window a job takes (api.py, cli.py).
MAX_WINDOW_HOURS = 720


def request_job(hours: float, force: bool) -> tuple[Job, bool]:
    """A new queued job, or the equal one already queued or running: (job, created)."""
    key = Job.key_for(hours, force)
    for _ in range(5):
        try:
            with transaction():
                return Job.create(time_window_hours=hours, force=force, active_key=key), True
        except IntegrityError:
            existing = Job.get_or_none(Job.active_key == key)
            if existing is not None:
                return existing, False
            # It ended between our insert and our read: the key is free again.
    raise RuntimeError(f"could not create or find a job for {key}")


def claim_slot(minute: datetime) -> bool:
    """True for the first run of a schedule slot, False for any later one, in any process: the
    slot's row is unique."""
    try:
        with transaction():
            ScheduledRun.create(slot=minute)
    except IntegrityError:
        return False
    return True


def fail_job(job_id: str, reason: str) -> bool:
    return _end(job_id, "failed", Job.status.in_(Job.ACTIVE), error=reason)


def cancel_job(job_id: str) -> bool:
    """Ends a queued or running job; its clusters not yet started are skipped."""
    return _end(job_id, "cancelled", Job.status.in_(Job.ACTIVE))


def _end(job_id: str, status, condition, error=None) -> bool:
    with transaction():
        ended = (
            Job.update(status=status, finished_at=utcnow(), active_key=None, error=error)
            .where(Job.id == job_id, condition)
            .execute()
        )
        if ended:
            counts = Counts()
            counts.add(counters.JOBS_ENDED, status=status)
            counts.save()
    return ended == 1


@dataclass
class ClusterPlan:
    key: str
    article_ids: list[int]
    content_hashes: list[str]
    window: tuple[datetime, datetime]  # the job's: which articles this run could see


@dataclass(frozen=True)
class Saved:
    id: int
    version: int
    # The LLM wrote anew a story the fallback had written from the same articles.
    upgraded: bool


def plan_job(job_id: str, worker: str | None = None, llm: LLM | None = None) -> list[int]:
    """Starts a queued job: clusters its window and settles what needs no LLM. Returns the
    ids of the JobCluster rows left for `run_cluster`; [] if the job was not queued. `llm` is
    the one the clusters will be written with: asked whether it answers before the fallback's
    stories of unchanged clusters are sent to it again."""
    with transaction():
        started = (
            Job.update(status="running", started_at=utcnow(), planner=worker)
            .where(Job.id == job_id, Job.status == "queued")
            .execute()
        )
    if not started:
        return []
    job = Job.get_by_id(job_id)
    window_end = job.created_at
    window_start = window_end - timedelta(hours=job.time_window_hours)
    plans = cluster_window(window_start, window_end, job.force)
    reusable = {} if job.force else _reusable(job_id, [p.key for p in plans], llm)
    singles = load_texts([p.article_ids[0] for p in plans if len(p.article_ids) == 1])

    pending_rows, counts, counted = [], dict.fromkeys(OUTCOMES, 0), Counts()
    with transaction() as txn:
        for plan in plans:
            row = {"job": job_id, "cluster_key": plan.key, "article_ids": plan.article_ids}
            if plan.key in reusable:
                outcome, story = "reused", reusable[plan.key]
            elif len(plan.article_ids) == 1:
                outcome = "single"
                (article_id,) = plan.article_ids
                single = synthesis.synthesize([singles[article_id]], None)
                written = single.story.with_sources(lambda _, a=article_id: a)
                grounding = (single.checked, 0)
                counted.grounding(*grounding)
                story = save_story(
                    plan, written, "single", None, [singles[article_id]], grounding
                ).id
            else:
                pending_rows.append(row)
                continue
            counts[outcome] += 1
            JobCluster.create(
                **row, status="done", outcome=outcome, story=story, finished_at=utcnow()
            )
        for row in pending_rows:
            JobCluster.create(**row)
        planned = (
            Job.update(
                window_start=window_start,
                window_end=window_end,
                note=None if plans else empty_window_note(window_start, window_end),
                total=len(plans),
                done=len(plans) - len(pending_rows),
                **counts,
            )
            .where(Job.id == job_id, Job.status == "running")
            .execute()
        )
        if not planned:  # cancelled while it was planned: its counts stay as they ended
            txn.rollback()
            return []
        for outcome, n in counts.items():
            if n:
                counted.add(counters.CLUSTERS, n, outcome=outcome)
        counted.save()
    articles = sum(len(p.article_ids) for p in plans)
    log.info(
        "job %s planned: %d articles, %d clusters, %d for the LLM, counts %s",
        job_id,
        articles,
        len(plans),
        len(pending_rows),
        counts,
        extra={
            "job": job_id,
            "articles": articles,
            "clusters": len(plans),
            "for_llm": len(pending_rows),
            "counts": counts,
        },
    )
    finish_if_complete(job_id)
    return [
        jc.id
        for jc in JobCluster.select(JobCluster.id)
        .where(JobCluster.job == job_id, JobCluster.status == "pending")
        .order_by(JobCluster.id)
    ]


def empty_window_note(start: datetime, end: datetime) -> str:
    """Why a window gave no cluster, in a sentence: how old the newest article before it is, and
    the window that would hold it."""
    window = f"no article in the window {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    newest = (
        Article.select(Article.published_at)
        .where(Article.published_at < start)
        .order_by(Article.published_at.desc())
        .first()
    )
    if newest is not None:
        age = end - newest.published_at
        hours = math.ceil(age.total_seconds() / 3600)
        if hours <= MAX_WINDOW_HOURS:
            cover = f"a window of {_count(hours, 'hour')} would hold it"
        else:
            cover = "older than the longest window, 720 hours"
        return f"{window}; the newest is {_age(age)} old ({cover})"
    if Article.select().where(Article.published_at > end).exists():
        return f"{window}; every article is dated after it"
    return f"{window}; no article is stored yet"


def _age(age: timedelta) -> str:
    minutes = age.total_seconds() / 60
    for unit, size in (("day", 24 * 60), ("hour", 60)):
        if minutes >= size:
            return _count(int(minutes // size), unit)
    return _count(max(int(minutes), 1), "minute")


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def cluster_window(start, end, force: bool = False) -> list[ClusterPlan]:
    """The window's articles in clusters. The listed stories' articles in the window are the
    seeds (clustering.cluster): a run takes new articles into the stories they belong to and
    leaves the other stories as they are. `force` clusters the window afresh."""
    rows = list(
        Article.in_window(start, end)
        .select(
            Article.id,
            Article.title,
            Article.summary,
            fn.SUBSTR(Article.content, 1, LEAD_CHARS),
            Article.published_at,
            Article.content_hash,
        )
        .order_by(Article.published_at, Article.id)
        .tuples()
    )
    docs = [
        clustering.Doc(title, published, summary, lead or "")
        for _, title, summary, lead, published, _ in rows
    ]
    seeds = [] if force else _story_seeds(start, end, {row[0]: i for i, row in enumerate(rows)})
    plans = []
    for group in clustering.cluster(docs, seeds=seeds):
        hashes = [rows[i][5] for i in group]
        plans.append(
            ClusterPlan(
                clustering.cluster_key(hashes), [rows[i][0] for i in group], hashes, (start, end)
            )
        )
    return plans


def _story_seeds(start, end, position: dict[int, int]) -> list[list[int]]:
    """Each listed story's articles in the window, as positions; an article two stories hold
    goes with the one updated last."""
    seeds: dict[int, list[int]] = {}
    taken: set[int] = set()
    query = (
        StoryArticle.select(StoryArticle.story, StoryArticle.article)
        .join(Story)
        .switch(StoryArticle)
        .join(Article)
        .where(Story.merged_into.is_null(), Article.published_at.between(start, end))
        .order_by(Story.updated_at.desc(), Story.id.desc())
        .tuples()
    )
    for story_id, article_id in query:
        at = position.get(article_id)
        if at is not None and at not in taken:
            taken.add(at)
            seeds.setdefault(story_id, []).append(at)
    return list(seeds.values())


def _reusable(job_id: str, keys: list[str], llm: LLM | None) -> dict[str, Story]:
    """The stories of these clusters to leave as they are: all, but for those the fallback
    wrote when an LLM answers now. Whether it does is asked once a run, and only when there
    is such a story: a server still down costs one quick check, not a failed request (and its
    retries) for each of them at every run."""
    stories = _stories_by_key(keys)
    stale = [key for key, story in stories.items() if story.generator == "fallback"]
    if not stale:
        return stories
    answers = _answers(llm)
    log.info(
        "job %s: %d fallback stories of unchanged clusters %s",
        job_id,
        len(stale),
        "go to the LLM again" if answers else "are kept: no LLM answers",
        extra={"job": job_id, "fallback_stories": len(stale), "llm_answers": answers},
    )
    if not answers:
        return stories
    return {key: story for key, story in stories.items() if key not in stale}


def _answers(llm: LLM | None) -> bool:
    if llm is None:
        return False
    status = llm.check()
    return bool(status["reachable"] and status["model_available"])


def _stories_by_key(keys: list[str]) -> dict[str, Story]:
    # A merged story is not listed: its cluster coming back is written, not reused, which
    # lists it again (save_story).
    return {
        s.cluster_key: s
        for c in in_chunks(keys)
        for s in Story.select().where(Story.cluster_key.in_(c), Story.merged_into.is_null())
    }


def run_cluster(
    cluster_id: int, llm: LLM | None, worker: str | None = None, lease_s: float = 600.0
) -> str | None:
    """Writes the story of one pending cluster; returns its outcome, or None if the cluster was
    not pending (settled already, or its job cancelled: then it is skipped) or another live
    worker holds it (a task queued twice by recovery)."""
    cluster = JobCluster.to_write(cluster_id)
    if cluster is None or cluster["status"] != "pending":
        return None
    job_id = cluster["job"]
    if cluster["job_status"] != "running":
        with transaction():
            JobCluster.skip(cluster_id)
        return None
    with transaction():
        if not JobCluster.lease(cluster_id, worker, lease_s):
            return None
    ids, texts = _in_order(load_texts(cluster["article_ids"]))
    plan = ClusterPlan(
        cluster["cluster_key"],
        cluster["article_ids"],
        [t.content_hash for t in texts],
        (cluster["window_start"], cluster["window_end"]),
    )
    # A forced job writes every story anew: no reply from the cache.
    known = (lambda key: None) if cluster["force"] else SynthesisCache.story_for
    try:
        # Waiting in line for an LLM slot, however long the line, is not the cluster being
        # lost: the lease is renewed while it waits, so recovery does not hand it to another
        # worker. (Taking the lease only with the slot would leave the cluster unclaimed
        # while it waits, and a retry waits in line again.)
        renewing = slots.while_waiting(lease_s / RENEWALS, _renewal(cluster_id, worker, lease_s))
        with renewing:
            result = synthesis.synthesize(texts, llm, cache=known)
    except LeaseLost as lost:
        log.warning(
            "job %s cluster %s: %s",
            job_id,
            cluster_id,
            lost,
            extra={"job": job_id, "cluster": cluster_id},
        )
        return None
    model = llm.model if llm is not None else None
    outcome = "cached" if result.cached else result.generator
    with transaction() as txn:
        # Written first, kept only if this worker settles the cluster and its job still runs:
        # a task delivered twice, or a cluster that ends after its job was cancelled, rolls
        # its story back, so an ended job's counts are final.
        written_by = result.generator  # a cached reply was written by the LLM too
        saved = save_story(
            plan,
            result.story.with_sources(lambda position: ids[position - 1]),
            written_by,
            model if written_by == "llm" else None,
            texts,
            (result.checked, result.dropped),
        )
        settled = JobCluster.settle(cluster_id, outcome, saved.id, result.error) and Job.count(
            job_id, outcome, saved.upgraded
        )
        # Counts are added in the order of their names (clusters, grounding, then the job's
        # end, then the LLM's), as Counter.add orders the series of one statement: concurrent
        # transactions then lock the same rows in one order, which PostgreSQL needs to never
        # deadlock.
        if settled:
            counts = Counts()
            counts.add(counters.CLUSTERS, outcome=outcome)
            counts.grounding(result.checked, result.dropped)
            counts.save()
            _finish_if_complete(job_id)
        else:
            txn.rollback()
            JobCluster.skip(cluster_id)  # of an ended job: as if never started
        if outcome == "llm":  # the reply serves the next run either way
            SynthesisCache.remember(result.key, model, result.reply)
        # The calls were made either way; they name the story only if it was kept.
        _log_calls(job_id, plan.key, model, result, saved if settled else None)
        calls = Counts()
        calls.llm_calls(model, result.calls)
        calls.save()
    if not settled:
        return None
    if result.error:
        log.warning(
            "job %s cluster %s: fallback story (%s)",
            job_id,
            cluster_id,
            result.error,
            extra={"job": job_id, "cluster": cluster_id, "outcome": outcome},
        )
    return outcome


# A waiting cluster's lease is renewed this many times in its length: a renewal held up (the
# database busy a moment) still comes well before it ends.
RENEWALS = 4


class LeaseLost(Exception):
    """Another worker took the cluster, or it was settled, while this one waited for a slot."""


def _renewal(cluster_id: int, worker: str | None, lease_s: float):
    def renew() -> None:
        with transaction():
            if not JobCluster.lease(cluster_id, worker, lease_s):
                raise LeaseLost("its lease went to another worker while it waited for the LLM")

    return renew


def fail_cluster(cluster_id: int, reason: str) -> str | None:
    """Counts a cluster that could not be settled at all, so its job can still end. Returns
    the cluster's job id (for the log), None for an unknown cluster."""
    jc = JobCluster.get_or_none(JobCluster.id == cluster_id)
    if jc is None:
        return None
    with transaction():
        failed = (
            JobCluster.update(status="failed", error=reason, finished_at=utcnow())
            .where(JobCluster.id == cluster_id, JobCluster.status == "pending")
            .execute()
        )
        if failed:
            Job.update(done=Job.done + 1, failed=Job.failed + 1).where(
                Job.id == jc.job_id
            ).execute()
            counts = Counts()
            counts.add(counters.CLUSTERS, outcome="failed")
            counts.save()
            _finish_if_complete(jc.job_id)
    return jc.job_id


def finish_if_complete(job_id: str) -> bool:
    with transaction():
        return _finish_if_complete(job_id)


def _finish_if_complete(job_id: str) -> bool:
    """Ends a running job whose clusters are all settled, inside the caller's transaction. The
    conditional update is true for exactly one caller, however many finish at once."""
    if not Job.finish_if_complete(job_id):
        return False
    job = Job.get_by_id(job_id)
    problems = []
    if job.failed:
        first = _first_error(job_id, JobCluster.status == "failed")
        problems.append(f"{job.failed} of {job.total} clusters failed; first: {first}")
    if job.fallback:
        # A succeeded job says so too: the stories exist, but not from the LLM, and why.
        first = _first_error(job_id, JobCluster.outcome == "fallback")
        problems.append(f"{job.fallback} clusters used the extractive fallback: {first}")
    if problems:
        job.error = "; ".join(problems)
        job.save(only=[Job.error])
    summary = job.to_dict()
    counts = Counts()
    counts.add(counters.JOBS_ENDED, status=job.status)
    counts.observe(counters.JOB_DURATION, summary["duration_s"] or 0.0)
    counts.save()
    log.log(
        logging.WARNING if job.failed else logging.INFO,
        "job %s %s in %.1f s: %s",
        job_id,
        job.status,
        summary["duration_s"] or 0.0,
        summary["counts"],
        extra={
            "job": job_id,
            "status": job.status,
            "duration_s": summary["duration_s"],
            "counts": summary["counts"],
        },
    )
    return True


def _first_error(job_id: str, condition) -> str | None:
    return (
        JobCluster.select(JobCluster.error)
        .where(JobCluster.job == job_id, condition, JobCluster.error.is_null(False))
        .order_by(JobCluster.id)
        .limit(1)
        .scalar()
    )


def _in_order(texts: dict[int, ArticleText]) -> tuple[list[int], list[ArticleText]]:
    """The articles in an order that holds across a re-ingest (time, then content), which the
    stories' citations are positions in; and their ids in the same order."""
    ids = sorted(texts, key=lambda i: (texts[i].published_at, texts[i].content_hash))
    return ids, [texts[i] for i in ids]


def load_texts(article_ids: list[int]) -> dict[int, ArticleText]:
    return {article_id: ArticleText(*fields) for article_id, *fields in Article.texts(article_ids)}


def _log_calls(
    job_id: str,
    cluster_key: str,
    model: str | None,
    result: synthesis.Synthesis,
    saved: Saved | None,
) -> None:
    LLMCall.log(
        [
            {
                "job": job_id,
                "cluster_key": cluster_key,
                "model": model,
                "story": None if saved is None else saved.id,
                "story_version": None if saved is None else saved.version,
                "prompt": result.messages,
                "reply": call.reply,
                "host": call.host,
                "attempt": call.attempt,
                "outcome": call.outcome,
                "status_code": call.status_code,
                "error": call.error,
                "latency_ms": round(call.latency_ms, 3),
                "latency_includes_queue": call.latency_includes_queue,
                "prompt_tokens": call.prompt_tokens,
                "completion_tokens": call.completion_tokens,
            }
            for call in result.calls
        ]
    )


def save_story(
    plan: ClusterPlan,
    story: StoryText,
    generator: str,
    model: str | None,
    articles: Sequence[ArticleText],
    grounding: tuple[int, int] = (0, 0),
) -> Saved:
    """Creates the cluster's story, or updates the existing story it continues: the one with the
    same key, else the one sharing most of its articles (same id, `updated_at` moves), ranked
    by its `articles` (ranking.py); returns it as Saved. Either way the story gets a new version,
    and the versions before it are kept. Runs in the caller's transaction, which it makes the
    only one matching stories until it ends: two clusters settled at once must not both pick the
    same old story to continue."""
    lock("storyapp.stories")
    same = Story.keyed(plan.key)
    target, absorbed = (None if same is None else (same["id"], same["version"])), []
    if target is None:
        target, absorbed = _continued_stories(plan)
    now = utcnow()
    checked, dropped = grounding
    fields = {
        # What the story says, and how much of what was written for it held up (grounding.py).
        "content": story.to_dict() | {"grounding": {"checked": checked, "dropped": dropped}},
        "generator": generator,
        "model": model,
        "article_count": len(plan.article_ids),
        "version": 1 if target is None else target[1] + 1,
    }
    reach = asdict(ranking.reach(articles, now))
    if target is None:
        story_id = Story.add(plan.key, now, **fields, **reach)
    else:
        story_id = target[0]
        Story.rewrite(story_id, plan.key, now, **fields, **reach)
    StoryArticle.link(story_id, plan.article_ids)
    StoryVersion.record(story_id, plan.article_ids, now, **fields)
    if absorbed:
        # And the stories merged into those before: each points at the one that is listed.
        Story.update(merged_into=story_id).where(
            Story.id.in_(absorbed) | Story.merged_into.in_(absorbed)
        ).execute()
    upgraded = same is not None and same["generator"] == "fallback" and generator == "llm"
    return Saved(story_id, fields["version"], upgraded)


def _continued_stories(plan: ClusterPlan) -> tuple[tuple[int, int] | None, list[int]]:
    """The story this cluster continues, if any, as (id, version), and the other stories it
    takes in. Of the listed stories sharing articles with the cluster, those it holds at least
    SAME_STORY_SHARE of (counting their articles in the window) are its event; it continues
    the one sharing the most and takes in the others it holds more than that share of: two
    stories first written apart, now one event, are told once. Articles out of the window
    count for neither side, and new ones do not dilute the share: a story keeps its id while
    its first reports age out over days, and while one report grows into twenty."""
    shared = StoryArticle.shared(plan.article_ids)
    if not shared:
        return None, []
    visible = StoryArticle.published_between(list(shared), *plan.window)
    candidates = [
        # An article moved in time since the cluster was planned can leave `visible` short.
        (count, count / max(visible.get(story_id, 0), count), story_id)
        for story_id, count in shared.items()
    ]
    eligible = sorted(c for c in candidates if c[1] >= SAME_STORY_SHARE)
    if not eligible:
        return None, []
    # Most articles shared, then the larger share, then the newer story.
    *others, (_, _, story_id) = eligible
    target = Story.select(Story.id, Story.version).where(Story.id == story_id).tuples().get()
    # Taken in only when the cluster holds most of it: at exactly half, another cluster of the
    # same run may hold the other half and be the one to continue it.
    return target, [other for _, share, other in others if share > SAME_STORY_SHARE]
