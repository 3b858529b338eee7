import json
from datetime import datetime, timedelta

import pytest
from conftest import article

from storyapp import ingest
from storyapp.models import Article, utcnow

RSS = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0">
  <channel>
    <title>Harbour &amp; Coast Wire</title>
    <link>https://wire.example/</link>
    <description>Local news</description>
    <item>
      <title>Storm &lt;b&gt;floods&lt;/b&gt; the harbour</title>
      <link>https://wire.example/storm</link>
      <description>&lt;p&gt;Winds of &lt;b&gt;120 km/h&lt;/b&gt;
        &amp;amp; heavy rain.&lt;/p&gt;</description>
      <pubDate>Tue, 02 Jan 2024 15:04:05 +0200</pubDate>
    </item>
    <item>
      <title>Ferry service resumes</title>
      <link>https://wire.example/ferry</link>
    </item>
  </channel>
</rss>
"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Atom Politics</title>
  <id>urn:uuid:feed</id>
  <updated>2024-01-03T00:00:00Z</updated>
  <entry>
    <title type="html">Vote &lt;em&gt;count&lt;/em&gt; ends</title>
    <link rel="alternate" href="https://atom.example/vote"/>
    <id>urn:uuid:vote</id>
    <updated>2024-01-03T10:00:00-05:00</updated>
    <summary type="html">&lt;p&gt;Results are &lt;i&gt;in&lt;/i&gt;&lt;/p&gt;</summary>
    <content type="xhtml">
      <div xmlns="http://www.w3.org/1999/xhtml"><p>Full <b>text</b> here</p></div>
    </content>
  </entry>
