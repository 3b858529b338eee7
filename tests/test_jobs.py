import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from conftest import article
from scripted import NOT_JSON, fits_the_schema, refused
from workers import wait_until

from storyapp import clustering, ingest, jobs, prompt
from storyapp.corpus import same_kind_day
from storyapp.db import transaction
from storyapp.models import (
    PROMPT_MAX_CHARS,
    REPLY_MAX_CHARS,
    Article,
    Job,
    JobCluster,
    LLMCall,
    Story,
    StoryArticle,
    StoryVersion,
    SynthesisCache,
    bounded_prompt,
    utcnow,
)
from storyapp.story import ArticleText, Cited, StoryText

# Exactly once, on every engine: these are the rules that concurrent writers must not break.
pytestmark = pytest.mark.backends

QUAKE = [
    article(1, "Earthquake of magnitude 6.1 strikes Eldham coast", "Homes damaged in Eldham."),
    article(2, "Eldham earthquake: rescuers search damaged homes", "The 6.1 quake hit Eldham."),
    article(3, "Magnitude 6.1 quake shakes Eldham, homes damaged", "Coastal Eldham towns hit."),
]
RATES = [
    article(4, "Central bank raises interest rates half a point", "Inflation stays high."),
    article(5, "Interest rates up half a point at the central bank", "Inflation fight goes on."),
]
BAKERY = [article(6, "Local bakery wins national sourdough award", "A prize for Ferris Bakes.")]


@pytest.fixture
def news(configured):
    ingest.store(QUAKE + RATES + BAKERY)


def run_inline(llm, hours: float = 24, force: bool = False) -> Job:
    """A job planned and written in this thread, each cluster by `llm`."""
    job, created = jobs.request_job(hours, force)
    assert created
    for cluster_id in jobs.plan_job(job.id, llm=llm):
        jobs.run_cluster(cluster_id, llm)
    return Job.get_by_id(job.id)


def test_equal_jobs_are_deduplicated_until_one_ends(configured):
    first, created = jobs.request_job(24, False)
    assert created
    assert jobs.request_job(24, False) == (first, False)
    other, created = jobs.request_job(24, True)
    assert created and other.id != first.id
    close, created = jobs.request_job(24.000001, False)
    assert created and close.id != first.id  # equal means equal, not "close"
    assert jobs.cancel_job(first.id)
    again, created = jobs.request_job(24, False)
    assert created and again.id != first.id


def test_a_job_writes_one_story_per_cluster(news, llm):
    job = run_inline(llm)
    assert job.status == "succeeded"
    assert (job.total, job.done, job.llm, job.single) == (3, 3, 2, 1)
    assert job.finished_at is not None and job.active_key is None
    assert len(llm.history) == 2
    stories = {s.article_count: s for s in Story.select()}
    assert set(stories) == {3, 2, 1}
    assert stories[3].generator == "llm" and stories[3].model == llm.model
    assert stories[1].generator == "single" and stories[1].model is None
    for written in stories.values():  # each cites its own articles, by id
        own = {a.id for a in Story.articles_of([written])[written.id]}
        assert written.text.cited() and written.text.cited() <= own
        assert written.to_dict()["grounding"]["checked"] > 0
    calls = list(LLMCall.select())
    assert len(calls) == 2 and {c.outcome for c in calls} == {"ok"}
    assert all(c.job_id == job.id and c.latency_ms > 0 and c.prompt_tokens for c in calls)


def test_an_unchanged_rerun_calls_nothing_and_rewrites_nothing(news, llm):
    run_inline(llm)
    before = {s.id: s.updated_at for s in Story.select()}
    job = run_inline(llm)
    assert (job.reused, job.llm, job.done, job.status) == (3, 0, 3, "succeeded")
    assert len(llm.history) == 2
    assert {s.id: s.updated_at for s in Story.select()} == before


def test_the_cache_answers_when_the_story_is_gone(news, llm):
    run_inline(llm)
    StoryArticle.delete().execute()
    Story.delete().execute()
    job = run_inline(llm)
    assert (job.cached, job.single, job.llm) == (2, 1, 0)
    assert len(llm.history) == 2
    assert Story.select().where(Story.generator == "llm").count() == 2


