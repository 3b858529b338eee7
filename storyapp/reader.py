"""The reader's pages: the stories as a browser asks for them (`GET /stories` and
`GET /stories/<id>` when the client prefers text/html; an API client gets JSON as before).

The list is the same query as the JSON, with its filters (category, outlet, words) and pages;
a story's page shows what it says with each statement's sources as links, its articles with
their times, and its versions, each with what changed. Server-rendered and whole without
JavaScript; no external assets.
"""

from datetime import datetime
from urllib.parse import urlencode

from flask import Response, make_response, render_template, request

from storyapp.dashboard import cited
from storyapp.models import Story, StoryVersion, isoformat, utcnow
from storyapp.story import CATEGORIES, StoryText

# How many outlets the filter offers, the busiest first; any other can still be typed in the URL.
OUTLETS_OFFERED = 50
VERSIONS_SHOWN = 50


def wants_html() -> bool:
    # A browser puts text/html first; curl (*/*), requests and a missing Accept get JSON, as
    # they always did.
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"


def negotiated(body) -> Response:
    """The answer, marked as one that depends on Accept: a cache must not hand the page to an
    API client, nor the JSON to a browser."""
    response = make_response(body)
    response.vary.add("Accept")
    return response


def link(**changes) -> str:
    """This page's URL with some of its query parameters changed (None drops one)."""
    args = {**request.args.to_dict(), **changes}
    query = urlencode({k: v for k, v in args.items() if v not in (None, "")})
    return f"{request.path}?{query}" if query else request.path


def feed_query() -> str:
    """The filters of this listing, as a feed's URL takes them."""
    keep = ("category", "source", "q", "hours", "sort")
    query = urlencode({k: v for k, v in request.args.items() if k in keep and v})
    return f"?{query}" if query else ""


def list_page(stories: list[dict], total: int, limit: int, offset: int, since: datetime) -> str:
    return render_template(
        "reader.html",
        stories=stories,
        total=total,
        first=offset + 1,
        last=offset + len(stories),
        newer=link(offset=max(offset - limit, 0) or None) if offset > 0 else None,
        older=link(offset=offset + limit) if offset + limit < total else None,
        filters={k: request.args.get(k, "") for k in ("q", "category", "source", "sort", "hours")},
        categories=CATEGORIES,
        outlets=Story.outlets(OUTLETS_OFFERED, since),  # of the stories the window holds
        feeds=feed_query(),
    )


def story_page(story: Story) -> str:
    articles = Story.articles_of([story])[story.id]
    numbered = [(n, a.to_dict()) for n, a in enumerate(articles, 1)]  # as cited() numbers them
    merged = None
    if story.merged_into_id is not None:
        merged = Story.get_or_none(Story.id == story.merged_into_id)
    return render_template(
        "story.html",
        story=story.to_dict(articles, utcnow()) | cited(story, articles),
        numbered=numbered,
        versions=versions(story.id),
        merged=merged,
    )


def versions(story_id: int) -> list[dict]:
    """The story's versions, newest first, each with what changed from the one before."""
    rows = list(
        StoryVersion.select()
        .where(StoryVersion.story == story_id)
        .order_by(StoryVersion.version.desc())
        .limit(VERSIONS_SHOWN + 1)  # the one before the oldest shown tells what that changed
    )
    shown = []
    for row, before in zip(rows, [*rows[1:], None], strict=True):
        shown.append(
            {
                "version": row.version,
                "created_at": isoformat(row.created_at),
                "generator": row.generator,
                "model": row.model,
                "article_count": row.article_count,
                "title": StoryText.model_validate(row.content).title,
                "changes": changes(before, row),
            }
        )
    return shown[:VERSIONS_SHOWN]


def changes(before: StoryVersion | None, after: StoryVersion) -> list[str]:
    """What a version changed, in words a reader scans."""
    if before is None:
        if after.version == 1:
            return [f"first written, from {_articles(after.article_count)}"]
        return [f"written from {_articles(after.article_count)}"]
    said = []
    added = len(set(after.article_ids) - set(before.article_ids))
    dropped = len(set(before.article_ids) - set(after.article_ids))
    if added:
        said.append(f"{_articles(added)} added")
    if dropped:
        said.append(f"{_articles(dropped)} out of the window")
    old, new = (StoryText.model_validate(v.content) for v in (before, after))
    if old.title != new.title:
        said.append(f"title was “{old.title}”")
    if [s.text for s in old.summary] != [s.text for s in new.summary]:
        said.append("summary rewritten")
    if [p.text for p in old.key_points] != [p.text for p in new.key_points]:
        said.append("key points rewritten")
    if before.generator != after.generator:
        said.append(f"written by {after.generator}, was {before.generator}")
    return said or ["written again, unchanged"]


def _articles(n: int) -> str:
    return f"{n} article{'s' if n != 1 else ''}"