</feed>
"""


def record(**fields) -> dict:
    return {"url": "https://news.example/a", "title": "A title", **fields}


# --- parse_text / parse_bytes -----------------------------------------------------------------


def test_parse_text_json_array():
    records = [record(), record(url="https://news.example/b")]
    assert ingest.parse_text(json.dumps(records)) == records


def test_parse_text_single_object():
    assert ingest.parse_text(json.dumps(record())) == [record()]


def test_parse_text_articles_wrapper():
    text = json.dumps({"articles": [record()], "exported_by": "somewhere"})
    assert ingest.parse_text(text) == [record()]


def test_parse_text_articles_wrapper_must_hold_a_list():
    with pytest.raises(ingest.InputError, match="must be a list"):
        ingest.parse_text(json.dumps({"articles": {"url": "https://x.example"}}))


def test_parse_text_jsonl_skips_blank_lines():
    lines = [json.dumps(record(url=f"https://news.example/{n}")) for n in range(3)]
    text = "\n".join([lines[0], "", lines[1], "   ", lines[2], ""])
    assert [r["url"] for r in ingest.parse_text(text)] == [
        "https://news.example/0",
        "https://news.example/1",
        "https://news.example/2",
    ]


def test_parse_text_jsonl_names_the_bad_line():
    text = json.dumps(record()) + "\n" + json.dumps(record()) + "\n{oops\n"
    with pytest.raises(ingest.InputError, match="line 3"):
        ingest.parse_text(text)


@pytest.mark.parametrize("text", ["", "   \n\t  "])
def test_parse_text_empty(text):
    with pytest.raises(ingest.InputError, match="empty"):
        ingest.parse_text(text)


@pytest.mark.parametrize("text", ["hello world", "{oops", "<<>>", "42", '"a string"', "null"])
def test_parse_text_garbage(text):
    with pytest.raises(ingest.InputError):
        ingest.parse_text(text)


def test_parse_text_deep_nesting_is_an_input_error():
    with pytest.raises(ingest.InputError):
        ingest.parse_text("[" * 100_000 + "]" * 100_000)


def test_parse_bytes_utf8_bom():
    data = b"\xef\xbb\xbf" + json.dumps([record(title="Café")], ensure_ascii=False).encode()
    assert ingest.parse_bytes(data) == [record(title="Café")]


def test_parse_bytes_invalid_utf8():
    with pytest.raises(ingest.InputError, match="UTF-8"):
        ingest.parse_bytes(b'[{"url": "https://x.example", "title": "\xff\xfe"}]')


def test_parse_bytes_rss():
    first, second = ingest.parse_bytes(RSS)
    assert first == {
        "url": "https://wire.example/storm",
        "title": "Storm floods the harbour",
        "summary": "Winds of 120 km/h & heavy rain.",
        "content": "",
        "source": "Harbour & Coast Wire",
        # +0200 in the feed, UTC here
        "published_at": "2024-01-02T13:04:05",
    }
    assert second["url"] == "https://wire.example/ferry"
    assert second["published_at"] is None  # validate() gives it "now"


def test_parse_bytes_atom():
    [entry] = ingest.parse_bytes(b"\n  " + ATOM)
    assert entry["url"] == "https://atom.example/vote"
    assert entry["title"] == "Vote count ends"
    assert entry["summary"] == "Results are in"
    assert entry["content"] == "Full text here"
    assert entry["source"] == "Atom Politics"
    assert entry["published_at"] == "2024-01-03T15:00:00"
    assert ingest.validate(entry)["published_at"] == datetime(2024, 1, 3, 15, 0, 0)


def test_parse_bytes_feed_with_a_bom():
    [first, _] = ingest.parse_bytes(b"\xef\xbb\xbf" + RSS)
    assert first["url"] == "https://wire.example/storm"


def test_parse_bytes_unreadable_feed():
    with pytest.raises(ingest.InputError, match="RSS/Atom"):
        ingest.parse_bytes(b"<not xml at all")


def test_parse_bytes_feed_without_entries_gives_no_records():
    empty = b'<rss version="2.0"><channel><title>Quiet Wire</title></channel></rss>'
    assert ingest.parse_bytes(empty) == []


def test_a_web_page_is_no_feed():
    # It once read as a feed with no entries: "0 new" at every fetch, and no word why.
    with pytest.raises(ingest.InputError, match="not an RSS/Atom feed: an HTML page"):
        ingest.parse_bytes(b"<html><body>a web page, not a feed</body></html>")


# --- validate ---------------------------------------------------------------------------------


def test_validate_accepts_the_fields_news_exports_carry_and_stores_none_of_them():
    extras = {
        "author": "Ann Reporter",
        "image": "https://news.example/a.jpg",
        "language": "pt_BR",
        "categories": ["Politics", "Brazil"],
    }
    dated = {"published_at": "2026-01-02T03:04:05Z"}
    plain = ingest.validate(record(**dated))
    assert ingest.validate(record(**dated, **extras)) == plain
    assert ingest.validate(record(**dated, **dict.fromkeys(extras))) == plain


@pytest.mark.parametrize(
    "field, value",
    [
        ("author", 42),
        ("author", "x" * 1001),
        ("image", "javascript:alert(1)"),
        ("image", ["https://news.example/a.jpg"]),
        ("language", "en GB"),
        ("language", 1),
        ("categories", "Politics"),
        ("categories", [None]),
        ("categories", ["x"] * 101),
    ],
)
def test_validate_refuses_a_malformed_export_field_by_name(field, value):
    with pytest.raises(ValueError, match=f"^{field}"):
        ingest.validate(record(**{field: value}))


def test_validate_keeps_the_fields_and_normalizes_whitespace():
    out = ingest.validate(
        record(
            url="  https://news.example/a  ",
            title="  A \n title  ",
            summary=" s ",
            content=" c ",
            source=" Wire ",
            published_at="2024-05-06T07:08:09",
            event="ignored extra field",
        )
    )
    assert out == {
        "url": "https://news.example/a",
        "title": "A title",
        "summary": "s",
        "content": "c",
        "source": "Wire",
        "published_at": datetime(2024, 5, 6, 7, 8, 9),
        "content_hash": out["content_hash"],
    }
    assert len(out["content_hash"]) == 64


def test_validate_optional_fields_may_be_null():
    out = ingest.validate(record(summary=None, content=None, source=None))
    assert (out["summary"], out["content"], out["source"]) == ("", "", "")


@pytest.mark.parametrize(
    "bad, reason",
    [
        ({"title": "t"}, "url is required"),
        ({"url": "", "title": "t"}, "url is required"),
        ({"url": "   ", "title": "t"}, "url is required"),
        ({"url": None, "title": "t"}, "url is required"),
        ({"url": 42, "title": "t"}, "url is required"),
        ({"url": "https://x.example"}, "title is required"),
        ({"url": "https://x.example", "title": ""}, "title is required"),
        ({"url": "https://x.example", "title": " \n "}, "title is required"),
        ({"url": "https://x.example", "title": ["t"]}, "title is required"),
        ({"url": "https://x.example", "title": "t", "summary": 5}, "summary must be a string"),
        ({"url": "https://x.example", "title": "t", "content": {}}, "content must be a string"),
        ({"url": "https://x.example", "title": "t", "source": True}, "source must be a string"),
        ({"url": "https://x.example", "title": "t", "published_at": 17e8}, "ISO-8601"),
    ],
)
def test_validate_rejects_missing_and_mistyped_fields(bad, reason):
    with pytest.raises(ValueError, match=reason):
        ingest.validate(bad)


@pytest.mark.parametrize("value", [[], "a string", 3, None])
def test_validate_rejects_non_objects(value):
    with pytest.raises(ValueError, match="JSON object"):
        ingest.validate(value)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "javascript:alert(1)",
        "/relative/path",
        "news.example/a",
        "//news.example/a",
        "ftp://news.example/a",
        "http://",
        "data:text/html,hi",
    ],
)
def test_validate_rejects_non_http_urls(url):
    with pytest.raises(ValueError, match="absolute http or https"):
        ingest.validate(record(url=url))


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://news.example/a\x00b", "control characters"),
        ("http://news.example/\nx", "control characters"),
        ("http://news ex.com/a", "space in its host"),
        ("http://news.example:99999/a", "port"),
        ("http://news.example:8o/a", "port"),
    ],
)
def test_validate_rejects_urls_that_name_no_place(url, reason):
    with pytest.raises(ValueError, match=reason):
        ingest.validate(record(url=url))


@pytest.mark.parametrize(
    "url", ["http://news.example/a", "HTTPS://News.Example/a?q=1#x", "http://[::1]:8080/a b"]
)
def test_validate_accepts_http_and_https(url):
    assert ingest.validate(record(url=url))["url"] == url


@pytest.mark.parametrize(
    "field, limit",
    [
        ("title", ingest.MAX_TITLE),
        ("summary", ingest.MAX_SUMMARY),
        ("content", ingest.MAX_CONTENT),
        ("source", ingest.MAX_SOURCE),
    ],
)
def test_validate_length_limits(field, limit):
    assert ingest.validate(record(**{field: "x" * limit}))[field] == "x" * limit
    with pytest.raises(ValueError, match=f"{field} is longer than {limit}"):
        ingest.validate(record(**{field: "x" * (limit + 1)}))


def test_validate_url_length_limit():
    base = "https://news.example/"
    ok = base + "a" * (ingest.MAX_URL - len(base))
    assert ingest.validate(record(url=ok))["url"] == ok
    with pytest.raises(ValueError, match="url is longer"):
        ingest.validate(record(url=ok + "a"))


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "2024-02-30T10:00:00", "", "12"])
def test_validate_rejects_bad_dates(value):
    with pytest.raises(ValueError, match="published_at"):
        ingest.validate(record(published_at=value))


@pytest.mark.parametrize("value", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_validate_rejects_dates_out_of_range_after_utc_conversion(value):
    with pytest.raises(ValueError, match="published_at"):
        ingest.validate(record(published_at=value))


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2024-01-02T15:04:05+02:00", datetime(2024, 1, 2, 13, 4, 5)),
        ("2024-01-02T15:04:05-05:30", datetime(2024, 1, 2, 20, 34, 5)),
        ("2024-01-02T15:04:05Z", datetime(2024, 1, 2, 15, 4, 5)),
        ("2024-01-02T23:30:00-01:00", datetime(2024, 1, 3, 0, 30)),
        ("2024-01-02T15:04:05", datetime(2024, 1, 2, 15, 4, 5)),
        ("2024-01-02", datetime(2024, 1, 2)),
    ],
)
def test_validate_converts_offsets_to_naive_utc(value, expected):
    published = ingest.validate(record(published_at=value))["published_at"]
    assert published == expected
    assert published.tzinfo is None


def test_validate_refuses_unknown_fields_and_accepts_the_event_label():
    with pytest.raises(ValueError, match="unknown field.*'publishd_at'"):
        ingest.validate({"url": "https://a.example/1", "title": "T", "publishd_at": "2026-01-01"})
    article = ingest.validate({"url": "https://a.example/1", "title": "T", "event": "label"})
    assert "event" not in article
    with pytest.raises(ValueError, match="event must be a string"):
        ingest.validate({"url": "https://a.example/1", "title": "T", "event": 3})


def test_validate_defaults_published_at_to_now():
    before = utcnow()
    published = ingest.validate(record())["published_at"]
    after = utcnow()
    assert published.tzinfo is None
    assert before <= published <= after


def test_validate_rejects_text_that_cannot_be_stored():
    # A lone surrogate (legal in JSON as "\ud800") cannot be encoded as UTF-8 for the database.
    for field in ("title", "summary", "content", "source"):
        with pytest.raises(ValueError, match=f"{field} is not valid Unicode"):
            ingest.validate(record(**{field: "bad \ud800 text"}))
    with pytest.raises(ValueError, match="url is not valid Unicode"):
        ingest.validate(record(url="https://news.example/\ud800"))
    # NUL ("\u0000" in JSON): SQLite would store it, PostgreSQL cannot.
    for field in ("title", "summary", "content", "source"):
        with pytest.raises(ValueError, match=f"{field} contains a NUL"):
            ingest.validate(record(**{field: f"https://news.example/\x00{field}"}))
    with pytest.raises(ValueError, match="url must not contain control characters"):
        ingest.validate(record(url="https://news.example/\x00"))


# --- content_hash -----------------------------------------------------------------------------


def test_content_hash_is_stable_and_tracks_the_text():
    one = ingest.validate(record(summary="s", content="c", source="A"))
    again = ingest.validate(record(summary="s", content="c", source="B", published_at="2020-01-01"))
    assert one["content_hash"] == again["content_hash"]  # source and date are not read by the LLM
    assert one["content_hash"] == ingest.content_hash(one)
    for change in ({"title": "Other"}, {"summary": "t"}, {"content": "d"}):
        changed = ingest.validate(record(**{"summary": "s", "content": "c", **change}))
        assert changed["content_hash"] != one["content_hash"]
    # The field separator keeps "ab" + "" apart from "a" + "b".
    left = ingest.validate(record(summary="ab", content=""))
    right = ingest.validate(record(summary="a", content="b"))
    assert left["content_hash"] != right["content_hash"]


# --- store ------------------------------------------------------------------------------------


@pytest.mark.backends
def test_store_creates_articles(configured):
    result = ingest.store([article(1, "Storm floods harbour"), article(2, "Vote count ends")])
    assert result.to_dict() == {"created": 2, "duplicates": 0}
    stored = Article.get(Article.url == "https://news.example/1")
    assert stored.title == "Storm floods harbour"
    assert stored.source == "Test Wire"
    expected = ingest.validate(article(1, "Storm floods harbour"))
    assert stored.content_hash == expected["content_hash"]
    assert utcnow() - timedelta(hours=2) < stored.published_at < utcnow()


@pytest.mark.backends
def test_store_counts_duplicates_within_the_batch(configured):
    result = ingest.store([article(1, "First"), article(1, "Same URL again"), article(2, "B")])
    assert (result.created, result.duplicates, result.rejected) == (2, 1, [])
    # The first record with a URL wins.
    assert Article.get(Article.url == "https://news.example/1").title == "First"


@pytest.mark.backends
def test_store_counts_duplicates_against_the_database(configured):
    ingest.store([article(1, "First"), article(2, "Second")])
    result = ingest.store([article(2, "Second, again"), article(3, "Third"), article(1, "First")])
    assert result.to_dict() == {"created": 1, "duplicates": 2}
    assert Article.select().count() == 3
    assert Article.get(Article.url == "https://news.example/2").title == "Second"


@pytest.mark.backends
def test_store_reports_invalid_records_by_index(configured):
    records = [
        {"title": "no url"},
        article(1, "Fine"),
        "not an object",
        article(2, "Bad date", published_at="soon"),
        article(3, "Also fine"),
        article(4, "Stored by SQLite, not by PostgreSQL", summary="NUL \x00"),
    ]
    result = ingest.store(records)
    assert result.created == 2
    assert result.duplicates == 0
    assert [r["index"] for r in result.rejected] == [0, 2, 3, 5]
    assert "url" in result.rejected[0]["error"]
    assert "published_at" in result.rejected[2]["error"]
    assert "NUL" in result.rejected[3]["error"]
    assert result.to_dict()["rejected"] == result.rejected
    assert sorted(a.url for a in Article.select()) == [
        "https://news.example/1",
        "https://news.example/3",
    ]


def test_store_all_invalid_raises_with_details(configured):
    with pytest.raises(ingest.InputError) as caught:
        ingest.store([{"title": "no url"}, record(url="javascript:alert(1)")])
    rejected = caught.value.details["rejected"]
    assert [r["index"] for r in rejected] == [0, 1]
    assert "absolute http" in rejected[1]["error"]
    assert Article.select().count() == 0


def test_store_empty_batch_raises(configured):
    with pytest.raises(ingest.InputError, match="no articles"):
        ingest.store([])


@pytest.mark.backends
def test_store_a_large_batch_in_chunks(configured):
    result = ingest.store([article(n, f"Article number {n}") for n in range(1200)])
    assert result.to_dict() == {"created": 1200, "duplicates": 0}
    assert Article.select().count() == 1200