def test_force_bypasses_cache_and_reuse(news, llm):
    run_inline(llm)
    job = run_inline(llm, force=True)
    assert (job.llm, job.reused, job.cached) == (2, 0, 0)
    assert len(llm.history) == 4
    assert Story.select().count() == 3  # updated in place, not duplicated


def test_an_added_article_updates_its_story_only(news, llm):
    run_inline(llm)
    quake = Story.get(Story.article_count == 3)
    rates = Story.get(Story.article_count == 2)
    ingest.store([article(7, "Eldham quake: 6.1 magnitude tremor damaged homes", "Aftershocks.")])
    job = run_inline(llm)
    assert (job.llm, job.reused, job.total) == (1, 2, 3)
    updated = Story.get_by_id(quake.id)
    assert updated.article_count == 4
    assert updated.updated_at > quake.updated_at
    assert Story.get_by_id(rates.id).updated_at == rates.updated_at
    assert Story.select().count() == 3


def test_news_of_new_events_rewrites_no_other_story(configured, llm):
    now = utcnow() - timedelta(minutes=5)
    ingest.store(same_kind_day(20, 10, now=now, seed=3, hours=20))
    first = run_inline(llm)
    stories = {s.id: s.updated_at for s in Story.select()}
    new = [{**r, "url": r["url"] + "/new"} for r in same_kind_day(3, 10, now=now, seed=4, hours=20)]
    ingest.store(new)
    job = run_inline(llm)
    assert job.llm == 3  # the three new events, each of several articles
    assert job.reused == first.total and job.total == first.total + 3
    assert {s.id: s.updated_at for s in Story.select().where(Story.id.in_(list(stories)))} == (
        stories
    )


