"""Articles in: parse JSON, JSONL or {"articles": [...]}, validate each record, store the new ones.

Invalid records are reported with their index and a reason; the valid ones of the same batch
still land. A URL seen before (in the database or earlier in the batch) counts as a duplicate.
A field the article does not have is refused, not ignored: `publishd_at` would otherwise
quietly become "now". `event` is accepted as a label (the sample's, for scoring the
clustering) and not stored; so are the fields news exports commonly carry (`EXPORT_FIELDS`),
checked for their kind and not stored: nothing in storyapp reads an article's author, image,
language or categories (a story's category is the LLM's, from its own list).
"""

import hashlib
import html as html_lib
import io
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import feedparser

from storyapp.db import in_chunks, transaction
from storyapp.models import Article, utcnow

MAX_URL = 2048
MAX_TITLE = 1000
MAX_SUMMARY = 20_000
MAX_CONTENT = 200_000
MAX_SOURCE = 200
TEXT_LIMITS = {"summary": MAX_SUMMARY, "content": MAX_CONTENT, "source": MAX_SOURCE}
MAX_AUTHOR = 1000
MAX_CATEGORIES = 100
MAX_CATEGORY = 200
# A BCP 47 tag as exports write it: "en", "en-GB", "pt_BR", "zh-Hant".
LANGUAGE = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*")


class InputError(ValueError):
    """The batch as a whole is unusable (not one bad record: those are reported per index)."""

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.details = details


@dataclass
class IngestResult:
    created: int = 0
    duplicates: int = 0
    rejected: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {"created": self.created, "duplicates": self.duplicates}
        if self.rejected:
            out["rejected"] = self.rejected
        return out


