import pytest
from conftest import free_port
from feedserver import ENDLESS, SLOW, TO_FILE, atom, item, rss

from storyapp import feeds, ingest
from storyapp.models import Article, Feed

HARBOUR = [
    item(1, "Storm floods the harbour", "Winds and rain."),
    item(2, "Ferry service resumes after the storm", "Boats sail again."),
]
VALLEY = [item(3, "Wildfire forces evacuation of Brenton valley", "Crews fight the fire.")]


@pytest.fixture
def wires(configured, feed_server):
    """An RSS feed with an ETag only and an Atom feed with a Last-Modified only, registered."""
    feed_server.publish("/harbour.rss", rss("Harbour Wire", HARBOUR), last_modified=False)
    feed_server.publish(
        "/valley.atom", atom("Valley News", VALLEY), "application/atom+xml", etag=False
    )
    harbour, _ = feeds.add(feed_server.url("/harbour.rss"))
    valley, _ = feeds.add(feed_server.url("/valley.atom"))
    feed_server.requests.clear()  # the fetches that checked them: the tests count their own
    return harbour, valley


def registered(url: str) -> Feed:
    feed, _ = feeds.register(url, ingest.FeedDocument("", None, []))
    return feed


def outcomes_by_url(outcomes) -> dict:
    return {o.url: o for o in outcomes}


def test_rss_and_atom_feeds_become_articles(wires):
    harbour, valley = wires
    outcomes = outcomes_by_url(feeds.refresh_all())
    assert (outcomes[harbour.url].status, outcomes[harbour.url].created) == ("fetched", 2)
    assert (outcomes[valley.url].status, outcomes[valley.url].created) == ("fetched", 1)
    sources = {a.url: a.source for a in Article.select()}
    assert sources == {
        "https://wire.example/1": "Harbour Wire",
        "https://wire.example/2": "Harbour Wire",
        "https://wire.example/3": "Valley News",
    }
    harbour, valley = Feed.get_by_id(harbour.id), Feed.get_by_id(valley.id)
    assert harbour.last_error is None and harbour.last_success_at is not None
    assert harbour.etag and harbour.last_modified is None
    assert valley.last_modified and valley.etag is None


def test_an_unchanged_feed_answers_304_and_a_changed_one_is_fetched_again(wires, feed_server):
    harbour, valley = wires
    feeds.refresh_all()
    first_fetch = Feed.get_by_id(harbour.id).last_fetched_at
    again = outcomes_by_url(feeds.refresh_all())
    assert {o.status for o in again.values()} == {"not_modified"}
    assert Article.select().count() == 3
    (_, second) = feed_server.headers_sent_to("/harbour.rss")
    assert second["If-None-Match"] == Feed.get_by_id(harbour.id).etag
    (_, second) = feed_server.headers_sent_to("/valley.atom")
    assert second["If-Modified-Since"] == Feed.get_by_id(valley.id).last_modified
    assert Feed.get_by_id(harbour.id).last_fetched_at >= first_fetch

    later = item(4, "Harbour reopens to shipping", "Cranes back at work.")
    feed_server.publish("/harbour.rss", rss("Harbour Wire", [later, *HARBOUR]))
    third = outcomes_by_url(feeds.refresh_all())
    assert (third[harbour.url].status, third[harbour.url].created) == ("fetched", 1)
    assert third[harbour.url].duplicates == 2
    assert third[valley.url].status == "not_modified"


def test_failing_feeds_are_recorded_and_do_not_stop_the_others(wires, feed_server, monkeypatch):
    harbour, valley = wires
    monkeypatch.setattr(feeds, "FETCH_TIMEOUT_S", 0.3)
    feed_server.slow_s = 5.0
    feed_server.publish("/broken.xml", b"Internal error: upstream timed out\n", "text/plain")
    # Registered as if they had worked when added: add() itself refuses such URLs.
    broken, slow, missing, closed = (
        registered(url)
        for url in (
            feed_server.url("/broken.xml"),
            feed_server.url(SLOW),
            feed_server.url("/missing.xml"),
            f"http://127.0.0.1:{free_port()}/feed.xml",
        )
    )

    outcomes = outcomes_by_url(feeds.refresh_all())
    assert outcomes[harbour.url].created == 2 and outcomes[valley.url].created == 1
    assert Article.select().count() == 3
    expected = {
        broken.url: "not a readable RSS/Atom feed",
        slow.url: "no answer within 0.3 s",
        missing.url: "HTTP 404",
        closed.url: "Connection refused",
    }
    for url, fragment in expected.items():
        assert outcomes[url].status == "failed"
        assert fragment in outcomes[url].error
        feed = Feed.get(Feed.url == url)
        assert fragment in feed.last_error
        assert feed.last_fetched_at is not None and feed.last_success_at is None
    assert Feed.get_by_id(harbour.id).last_error is None

    # Fixed at the source, the broken feed recovers on the next run.
    feed_server.publish("/broken.xml", rss("Fixed Wire", [item(9, "Back online", "Fixed.")]))
    assert outcomes_by_url(feeds.refresh_all())[broken.url].created == 1
    broken = Feed.get_by_id(broken.id)
    assert broken.last_error is None and broken.last_success_at is not None


