"""The stories as feeds a reader subscribes to: RSS 2.0, Atom and JSON Feed 1.1.

A story keeps one id across its versions (its page's URL: RSS guid, Atom id, JSON Feed id),
and its update time moves with each version, so a reader shows a rewritten story as updated,
not as a new one. RSS 2.0 has no update time: its pubDate is the time of the version, which
is what readers that go by RSS dates look at. RSS and Atom are built by feedgen (the XML,
escaping and date formats of both, in one well-kept library); JSON Feed is plain JSON.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from feedgen.feed import FeedGenerator
from flask import render_template, request

from storyapp import reader

RSS_TYPE = "application/rss+xml; charset=utf-8"
ATOM_TYPE = "application/atom+xml; charset=utf-8"
JSON_TYPE = "application/feed+json; charset=utf-8"
JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
TITLE = "storyapp"
DESCRIPTION = "News clusters written up as stories, each with its sources."


@dataclass(frozen=True)
class Site:
    root: str  # the server's base URL, ending in /
    feed_url: str  # this feed, as it was asked for
    home_url: str  # the reader's page with the same filters

    @classmethod
    def of_request(cls) -> "Site":
        root = request.url_root
        return cls(root, request.url, f"{root}stories{reader.feed_query()}")

    def story_url(self, story_id: int) -> str:
        return f"{self.root}stories/{story_id}"


def rss(stories: list[dict], site: Site) -> bytes:
    return _feed(stories, site, for_rss=True).rss_str()


def atom(stories: list[dict], site: Site) -> bytes:
    return _feed(stories, site, for_rss=False).atom_str()


def json_feed(stories: list[dict], site: Site) -> dict:
    return {
        "version": JSON_FEED_VERSION,
        "title": TITLE,
        "home_page_url": site.home_url,
        "feed_url": site.feed_url,
        "description": DESCRIPTION,
        "items": [
            {
                "id": site.story_url(story["id"]),
                "url": site.story_url(story["id"]),
                "title": story["title"],
                "summary": story["summary"],
                "content_html": _content(story),
                "date_published": story["created_at"],
                "date_modified": story["updated_at"],
                "tags": [story["category"]] if story["category"] else [],
            }
            for story in stories
        ],
    }


def _feed(stories: list[dict], site: Site, for_rss: bool) -> FeedGenerator:
    feed = FeedGenerator()
    feed.id(site.home_url)
    feed.title(TITLE)
    feed.description(DESCRIPTION)
    # Atom takes the last link given as the feed's own alternate: the self link goes first.
    feed.link(href=site.feed_url, rel="self")
    feed.link(href=site.home_url, rel="alternate")
    feed.language("en")
    updated = [_moment(s["updated_at"]) for s in stories]
    feed.updated(max(updated) if updated else datetime.now(UTC))
    for story in stories:
        entry = feed.add_entry(order="append")
        url = site.story_url(story["id"])
        entry.id(url)
        entry.guid(url, permalink=True)
        entry.title(story["title"])
        entry.link(href=url)
        entry.description(story["summary"])
        entry.content(_content(story), type="CDATA" if for_rss else "html")
        published = story["updated_at"] if for_rss else story["created_at"]
        entry.published(_moment(published))
        entry.updated(_moment(story["updated_at"]))
        if story["category"]:
            entry.category(term=story["category"])
    return feed


def _content(story: dict) -> str:
    return render_template("feed_entry.html", story=story)


def _moment(value: str) -> datetime:
    # The API's timestamps ("2026-11-30T05:45:12Z") are UTC.
    return datetime.fromisoformat(value.removesuffix("Z")).replace(tzinfo=UTC)
