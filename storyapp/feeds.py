"""Feeds: registered RSS/Atom URLs, fetched with a conditional GET and stored as articles.

Every fetch has a deadline and a size cap, follows only http(s), and sends back the validators
(ETag, Last-Modified) of the last fetch that was stored, so an unchanged feed costs a 304. A feed
that fails is recorded on its row (last error, last success) and never stops the others.
"""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests
from peewee import IntegrityError

from storyapp import ingest
from storyapp.db import transaction
from storyapp.models import Feed, utcnow

log = logging.getLogger(__name__)

# Seconds for one whole fetch (connecting, waiting, reading): a news server answers in one or
# two; beyond this a slow or stalled one would hold up the scheduled run of every other feed.
FETCH_TIMEOUT_S = 20.0
# A feed is tens to hundreds of KiB, a few MiB with full texts; more is a wrong URL (a video,
# an endless stream) that would otherwise fill the worker's memory.
MAX_FEED_BYTES = 8 * 2**20
# Feeds fetched at once. They wait on the network, so threads; the database is written from
# the calling thread only.
PARALLEL_FETCHES = 8
USER_AGENT = "storyapp (RSS/Atom reader)"
ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5"


class FetchError(Exception):
    """A URL that could not be read; the message says why."""


class NotAFeed(ValueError):
    """A URL offered as a feed that cannot be read as one (unreachable, an error status, an
    HTML page, unparseable); the message says why."""


@dataclass
class Fetched:
    status: int  # 200, or 304 when the validators sent still match
    body: bytes
    etag: str | None
    last_modified: str | None