def test_a_body_that_fails_keeps_the_validators_of_the_last_one_stored(wires, feed_server):
    harbour, _ = wires
    feeds.refresh_all()
    stored = Feed.get_by_id(harbour.id).etag
    feed_server.publish("/harbour.rss", b"<html>maintenance</html", "text/html")
    assert outcomes_by_url(feeds.refresh_all())[harbour.url].status == "failed"
    assert Feed.get_by_id(harbour.id).etag == stored
    # So a feed that stays broken keeps failing, instead of a 304 passing for a success.
    assert outcomes_by_url(feeds.refresh_all())[harbour.url].status == "failed"
    assert Feed.get_by_id(harbour.id).last_error is not None


def test_a_feed_larger_than_the_cap_is_cut_off(configured, feed_server, monkeypatch):
    monkeypatch.setattr(feeds, "MAX_FEED_BYTES", 100_000)
    endless = registered(feed_server.url(ENDLESS))
    (outcome,) = feeds.refresh_all()
    assert outcome.status == "failed" and outcome.error == "larger than 100000 bytes"
    assert "larger than" in Feed.get_by_id(endless.id).last_error


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://wire.example/feed.xml", "/feed"])
def test_fetch_reads_only_http_urls(url):
    with pytest.raises(feeds.FetchError, match="http or https"):
        feeds.fetch(url)


def test_fetch_does_not_follow_a_redirect_to_a_file(feed_server):
    with pytest.raises(feeds.FetchError, match="file:///etc/passwd"):
        feeds.fetch(feed_server.url(TO_FILE))


def test_a_feed_is_registered_once(configured, feed_server):
    feed_server.publish("/wire.rss", rss("Harbour Wire", HARBOUR))
    url = feed_server.url("/wire.rss")
    feed, created = feeds.add(f"  {url} ")
    assert created and feed.url == url
    assert feeds.add(url) == (feed, False)
    assert len(feed_server.headers_sent_to("/wire.rss")) == 1
    assert feeds.remove(feed.id) and not feeds.remove(feed.id)
    assert feeds.refresh_all() == []


def test_adding_a_feed_keeps_its_title_and_site_and_stores_nothing_yet(configured, feed_server):
    feed_server.publish("/harbour.rss", rss("Harbour <b>Wire</b>", HARBOUR))
    feed_server.publish("/valley.atom", atom("Valley News", VALLEY), "application/atom+xml")
    harbour, _ = feeds.add(feed_server.url("/harbour.rss"))
    valley, _ = feeds.add(feed_server.url("/valley.atom"))
    assert (harbour.title, harbour.site_url) == ("Harbour Wire", "https://wire.example/")
    assert (valley.title, valley.site_url) == ("Valley News", None)  # it links no site
    # The scheduled run fetches the articles, with the validators of what it stored.
    assert Article.select().count() == 0 and harbour.etag is None


def test_a_refresh_keeps_the_title_the_feed_now_gives(wires, feed_server):
    harbour, _ = wires
    feed_server.publish("/harbour.rss", rss("Harbour & Coast Wire", HARBOUR))
    feeds.refresh_all()
    assert Feed.get_by_id(harbour.id).title == "Harbour & Coast Wire"


@pytest.mark.parametrize(
    "path, body, content_type, reason",
    [
        ("/missing.xml", None, None, "HTTP 404 Not Found"),
        ("/index.html", b"<!DOCTYPE html>\n<html><p>News</html>", "text/html", "an HTML page"),
        ("/cut.rss", b"<rss version='2.0'><channel><title>Cut", "application/rss+xml", "readable"),
        ("/sitemap.xml", b"<urlset><url/></urlset>", "application/xml", "XML of another kind"),
    ],
)
def test_what_is_not_a_feed_is_refused_with_the_reason(
    configured, feed_server, path, body, content_type, reason
):
    if body is not None:
        feed_server.publish(path, body, content_type)
    with pytest.raises(feeds.NotAFeed, match=reason):
        feeds.add(feed_server.url(path))
    assert Feed.select().count() == 0


def test_a_refresh_of_a_page_that_is_no_longer_a_feed_fails(wires, feed_server):
    # An HTML page once read "ok, 0 new" at every run.
    harbour, _ = wires
    feed_server.publish("/harbour.rss", b"<html><body>Moved</body></html>", "text/html")
    outcome = outcomes_by_url(feeds.refresh_all())[harbour.url]
    assert (outcome.status, outcome.error) == ("failed", "not an RSS/Atom feed: an HTML page")


@pytest.mark.parametrize(
    "url", [None, "", "javascript:alert(1)", "file:///etc/passwd", 42, "http://a.example/\x00"]
)
def test_a_feed_must_be_an_http_url(configured, url):
    with pytest.raises(ValueError, match="url"):
        feeds.add(url)
