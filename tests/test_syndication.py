"""The feeds out, read back by feedparser as a feed reader reads them: RSS 2.0, Atom and JSON
Feed, with the listing's filters, and ids that stay while a story is updated."""

import json
from datetime import timedelta

import feedparser
import pytest
from test_reader import stories, write_story  # noqa: F401 (a fixture and its helper)

from storyapp.models import utcnow

FEEDS = ("/feed.xml", "/feed.atom")


def parsed(client, path: str):
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    feed = feedparser.parse(response.get_data())
    assert not feed.bozo, feed.bozo_exception  # well-formed, by a real parser
    return response, feed


@pytest.mark.parametrize(
    ("path", "version", "content_type"),
    [
        ("/feed.xml", "rss20", "application/rss+xml"),
        ("/feed.atom", "atom10", "application/atom+xml"),
    ],
)
def test_rss_and_atom_carry_every_story_with_its_page(stories, client, path, version, content_type):  # noqa: F811
    response, feed = parsed(client, path)
    assert response.content_type.startswith(content_type)
    assert feed.version == version
    listed = client.get("/stories?sort=recent").get_json()["stories"]  # newest update first
    assert [e.title for e in feed.entries] == [s["title"] for s in listed]
    for entry, story in zip(feed.entries, listed, strict=True):
        page = f"http://localhost/stories/{story['id']}"
        assert entry.id == page and entry.link == page
        assert story["summary"] in entry.summary
        # The content links every source.
        content = entry.content[0].value if "content" in entry else entry.summary
        for a in story["articles"]:
            assert f'href="{a["url"]}"' in content
        assert [t.term for t in entry.tags] == [story["category"]]
    assert feed.feed.link == "http://localhost/stories"


def test_json_feed_carries_every_story(stories, client):  # noqa: F811
    response = client.get("/feed.json")
    assert response.content_type.startswith("application/feed+json")
    feed = json.loads(response.get_data())
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["feed_url"] == "http://localhost/feed.json"
    listed = client.get("/stories?sort=recent").get_json()["stories"]
    assert [i["id"] for i in feed["items"]] == [
        f"http://localhost/stories/{s['id']}" for s in listed
    ]
    item, story = feed["items"][0], listed[0]
    assert (item["title"], item["summary"], item["tags"]) == (
        story["title"],
        story["summary"],
        [story["category"]],
    )
    assert (item["date_published"], item["date_modified"]) == (
        story["created_at"],
        story["updated_at"],
    )
    # What JSON Feed 1.1 requires (feedparser 6.0 reads no JSON Feed): a title, and a string
    # id on every item, with content.
    assert feed["title"] == "storyapp"
    assert all(isinstance(i["id"], str) and i["content_html"] for i in feed["items"])


@pytest.mark.backends
def test_feeds_take_the_listing_filters(stories, client):  # noqa: F811
    for path in FEEDS:
        _, feed = parsed(client, f"{path}?q=flood&category=politics")
        assert [e.id for e in feed.entries] == [f"http://localhost/stories/{stories['budget']}"]
        _, feed = parsed(client, f"{path}?source=coast+wire&limit=1")
        assert len(feed.entries) == 1
    items = json.loads(client.get("/feed.json?category=sports").get_data())["items"]
    assert [i["id"] for i in items] == [f"http://localhost/stories/{stories['match']}"]
    assert client.get("/feed.xml?category=weather").status_code == 422
    assert client.get("/feed.json?limit=0").status_code == 422


@pytest.mark.backends
def test_an_updated_story_keeps_its_id_and_shows_as_updated(configured, client, monkeypatch):
    story_id = write_story(700, "Quake hits Eldham", "A quake hit Eldham.", ["Coast Wire"])
    before = {path: parsed(client, path)[1].entries[0] for path in FEEDS}
    item_before = json.loads(client.get("/feed.json").get_data())["items"][0]

    # An hour later, a new report: the same story, a new version.
    later = utcnow() + timedelta(hours=1)
    monkeypatch.setattr("storyapp.jobs.utcnow", lambda: later)
    again = write_story(
        700, "Eldham quake: homes damaged", "Homes were damaged.", ["Coast Wire", "Ledger"]
    )
    assert again == story_id
    for path in FEEDS:
        (after,) = parsed(client, path)[1].entries
        assert after.id == before[path].id == f"http://localhost/stories/{story_id}"
        assert after.title == "Eldham quake: homes damaged"
        # RSS 2.0 has no update time: its pubDate is the version's.
        moment = "published_parsed" if path == "/feed.xml" else "updated_parsed"
        assert after[moment] > before[path][moment]
    atom = parsed(client, "/feed.atom")[1].entries[0]
    assert atom.published_parsed == before["/feed.atom"].published_parsed  # first written
    (item,) = json.loads(client.get("/feed.json").get_data())["items"]
    assert item["id"] == item_before["id"]
    assert item["date_published"] == item_before["date_published"]
    assert item["date_modified"] > item_before["date_modified"]


def test_markup_in_a_story_is_escaped_in_every_feed(configured, client):
    write_story(800, "Fire & <b>smoke</b>", "A <script>x</script> fire.", ["<i>Wire</i>"])
    for path in FEEDS:
        (entry,) = parsed(client, path)[1].entries
        assert entry.title == "Fire & <b>smoke</b>"  # the title, as text
    items = json.loads(client.get("/feed.json").get_data())["items"]
    assert "&lt;script&gt;" in items[0]["content_html"]
    assert "<script>" not in items[0]["content_html"]


def test_an_empty_feed_is_still_a_feed(configured, client):
    for path in FEEDS:
        _, feed = parsed(client, path)
        assert feed.entries == [] and feed.feed.title == "storyapp"
    assert json.loads(client.get("/feed.json").get_data())["items"] == []


def test_a_reader_polling_an_unchanged_feed_gets_a_304(configured, client):
    write_story(900, "Quake hits Eldham", "A quake hit Eldham.", ["Coast Wire"])
    for path in (*FEEDS, "/feed.json"):
        etag = client.get(path).headers["ETag"]
        unchanged = client.get(path, headers={"If-None-Match": etag})
        assert unchanged.status_code == 304 and unchanged.get_data() == b"", path
    etags = {path: client.get(path).headers["ETag"] for path in (*FEEDS, "/feed.json")}
    write_story(900, "Eldham quake: homes damaged", "Homes were damaged.", ["Coast Wire", "X"])
    for path, etag in etags.items():
        assert client.get(path, headers={"If-None-Match": etag}).status_code == 200, path