def test_each_cluster_is_settled_once_and_the_job_ends_once(news, llm):
    job, _ = jobs.request_job(24, False)
    pending = jobs.plan_job(job.id)
    assert len(pending) == 2
    outcomes, ends = [], []
    original = jobs._finish_if_complete

    def counting_finish(job_id):
        ended = original(job_id)
        ends.append(ended)
        return ended

    jobs._finish_if_complete = counting_finish
    try:
        # Every cluster run by three threads at once, as if the queue delivered it thrice.
        threads = [
            threading.Thread(target=lambda c=c: outcomes.append(jobs.run_cluster(c, llm)))
            for c in pending
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        jobs._finish_if_complete = original
    assert sorted(o for o in outcomes if o) == ["llm", "llm"]
    assert ends.count(True) == 1
    job = Job.get_by_id(job.id)
    assert (job.status, job.done, job.total, job.llm) == ("succeeded", 3, 3, 2)
    assert Story.select().count() == 3


def test_a_cancelled_job_skips_what_has_not_started(news, llm):
    job, _ = jobs.request_job(24, False)
    pending = jobs.plan_job(job.id)
    assert jobs.cancel_job(job.id)
    assert [jobs.run_cluster(c, llm) for c in pending] == [None, None]
    assert llm.history == []
    statuses = {jc.status for jc in JobCluster.select().where(JobCluster.cluster_key != "")}
    assert "skipped" in statuses
    assert Job.get_by_id(job.id).status == "cancelled"


def test_a_job_cancelled_while_it_is_planned_keeps_the_counts_it_ended_with(news, monkeypatch):
    job, _ = jobs.request_job(24, False)
    cluster_window = jobs.cluster_window

    cancelled = {}

    def cancelled_meanwhile(start, end, force):
        assert jobs.cancel_job(job.id)
        cancelled.update(Job.get_by_id(job.id).to_dict())
        return cluster_window(start, end, force)

    monkeypatch.setattr(jobs, "cluster_window", cancelled_meanwhile)
    assert jobs.plan_job(job.id) == []
    assert Job.get_by_id(job.id).to_dict() == cancelled
    assert JobCluster.select().count() == Story.select().count() == 0


def test_a_cluster_ending_after_its_job_was_cancelled_leaves_the_job_as_it_ended(news, llm):
    job, _ = jobs.request_job(24, False)
    first, second = jobs.plan_job(job.id)
    jobs.run_cluster(first, llm)
    stories = Story.select().count()
    cancelled = {}

    def cancelled_while_the_llm_writes(messages, schema):
        assert jobs.cancel_job(job.id)
        cancelled.update(Job.get_by_id(job.id).to_dict())
        return llm.default(messages, schema)

    llm.enqueue(cancelled_while_the_llm_writes)
    assert jobs.run_cluster(second, llm) is None
    ended = Job.get_by_id(job.id).to_dict()
    assert ended["status"] == "cancelled"
    assert (ended["done"], ended["counts"]) == (cancelled["done"], cancelled["counts"])
    assert JobCluster.get_by_id(second).status == "skipped"
    assert Story.select().count() == stories  # its story was rolled back
    # What the LLM wrote is kept for the next run, and its call is logged, naming no story.
    assert SynthesisCache.select().count() == 2 and LLMCall.select().count() == 2
    assert LLMCall.select().where(LLMCall.story.is_null()).count() == 1


def test_a_cluster_that_cannot_be_settled_fails_the_job_with_a_reason(news, llm):
    job, _ = jobs.request_job(24, False)
    first, second = jobs.plan_job(job.id)
    jobs.run_cluster(first, llm)
    jobs.fail_cluster(second, "OperationalError: disk I/O error")
    job = Job.get_by_id(job.id)
    assert job.status == "failed"
    assert "1 of 3 clusters failed" in job.error and "disk I/O" in job.error


def test_server_down_gives_fallback_stories_and_a_successful_job(news, llm, monkeypatch):
    monkeypatch.setattr("storyapp.synthesis.BACKOFF_S", (0.0, 0.0))
    llm.default = lambda messages, schema: refused()
    job = run_inline(llm)
    assert (job.status, job.fallback, job.single, job.llm) == ("succeeded", 2, 1, 0)
    calls = list(LLMCall.select())
    assert len(calls) == len(llm.history) == 2 * 3  # three attempts per cluster, each logged
    assert all(c.outcome == "error" and "cannot connect" in c.error for c in calls)
    assert SynthesisCache.select().count() == 0  # fallbacks are never cached
    assert {s.generator for s in Story.select()} == {"fallback", "single"}


def test_fallback_stories_are_written_again_once_the_llm_answers(news, llm, monkeypatch):
    monkeypatch.setattr("storyapp.synthesis.BACKOFF_S", (0.0, 0.0))
    llm.default, llm.reachable = (lambda messages, schema: refused()), False
    outage = run_inline(llm)
    assert (outage.fallback, outage.single, outage.upgraded) == (2, 1, 0)
    asked = len(llm.history)

    # Still down: its check says so, and the fallback stories are kept without a request.
    still_down = run_inline(llm)
    assert (still_down.reused, still_down.llm, still_down.fallback) == (3, 0, 0)
    assert len(llm.history) == asked

    llm.default, llm.reachable = fits_the_schema, True
    back = run_inline(llm)
    counts = back.to_dict()["counts"]
    assert (counts["llm"], counts["upgraded"], counts["reused"], counts["fallback"]) == (2, 2, 1, 0)
    assert len(llm.history) == asked + 2
    stories = list(Story.select().where(Story.article_count > 1))
    assert [(s.generator, s.version) for s in stories] == [("llm", 2), ("llm", 2)]
    assert Story.get(Story.article_count == 1).version == 1  # a single stays as it was

    settled = run_inline(llm)  # nothing left to upgrade
    assert (settled.reused, settled.upgraded) == (3, 0) and len(llm.history) == asked + 2


def test_a_story_upgraded_from_the_cache_counts_too(news, llm, monkeypatch):
    monkeypatch.setattr("storyapp.synthesis.BACKOFF_S", (0.0, 0.0))
    run_inline(llm)
    cached = {s.cluster_key: s.content for s in Story.select()}
    # The stories of the multi-article clusters turned fallback (the LLM failed a forced run),
    # while the cache still holds the replies to the same requests.
    with transaction():
        Story.update(generator="fallback", model=None).where(Story.article_count > 1).execute()
    back = run_inline(llm)
    assert (back.cached, back.upgraded, back.llm) == (2, 2, 0)
    assert {s.cluster_key: s.content for s in Story.select()} == cached


def test_without_an_llm_to_ask_fallback_stories_are_kept(news, llm, monkeypatch):
    monkeypatch.setattr("storyapp.synthesis.BACKOFF_S", (0.0, 0.0))
    llm.default = lambda messages, schema: refused()
    run_inline(llm)
    job, _ = jobs.request_job(24, False)
    assert jobs.plan_job(job.id) == []  # no LLM named: nothing to send anywhere
    assert Job.get_by_id(job.id).reused == 3


def test_each_call_names_the_story_it_wrote_with_its_prompt_and_reply(news, llm):
    llm.enqueue(NOT_JSON)  # the first cluster's first reply is no JSON; it is asked again
    run_inline(llm)
    calls = list(LLMCall.select().order_by(LLMCall.id))
    assert [c.outcome for c in calls] == ["invalid", "ok", "ok"]
    assert calls[0].reply == NOT_JSON
    for call, asked in zip(calls, llm.history, strict=True):
        story = Story.get_by_id(call.story_id)
        assert call.story_version == story.version == 1
        assert call.prompt == asked.messages
    assert calls[0].story_id == calls[1].story_id != calls[2].story_id
    assert json.loads(calls[1].reply)["title"] == Story.get_by_id(calls[1].story_id).text.title


def test_a_reply_no_engine_could_store_is_logged_readable(news, llm):
    llm.enqueue("\x00 not JSON \ud800")
    run_inline(llm)
    first = LLMCall.select().order_by(LLMCall.id).first()
    assert (first.outcome, first.reply) == ("invalid", "\ufffd not JSON ?")


def test_the_call_log_keeps_prompts_and_replies_up_to_a_bound(configured):
    # The longest prompt prompt.py builds fits whole.
    long = "A sentence that goes on. " * 2000
    articles = [
        ArticleText(f"Title {n}", long[:300], long, f"Outlet {n}", utcnow(), f"h{n}")
        for n in range(20)
    ]
    messages = prompt.build(articles).messages
    assert sum(len(m["content"]) for m in messages) <= PROMPT_MAX_CHARS
    assert bounded_prompt(messages) == messages
    # A longer one keeps the instructions and is cut in the articles, saying so.
    longer = [messages[0], {"role": "user", "content": "x" * (PROMPT_MAX_CHARS * 2)}]
    kept = bounded_prompt(longer)
    assert kept[0] == messages[0]
    assert kept[1]["content"].startswith("x" * (PROMPT_MAX_CHARS - len(messages[0]["content"])))
    assert kept[1]["content"].endswith(f"[… cut here: {PROMPT_MAX_CHARS * 2} characters in all]")
    assert sum(len(m["content"]) for m in kept) < PROMPT_MAX_CHARS + 100
    reply = "y" * (REPLY_MAX_CHARS + 1)
    with transaction():
        LLMCall.log([call_row(prompt=longer, reply=reply)])
    stored = LLMCall.get()
    assert stored.prompt == kept
    assert len(stored.reply) < REPLY_MAX_CHARS + 100 and stored.reply.startswith("y" * 100)


def call_row(**fields) -> dict:
    row = {
        "job": None,
        "cluster_key": "k",
        "model": "m",
        "story": None,
        "story_version": None,
        "prompt": None,
        "reply": None,
        "host": "h",
        "attempt": 1,
        "outcome": "ok",
        "status_code": None,
        "error": None,
        "latency_ms": 1.0,
        "prompt_tokens": None,
        "completion_tokens": None,
        "latency_includes_queue": True,
    }
    return {**row, **fields}


def test_an_empty_window_succeeds_with_nothing_to_do_and_says_why(configured, llm):
    job = run_inline(llm)
    assert (job.status, job.total, job.done) == ("succeeded", 0, 0)
    shown = job.to_dict()
    assert shown["progress"] == 1.0
    assert shown["error"] is None
    start, end = job.window_start, job.window_end
    window = f"no article in the window {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    assert shown["note"] == f"{window}; no article is stored yet"

    ingest.store([article(1, "Ferry service resumes", hours_ago=5 * 24 + 2.5)])
    job = run_inline(llm)
    assert job.error is None
    assert job.note.endswith("; the newest is 5 days old (a window of 123 hours would hold it)")
    assert llm.history == []


def test_the_note_of_an_empty_window(configured):
    end = utcnow()
    start = end - timedelta(hours=24)
    assert jobs.empty_window_note(start, end).endswith("; no article is stored yet")
    ingest.store([article(1, "From the future", hours_ago=-3)])
    assert jobs.empty_window_note(start, end).endswith("; every article is dated after it")
    ingest.store([article(2, "A month ago", hours_ago=31 * 24 + 1)])
    assert jobs.empty_window_note(start, end).endswith(
        "; the newest is 31 days old (older than the longest window, 720 hours)"
    )
    ingest.store([article(3, "Yesterday", hours_ago=24.5)])
    assert jobs.empty_window_note(start, end).endswith(
        "; the newest is 1 day old (a window of 25 hours would hold it)"
    )
    ingest.store([article(4, "Half an hour ago", hours_ago=0.51)])
    assert jobs.empty_window_note(end - timedelta(minutes=10), end).endswith(
        "; the newest is 30 minutes old (a window of 1 hour would hold it)"
    )


def test_a_job_with_articles_has_no_note(news, llm):
    assert run_inline(llm).to_dict()["note"] is None


def test_eta_follows_the_pace_of_the_clusters_the_workers_wrote():
    started = utcnow() - timedelta(seconds=10)
    job = Job(status="running", started_at=started, total=40, done=25, reused=10, single=5)
    job.llm, job.fallback = 8, 2  # 10 written in 10 s, 15 left
    assert job.to_dict()["eta_s"] == pytest.approx(15.0, abs=0.2)
    job.llm = job.fallback = 0  # only what planning settled: no pace yet
    assert job.to_dict()["eta_s"] is None
    job.llm, job.status = 8, "succeeded"
    assert job.to_dict()["eta_s"] is None


# --- living stories ---------------------------------------------------------------------------

QUAKE_LATER = [
    article(11, "Eldham earthquake: death toll rises as rescuers dig", "Rescuers in Eldham dig."),
    article(12, "Aftershock rattles Eldham a day after 6.1 earthquake", "Eldham homes damaged."),
]
QUAKE_LATEST = [
    article(13, "Eldham earthquake survivors shelter in schools", "The Eldham quake left many."),
    article(14, "Aid reaches Eldham after the magnitude 6.1 earthquake", "Trucks reach Eldham."),
    article(15, "Eldham quake: inquiry into damaged homes ordered", "Eldham homes inspected."),
]


def test_a_story_keeps_its_id_across_runs_and_lists_its_versions(news, llm, client):
    first = run_inline(llm)
    quake = Story.get(Story.article_count == 3)
    others = {s.id: s.updated_at for s in Story.select().where(Story.id != quake.id)}
    assert (quake.version, first.llm) == (1, 2)

    ingest.store(QUAKE_LATER)
    second = run_inline(llm)
    ingest.store(QUAKE_LATEST)
    third = run_inline(llm)

    assert (second.llm, second.reused, third.llm, third.reused) == (1, 2, 1, 2)
    assert Story.select().count() == 3  # updated, never duplicated
    story = client.get(f"/stories/{quake.id}").get_json()
    assert (story["version"], story["article_count"]) == (3, 8)
    assert {a["url"] for a in story["articles"]} >= {a["url"] for a in QUAKE_LATEST}
    # The other stories did not change, so they wrote no version.
    assert {s.id: s.updated_at for s in Story.select().where(Story.id != quake.id)} == others
    assert StoryVersion.select().where(StoryVersion.story != quake.id).count() == 2

    listed = client.get(f"/stories/{quake.id}/versions").get_json()
    assert listed["story_id"] == quake.id and listed["total"] == 3
    versions = listed["versions"]  # newest first
    assert [(v["version"], v["article_count"]) for v in versions] == [(3, 8), (2, 5), (1, 3)]
    assert versions[0]["title"] == story["title"]
    assert len(versions[2]["article_ids"]) == 3
    assert set(versions[2]["article_ids"]) < set(versions[1]["article_ids"])
    assert versions[2]["created_at"] <= versions[1]["created_at"] <= versions[0]["created_at"]
    page = client.get(f"/stories/{quake.id}/versions?limit=1&offset=1").get_json()
    assert [v["version"] for v in page["versions"]] == [2] and page["total"] == 3


def test_versions_of_an_unknown_story_are_404(client):
    response = client.get("/stories/999/versions")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


FIRE = [
    article(21, "Wildfire forces evacuation of Brenton valley", "Crews fight the Brenton fire."),
    article(22, "Brenton valley wildfire: thousands evacuated", "The Brenton fire spreads."),
    article(23, "Brenton wildfire doubles in size overnight", "The valley fire spreads."),
    article(24, "Brenton valley fire: evacuation orders widen", "More Brenton homes evacuated."),
    article(25, "Wildfire in Brenton valley destroys homes", "Brenton fire crews overwhelmed."),
]


def age(urls: list[str], hours: float) -> None:
    """Moves articles back in time, out of the window of the next run."""
    Article.update(published_at=utcnow() - timedelta(hours=hours)).where(
        Article.url.in_(urls)
    ).execute()


def test_a_first_report_grows_into_a_story_of_many_articles(configured, llm):
    ingest.store(FIRE[:1])
    run_inline(llm)
    (first,) = Story.select()
    assert (first.generator, first.article_count) == ("single", 1)
    ingest.store(FIRE[1:])  # the news breaks: four more reports
    job = run_inline(llm)
    assert job.llm == 1
    (story,) = Story.select()  # the same story, not a second one beside the first report
    assert (story.id, story.version, story.article_count) == (first.id, 2, 5)
    assert story.generator == "llm"


def test_a_story_follows_its_event_as_old_articles_leave_the_window(configured, llm):
    ingest.store(FIRE[:3])
    run_inline(llm)
    (first,) = Story.select()
    age([a["url"] for a in FIRE[:2]], hours=30)  # a day and more has passed
    ingest.store(FIRE[3:])
    run_inline(llm)
    (story,) = Story.select()
    assert (story.id, story.version, story.article_count) == (first.id, 2, 3)
    assert {a.url for a in Story.articles_of([story])[story.id]} == {a["url"] for a in FIRE[2:]}


def test_a_story_whose_articles_all_left_the_window_stays_readable(news, llm, client):
    run_inline(llm)
    quake = Story.get(Story.article_count == 3)
    age([a["url"] for a in QUAKE], hours=48)
    job = run_inline(llm)
    assert job.total == 2  # the quake is out of the window
    story = client.get(f"/stories/{quake.id}").get_json()
    assert (story["version"], story["article_count"], len(story["articles"])) == (1, 3, 3)
    assert quake.id in [s["id"] for s in client.get("/stories?hours=24").get_json()["stories"]]


def save(article_ids: list[int]) -> int:
    """Writes a story for a cluster of these articles, as a job settling it would."""
    hashes = [Article.get_by_id(i).content_hash for i in article_ids]
    window = (utcnow() - timedelta(hours=24), utcnow())
    plan = jobs.ClusterPlan(clustering.cluster_key(hashes), article_ids, hashes, window)
    story = StoryText(
        title="T", summary=[Cited(text="S", sources=[1])], key_points=[Cited(text="K", sources=[1])]
    )
    with transaction():
        return jobs.save_story(plan, story, "fallback", None, texts(article_ids)).id


def texts(article_ids: list[int]) -> list:
    return list(jobs.load_texts(article_ids).values())


def test_which_story_a_cluster_continues(configured):
    ingest.store(FIRE + BAKERY + QUAKE)
    ids = {a.url: a.id for a in Article.select()}
    fire = [ids[a["url"]] for a in FIRE]
    bakery, quake = ids[BAKERY[0]["url"]], [ids[a["url"]] for a in QUAKE]
    fire_story, bakery_story = save(fire[:4]), save([bakery])
    # One of the fire story's four articles among three others: another event.
    assert save([fire[0], *quake]) not in (fire_story, bakery_story)
    # All of the one-article story and half of the fire story: the fire story, which shares more.
    assert save([bakery, fire[2], fire[3], fire[4]]) == fire_story
    assert Story.get_by_id(fire_story).version == 2
    assert Story.get_by_id(bakery_story).version == 1


def test_two_stories_of_one_event_are_told_once(client):
    ingest.store(FIRE)
    fire = [a.id for a in Article.select(Article.id).order_by(Article.id)]
    first, second = save(fire[:2]), save(fire[2:4])
    # The event's articles come together in one cluster: it continues one story, and the other
    # is merged into it, no longer listed but still readable.
    assert save(fire) == second
    assert Story.get_by_id(first).merged_into_id == second
    listed = client.get("/stories?hours=24").get_json()
    assert ([s["id"] for s in listed["stories"]], listed["total"]) == ([second], 1)
    assert client.get(f"/stories/{first}").get_json()["merged_into"] == second
    assert client.get(f"/stories/{second}").get_json()["merged_into"] is None
    # A merged story is no candidate to continue: a cluster of its articles alone writes it
    # again (its key), and it is listed again.
    assert save(fire[:2]) == first
    assert Story.get_by_id(first).merged_into_id is None
    assert len(client.get("/stories?hours=24").get_json()["stories"]) == 2


def test_a_story_half_in_a_cluster_is_not_taken_in(configured):
    ingest.store(FIRE + QUAKE)
    ids = {a.url: a.id for a in Article.select()}
    fire, quake = [ids[a["url"]] for a in FIRE], [ids[a["url"]] for a in QUAKE]
    s, t = save(fire[:2]), save(fire[2:5])
    # Another cluster of the same run may hold S's other half and continue it: S stays listed.
    assert save([fire[0], *fire[2:5]]) == t
    assert Story.get_by_id(s).merged_into_id is None
    assert save([fire[1], quake[0]]) == s


def test_a_story_merged_into_one_that_is_taken_in_points_at_the_listed_one(configured):
    ingest.store(FIRE)
    fire = [a.id for a in Article.select(Article.id).order_by(Article.id)]
    a, b = save(fire[:1]), save(fire[1:2])
    ab = save(fire[:2])  # continues b, takes in a
    c = save(fire[2:4])
    assert save(fire[:4]) == c  # continues c, takes in b
    assert ab == b
    assert {Story.get_by_id(i).merged_into_id for i in (a, b)} == {c}


def test_two_clusters_settled_at_once_do_not_both_continue_one_story(configured, lock_waits):
    ingest.store(QUAKE + [article(7, "Eldham quake: aftershock felt", "Another tremor.")])
    ids = [a.id for a in Article.select(Article.id).order_by(Article.id)]
    story = StoryText(
        title="A story",
        summary=[Cited(text="s", sources=[1])],
        key_points=[Cited(text="k", sources=[1])],
    )
    window = (utcnow() - timedelta(hours=24), utcnow())
    with transaction():
        old = jobs.save_story(
            jobs.ClusterPlan("old", ids, [], window), story, "llm", None, texts(ids)
        ).id
    # Each half of the old story's articles is a cluster of its own now, and each shares half
    # of the old story: each alone would continue it. Settled at once, only one may.
    first = jobs.ClusterPlan("first", ids[:2], [], window)
    second = jobs.ClusterPlan("second", ids[2:], [], window)
    first_saved, first_may_commit = threading.Event(), threading.Event()

    def settle_first():
        with transaction():
            story_id = jobs.save_story(first, story, "llm", None, texts(ids[:2])).id
            first_saved.set()
            first_may_commit.wait(60)
        return story_id

    def settle_second():
        with transaction():
            return jobs.save_story(second, story, "llm", None, texts(ids[2:])).id

    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            settled_first = pool.submit(settle_first)
            assert first_saved.wait(30)
            settled_second = pool.submit(settle_second)
            # The first commits only once the second is seen waiting for it: on SQLite for the
            # one writer; on PostgreSQL for the lock on matching stories, or, were that lock
            # gone, for the old story's row, having read the story as it was before the first.
            wait_until(lambda: lock_waits() == 1, what="the second to wait for the first")
        finally:
            first_may_commit.set()
        saved = {"first": settled_first.result(), "second": settled_second.result()}
    assert saved["first"] == old and saved["second"] != old
    links = StoryArticle.select(StoryArticle.story, StoryArticle.article).order_by(
        StoryArticle.article
    )
    assert [(link.story_id, link.article_id) for link in links] == [
        (old, ids[0]),
        (old, ids[1]),
        (saved["second"], ids[2]),
        (saved["second"], ids[3]),
    ]