def parse_bytes(data: bytes) -> list:
    """Records from JSON, JSONL, or an RSS/Atom feed (told apart by the first character)."""
    # A UTF-8 byte order mark may come first, in a feed as in JSON.
    if data.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"<":
        return parse_feed(data)
    try:
        return parse_text(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise InputError("the input is neither UTF-8 JSON nor an RSS/Atom feed") from None


@dataclass
class FeedDocument:
    title: str  # the feed's own title ("" when it has none)
    site_url: str | None  # the site it belongs to, when it names an http(s) one
    records: list


def parse_feed(data: bytes) -> list:
    """Records from an RSS or Atom document."""
    return read_feed(data).records


def read_feed(data: bytes) -> FeedDocument:
    """An RSS or Atom document: its title, its site and its records; feedparser copes with the
    many dialects. InputError for anything else, with what it looks like."""
    feed = feedparser.parse(io.BytesIO(data))  # given bytes, it would first try them as a path
    head = data[:2048].lower()
    if not feed.version and not feed.entries and (b"<html" in head or b"<!doctype html" in head):
        # The site's page given instead of its feed: said plainly, not as a parse error (most
        # pages are not well-formed XML) nor as a feed with nothing in it.
        raise InputError("not an RSS/Atom feed: an HTML page")
    if feed.bozo and not feed.entries:
        raise InputError(f"not a readable RSS/Atom feed: {feed.get('bozo_exception')}")
    if not feed.version and not feed.entries:
        raise InputError("not an RSS/Atom feed: XML of another kind")
    source = _plain(feed.feed.get("title", ""))
    records = []
    for entry in feed.entries:
        published = entry.get("published_parsed") or entry.get("updated_parsed")
        if published is not None:  # feedparser gives a UTC struct_time
            published = datetime(*published[:6]).isoformat()
        content = entry.get("content") or []
        records.append(
            {
                "url": entry.get("link"),
                "title": _plain(entry.get("title", "")),
                "summary": _plain(entry.get("summary", "")),
                "content": _plain(content[0].get("value", "")) if content else "",
                "source": source,
                "published_at": published,
            }
        )
    try:
        site_url = http_url(feed.feed.get("link"))
    except ValueError:
        site_url = None
    return FeedDocument(source, site_url, records)


def _plain(html: str) -> str:
    # Feed fields carry HTML; the prompt and the clustering want the words.
    return " ".join(html_lib.unescape(TAG.sub(" ", html)).split())


TAG = re.compile(r"<[^>]+>")


def parse_text(text: str) -> list:
    """Records from a JSON document (one article, a list, or {"articles": [...]}) or JSONL."""
    stripped = text.strip()
    if not stripped:
        raise InputError("no articles: the input is empty")
    try:
        return records_from(json.loads(stripped))
    except json.JSONDecodeError as exc:
        first_error = exc
    except RecursionError:
        raise InputError("not JSON: the input nests too deeply") from None
    records = []
    for number, line in enumerate(stripped.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, RecursionError):
            if number == 1:
                raise InputError(f"not JSON or JSONL: {first_error}") from None
            raise InputError(f"line {number} is not valid JSON") from None
    return records


def records_from(document) -> list:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        if "articles" in document:
            if not isinstance(document["articles"], list):
                raise InputError('"articles" must be a list')
            return document["articles"]
        return [document] if document else []
    raise InputError('expected an article object, a list of articles or {"articles": [...]}')


EXPORT_FIELDS = ("author", "image", "language", "categories")
FIELDS = ("url", "title", "summary", "content", "source", "published_at", "event", *EXPORT_FIELDS)


def validate(record) -> dict:
    """Returns the article's fields ready to store, or raises ValueError with the reason."""
    if not isinstance(record, dict):
        raise ValueError("an article must be a JSON object")
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        shown = ", ".join(repr(name)[:40] for name in unknown[:5])
        raise ValueError(f"unknown field(s) {shown}; an article has {', '.join(FIELDS)}")
    if not isinstance(record.get("event", ""), str):
        raise ValueError("event must be a string")
    check_export_fields(record)
    url = http_url(record.get("url"))
    title = record.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ValueError("title is required and must be a non-empty string")
    if len(title) > MAX_TITLE:
        raise ValueError(f"title is longer than {MAX_TITLE} characters")
    article = {"url": url, "title": " ".join(title.split())}
    for name, limit in TEXT_LIMITS.items():
        value = record.get(name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
        if len(value) > limit:
            raise ValueError(f"{name} is longer than {limit} characters")
        article[name] = value.strip()
    for name in ("url", "title", *TEXT_LIMITS):
        # JSON allows a lone surrogate ("\ud800"); the database cannot store one.
        try:
            article[name].encode()
        except UnicodeEncodeError:
            raise ValueError(f"{name} is not valid Unicode text") from None
        # JSON allows NUL ("\u0000") too; SQLite stores it, PostgreSQL's text cannot.
        if "\x00" in article[name]:
            raise ValueError(f"{name} contains a NUL character")
    article["published_at"] = parse_datetime(record.get("published_at"))
    article["content_hash"] = content_hash(article)
    return article


def check_export_fields(record: dict) -> None:
    """The export fields are not stored, but a malformed one is still refused: it says the
    record is not what its producer meant it to be. null stands for absent, as exports write."""
    author = record.get("author")
    if author is not None and (not isinstance(author, str) or len(author) > MAX_AUTHOR):
        raise ValueError(f"author must be a string of at most {MAX_AUTHOR} characters")
    image = record.get("image")
    if image is not None:
        try:
            http_url(image)
        except ValueError as exc:
            raise ValueError(f"image: {exc}") from None
    language = record.get("language")
    if language is not None and not (isinstance(language, str) and LANGUAGE.fullmatch(language)):
        raise ValueError('language must be a language tag such as "en" or "en-GB"')
    categories = record.get("categories")
    if categories is not None and not (
        isinstance(categories, list)
        and len(categories) <= MAX_CATEGORIES
        and all(isinstance(c, str) and len(c) <= MAX_CATEGORY for c in categories)
    ):
        raise ValueError(
            f"categories must be a list of at most {MAX_CATEGORIES} strings "
            f"of at most {MAX_CATEGORY} characters"
        )


def http_url(url) -> str:
    """The URL, stripped, if it is an absolute http(s) URL; else ValueError with the reason."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("url is required and must be a string")
    url = url.strip()
    if len(url) > MAX_URL:
        raise ValueError(f"url is longer than {MAX_URL} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("url must not contain control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("url must be an absolute http or https URL")
    if any(c.isspace() for c in parts.netloc):
        raise ValueError("url has a space in its host")
    try:
        parts.port  # noqa: B018 (raises for a port that is no port)
    except ValueError:
        raise ValueError("url has a port that is not a number from 0 to 65535") from None
    return url


def parse_datetime(value) -> datetime:
    if value is None:
        return utcnow()
    if not isinstance(value, str):
        raise ValueError("published_at must be an ISO-8601 string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"published_at is not an ISO-8601 date: {value[:40]!r}") from None
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError(f"published_at is out of range: {value[:40]!r}") from None
    return parsed


def content_hash(article: dict) -> str:
    text = "\x1f".join(article[k] for k in ("url", "title", "summary", "content"))
    return hashlib.sha256(text.encode()).hexdigest()


def store(records: list) -> IngestResult:
    """Validates and stores a batch; raises InputError only when nothing in it is usable."""
    if not records:
        raise InputError("no articles in the input")
    result = IngestResult()
    fresh: dict[str, dict] = {}
    for index, record in enumerate(records):
        try:
            article = validate(record)
        except ValueError as exc:
            result.rejected.append({"index": index, "error": str(exc)})
            continue
        if article["url"] in fresh:
            result.duplicates += 1
        else:
            fresh[article["url"]] = article
    if not fresh:
        first = result.rejected[0]["error"]
        raise InputError(f"every article was invalid; first: {first}", rejected=result.rejected)
    rows = list(fresh.values())
    with transaction():
        for chunk in in_chunks(rows):
            inserted = Article.insert_many(chunk).on_conflict_ignore().as_rowcount().execute()
            result.created += inserted
            result.duplicates += len(chunk) - inserted
    return result