def fetch(
    url: str,
    etag: str | None = None,
    last_modified: str | None = None,
    *,
    timeout: float | None = None,
    max_bytes: int | None = None,
) -> Fetched:
    """GETs an http(s) URL within `timeout` seconds and `max_bytes` (default: a feed's limits),
    conditionally when given validators; raises FetchError."""
    timeout = timeout or FETCH_TIMEOUT_S
    max_bytes = max_bytes or MAX_FEED_BYTES
    try:
        ingest.http_url(url)
    except ValueError as exc:
        raise FetchError(str(exc)) from None
    headers = {"User-Agent": USER_AGENT, "Accept": ACCEPT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    # requests' timeout bounds each wait on the socket, not the whole transfer: the deadline
    # stops a server that drips bytes just fast enough.
    deadline = time.monotonic() + timeout
    try:
        with requests.get(url, headers=headers, timeout=timeout, stream=True) as response:
            etag = response.headers.get("ETag") or etag
            last_modified = response.headers.get("Last-Modified") or last_modified
            if response.status_code == 304:
                return Fetched(304, b"", etag, last_modified)
            if response.status_code >= 400:
                raise FetchError(f"HTTP {response.status_code} {response.reason}")
            body = bytearray()
            # Counted after decompression: a small gzip body can unpack to gigabytes.
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(f"larger than {_size(max_bytes)}")
                if time.monotonic() > deadline:
                    raise FetchError(f"took longer than {timeout:g} s")
    except requests.Timeout:
        raise FetchError(f"no answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise FetchError(str(exc) or type(exc).__name__) from None
    return Fetched(response.status_code, bytes(body), etag, last_modified)


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n % 2**20 == 0 else f"{n} bytes"


# --- the feed list -------------------------------------------------------------------------------


def add(url: str) -> tuple[Feed, bool]:
    """Registers a feed after fetching it once: (feed, created). ValueError for a URL that is
    not absolute http(s), NotAFeed for one that does not serve a feed."""
    url = ingest.http_url(url)
    existing = Feed.get_or_none(Feed.url == url)
    if existing is not None:
        return existing, False
    checked = check(url)
    if isinstance(checked, str):
        raise NotAFeed(checked)
    return register(url, checked)


def check(url: str) -> ingest.FeedDocument | str:
    """Fetches `url` and reads it as a feed: the document, or why it is not one. A feed that
    is registered unread would fail at every scheduled run, or worse, as an HTML page, report
    "0 new" every time: it is refused on the spot instead."""
    try:
        return ingest.read_feed(fetch(url).body)
    except (FetchError, ingest.InputError) as exc:
        return str(exc)


def register(url: str, document: ingest.FeedDocument) -> tuple[Feed, bool]:
    """Stores a feed `check` read: (feed, created)."""
    fields = {"title": document.title or None, "site_url": document.site_url}
    try:
        with transaction():
            return Feed.create(url=url, **fields), True
    except IntegrityError:  # registered at the same moment by another request
        return Feed.get(Feed.url == url), False


@dataclass
class Added:
    url: str
    status: str  # added | registered (already) | refused
    feed: Feed | None = None
    error: str | None = None


def add_many(urls: list[str]) -> list[Added]:
    """Registers several feeds (an OPML import), each checked as `add` does, a few fetched at
    a time; one outcome per distinct URL, in order."""
    outcomes: dict[str, Added] = {}
    for raw in urls:
        try:
            url = ingest.http_url(raw)
        except ValueError as exc:
            outcomes.setdefault(str(raw), Added(str(raw), "refused", error=str(exc)))
            continue
        if url not in outcomes:
            existing = Feed.get_or_none(Feed.url == url)
            outcomes[url] = Added(url, "registered" if existing else "added", existing)
    new = [o for o in outcomes.values() if o.status == "added"]
    if new:
        with ThreadPoolExecutor(min(PARALLEL_FETCHES, len(new)), "feed-check") as pool:
            for outcome, checked in zip(new, pool.map(check, [o.url for o in new]), strict=True):
                if isinstance(checked, str):
                    outcome.status, outcome.error = "refused", checked
                else:
                    outcome.feed, created = register(outcome.url, checked)
                    outcome.status = "added" if created else "registered"
    return list(outcomes.values())


def remove(feed_id: int) -> bool:
    with transaction():
        return Feed.delete().where(Feed.id == feed_id).execute() == 1


# --- refreshing ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    feed_id: int
    url: str
    status: str  # fetched | not_modified | failed
    created: int = 0
    duplicates: int = 0
    error: str | None = None


def refresh_all() -> list[Outcome]:
    """Fetches every registered feed and stores its new articles; one outcome per feed."""
    feeds = list(Feed.select().order_by(Feed.id))
    if not feeds:
        return []
    with ThreadPoolExecutor(min(PARALLEL_FETCHES, len(feeds)), "feed-fetch") as pool:
        downloads = pool.map(_download, feeds)
        return [_settle(feed, got) for feed, got in zip(feeds, downloads, strict=True)]


def _download(feed: Feed) -> tuple[Fetched, ingest.FeedDocument | None] | str:
    """The fetched feed and its document (None for a 304), or why not: network and parsing,
    no database."""
    try:
        fetched = fetch(feed.url, feed.etag, feed.last_modified)
        document = None if fetched.status == 304 else ingest.read_feed(fetched.body)
    except (FetchError, ingest.InputError) as exc:
        return str(exc)
    except Exception as exc:  # whatever a server sends, one feed never stops the others
        log.exception("feed %s: unexpected error", feed.url)
        return f"{type(exc).__name__}: {exc}"
    return fetched, document


def _settle(feed: Feed, got: tuple[Fetched, ingest.FeedDocument | None] | str) -> Outcome:
    """Stores what `_download` got and records the result on the feed's row."""
    now = utcnow()
    outcome = Outcome(feed.id, feed.url, "failed")
    fields = {Feed.last_fetched_at: now}
    if isinstance(got, str):
        outcome.error = got
    else:
        fetched, document = got
        outcome.status = "not_modified" if fetched.status == 304 else "fetched"
        if document is not None:
            # A feed renamed or moved at its source is shown as it now calls itself.
            fields.update({Feed.title: document.title or None, Feed.site_url: document.site_url})
        if document is not None and document.records:
            try:
                result = ingest.store(document.records)
                outcome.created, outcome.duplicates = result.created, result.duplicates
            except ingest.InputError as exc:  # not one entry was a usable article
                outcome.status, outcome.error = "failed", str(exc)
    fields[Feed.last_error] = outcome.error
    if outcome.error is None:
        # The validators change only with a body that was stored: after a failure the next
        # fetch must get the whole feed again, not a 304.
        fields.update(
            {
                Feed.last_success_at: now,
                Feed.etag: fetched.etag,
                Feed.last_modified: fetched.last_modified,
            }
        )
    else:
        log.warning("feed %s: %s", feed.url, outcome.error)
    with transaction():
        Feed.update(fields).where(Feed.id == feed.id).execute()
    return outcome
