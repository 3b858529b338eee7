from datetime import datetime, timedelta

import pytest
from conftest import article

from storyapp import clustering, ingest, jobs, ranking
from storyapp.db import transaction
from storyapp.models import Article, utcnow
from storyapp.story import ArticleText, Cited, StoryText

NOW = datetime(2026, 11, 30, 12, 0)


def text(source: str, hours_ago: float) -> ArticleText:
    return ArticleText("t", "s", "c", source, NOW - timedelta(hours=hours_ago), "h")


def importance(articles: list[ArticleText], hours_later: float = 0.0) -> float:
    reach = ranking.reach(articles, NOW)
    return ranking.importance(reach.rank, NOW + timedelta(hours=hours_later))


def test_breadth_counts_more_than_size():
    one_outlet = [text("Live Blog", h) for h in range(8)]
    eight_outlets = [text(f"Outlet {n}", n) for n in range(8)]
    assert importance(eight_outlets) > importance(one_outlet)
    # Each outlet adds one; the articles their logarithm: 8 from one outlet weigh 1 + 3.
    assert importance(one_outlet) == 4.0
    assert importance(eight_outlets) == 11.0


def test_a_story_loses_half_its_weight_every_half_life():
    story = [text("A", 0), text("B", 1)]
    fresh = importance(story)
    assert importance(story, ranking.HALF_LIFE_H) == pytest.approx(fresh / 2, abs=0.001)
    assert importance(story, 2 * ranking.HALF_LIFE_H) == pytest.approx(fresh / 4, abs=0.001)


def test_what_reaches_the_ranking():
    articles = [text("Coast Wire", 5), text("coast  wire ", 2), text("", 9), text("Ledger", 3)]
    reach = ranking.reach(articles, NOW)
    assert reach.sources == 2  # one outlet however it is spelled; a missing name is none
    assert (reach.first_seen, reach.last_seen) == (
        NOW - timedelta(hours=9),
        NOW - timedelta(hours=2),
    )
    # Articles that name no outlet still came from one.
    assert importance([text("", 0), text("", 0)]) == importance([text("A", 0), text("A", 0)])


def test_an_article_dated_ahead_of_the_clock_counts_as_news_of_now():
    ahead = ranking.reach([text("A", -48)], NOW)
    assert ahead.last_seen == NOW + timedelta(hours=48)  # shown as it was given
    assert ranking.importance(ahead.rank, NOW) == importance([text("A", 0)])


# --- ranked by the database, on every engine ----------------------------------------------------

STORY = StoryText(
    title="T", summary=[Cited(text="S", sources=[1])], key_points=[Cited(text="K", sources=[1])]
)


def story_of(first: int, outlets: int, articles: int, hours_ago: float) -> int:
    """A story of `articles` articles from `outlets` outlets, the latest `hours_ago` old."""
    records = [
        article(
            first + n,
            f"Story {first} report {n}",
            source=f"Outlet {n % outlets}",
            hours_ago=hours_ago + n * 0.1,
        )
        for n in range(articles)
    ]
    ingest.store(records)
    rows = list(Article.select().where(Article.url.in_([r["url"] for r in records])))
    ids = [a.id for a in rows]
    window = (utcnow() - timedelta(hours=48), utcnow())
    plan = jobs.ClusterPlan(clustering.cluster_key([a.content_hash for a in rows]), ids, [], window)
    with transaction():
        return jobs.save_story(plan, STORY, "llm", "m", list(jobs.load_texts(ids).values())).id


@pytest.fixture
def stories(configured) -> dict[str, int]:
    # Written in this order, so the last written is the most recently updated.
    return {
        "yesterday's storm": story_of(100, outlets=6, articles=9, hours_ago=20),
        "today's festival": story_of(200, outlets=2, articles=4, hours_ago=1),
        "a storm of now": story_of(300, outlets=5, articles=8, hours_ago=0.5),
        "a lone report": story_of(400, outlets=1, articles=1, hours_ago=0.2),
    }


@pytest.mark.backends
def test_stories_are_listed_by_importance_by_default(stories, client):
    listed = client.get("/stories?hours=48").get_json()["stories"]
    names = {story_id: name for name, story_id in stories.items()}
    # Yesterday's big storm sinks under today's smaller festival.
    assert [names[s["id"]] for s in listed] == [
        "a storm of now",
        "today's festival",
        "yesterday's storm",
        "a lone report",
    ]
    importance = [s["importance"] for s in listed]
    assert importance == sorted(importance, reverse=True)
    storm = listed[2]
    assert (storm["sources"], storm["article_count"], len(storm["articles"])) == (6, 9, 9)
    assert storm["first_seen"] < storm["last_seen"]
    # Sorted by the database: a page is the next slice of the same order.
    page = client.get("/stories?hours=48&sort=importance&limit=2&offset=1").get_json()
    assert [s["id"] for s in page["stories"]] == [s["id"] for s in listed[1:3]]
    assert page["total"] == 4


@pytest.mark.backends
def test_recent_lists_by_the_last_update(stories, client):
    listed = client.get("/stories?hours=48&sort=recent").get_json()["stories"]
    assert [s["id"] for s in listed] == list(reversed(stories.values()))


@pytest.mark.backends
def test_importance_decays_as_it_is_read_later(stories, client, monkeypatch):
    story_id = stories["today's festival"]
    now = client.get(f"/stories/{story_id}").get_json()["importance"]
    monkeypatch.setattr("storyapp.models.utcnow", lambda: utcnow() + timedelta(days=1))
    a_day_later = client.get(f"/stories/{story_id}").get_json()["importance"]
    assert a_day_later == pytest.approx(now / 4, abs=0.002)


def test_the_page_lists_stories_in_the_same_order(stories, client):
    html = client.get("/").get_data(as_text=True)
    listed = client.get("/stories?limit=4").get_json()["stories"]
    positions = [html.index(f'id="story-{s["id"]}"') for s in listed]
    assert positions == sorted(positions)
    assert "from 6 outlets" in html
