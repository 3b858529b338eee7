import json
import re
import shutil
from datetime import timedelta

import pytest
from conftest import article, free_port, init, make_settings, wait_for_job
from feedserver import atom, item, rss
from scripted import NOT_JSON
from workers import report_from

from storyapp import feeds, ingest, jobs, recovery, tasks
from storyapp.api import create_app
from storyapp.db import database
from storyapp.models import TABLES, Job, Story, utcnow


def assert_error(response, status: int, code: str | None = None) -> dict:
    """Every error is JSON {"error": {"code", "message"}}, never an HTML page."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert b"<html" not in response.get_data().lower()
    body = response.get_json()
    assert list(body) == ["error"]
    error = body["error"]
    assert re.fullmatch(r"[a-z][a-z0-9_]*", error["code"])
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def post_json(client, path, body, **kwargs):
    return client.post(path, data=json.dumps(body), content_type="application/json", **kwargs)


def post_raw(client, path, data, content_type="application/json"):
    return client.post(path, data=data, content_type=content_type)


# --- POST /articles ---------------------------------------------------------------------------


def test_post_one_article(client):
    response = post_json(client, "/articles", article(1, "Storm floods harbour"))
    assert response.status_code == 201
    assert response.get_json() == {"created": 1, "duplicates": 0}


def test_post_a_list_then_duplicates(client):
    batch = [article(1, "One"), article(2, "Two"), article(2, "Two again")]
    response = post_json(client, "/articles", batch)
    assert response.status_code == 201
    assert response.get_json() == {"created": 2, "duplicates": 1}
    again = post_json(client, "/articles", [article(1, "One"), article(3, "Three")])
    assert again.status_code == 201
    assert again.get_json() == {"created": 1, "duplicates": 1}


def test_post_articles_wrapper(client):
    response = post_json(client, "/articles", {"articles": [article(1, "A"), article(2, "B")]})
    assert response.status_code == 201
    assert response.get_json() == {"created": 2, "duplicates": 0}
    assert client.get("/articles").get_json()["total"] == 2


def test_post_articles_reports_rejected_by_index(client):
    batch = [
        article(1, "Good one"),
        {"url": "file:///etc/passwd", "title": "local file"},
        article(2, "Good two"),
        {"url": "https://news.example/9"},
    ]
    response = post_json(client, "/articles", batch)
    assert response.status_code == 201
    body = response.get_json()
    assert (body["created"], body["duplicates"]) == (2, 0)
    assert [r["index"] for r in body["rejected"]] == [1, 3]
    assert "http" in body["rejected"][0]["error"]
    assert "title" in body["rejected"][1]["error"]
    urls = {a["url"] for a in client.get("/articles").get_json()["articles"]}
    assert urls == {"https://news.example/1", "https://news.example/2"}


EXPORTED = {
    "author": "Ann Reporter",
    "image": "https://news.example/storm.jpg",
    "language": "en-GB",
    "categories": ["Weather", "Coast"],
}


def test_post_articles_takes_the_fields_news_exports_carry(client):
    with_extras = {**article(1, "Storm floods harbour"), **EXPORTED}
    with_nulls = {**article(2, "Ferry resumes"), **dict.fromkeys(EXPORTED)}
    response = post_json(client, "/articles", [with_extras, with_nulls])
    assert (response.status_code, response.get_json()) == (201, {"created": 2, "duplicates": 0})


@pytest.mark.parametrize(
    "field, value",
    [
        ("author", 5),
        ("author", ["Ann", "Bo"]),
        ("image", "storm.jpg"),
        ("language", "English (UK)"),
        ("categories", "Weather"),
        ("categories", ["Weather", 7]),
    ],
)
def test_post_articles_refuses_a_malformed_export_field_by_name(client, field, value):
    error = assert_error(
        post_json(client, "/articles", {**article(1, "Storm"), field: value}),
        422,
        "invalid_articles",
    )
    assert error["message"].startswith(f"every article was invalid; first: {field}")
    assert client.get("/articles").get_json()["total"] == 0


@pytest.mark.parametrize("body", [[], {}, {"articles": []}])
def test_post_no_articles_is_422(client, body):
    assert_error(post_json(client, "/articles", body), 422)


@pytest.mark.parametrize("body", ["a string", 42, None, {"articles": "nope"}])
def test_post_articles_wrong_document_is_422(client, body):
    assert_error(post_json(client, "/articles", body), 422)


def test_post_all_invalid_is_422_with_the_reasons(client):
    bad = [{"url": "javascript:alert(1)", "title": "x"}, {"title": "no url"}]
    error = assert_error(post_json(client, "/articles", bad), 422, "invalid_articles")
    assert [r["index"] for r in error["rejected"]] == [0, 1]
    assert client.get("/articles").get_json()["total"] == 0


def test_post_article_that_cannot_be_stored_is_rejected_not_500(client):
    # "\ud800" is valid JSON but not storable text.
    raw = '[{"url": "https://news.example/1", "title": "t", "source": "\\ud800"}]'
    assert_error(post_raw(client, "/articles", raw), 422)
    raw = '[{"url": "https://news.example/1", "title": "t", "published_at": "0001-01-01T00:00+01"}]'
    assert_error(post_raw(client, "/articles", raw), 422)


def test_post_articles_not_json_is_415(client):
    data = json.dumps(article(1, "A"))
    assert_error(post_raw(client, "/articles", data, "text/plain"), 415, "unsupported_media_type")
    assert_error(client.post("/articles", data={"url": "x"}), 415)


@pytest.mark.parametrize("data", ['{"url": ', "[1, 2,]", "{'single': 'quotes'}", ""])
def test_post_articles_malformed_json_is_400(client, data):
    assert_error(post_raw(client, "/articles", data), 400, "malformed_json")


def test_post_articles_invalid_utf8_is_400(client):
    data = b'{"url": "https://news.example/1", "title": "caf\xe9"}'
    assert_error(post_raw(client, "/articles", data), 400, "malformed_json")


def test_post_deeply_nested_json_is_400(client):
    assert_error(post_raw(client, "/articles", "[" * 100_000 + "]" * 100_000), 400)


def test_post_body_over_the_cap_is_413(app, client):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    big = [article(n, "x" * 100) for n in range(20)]
    error = assert_error(post_json(client, "/articles", big), 413, "body_too_large")
    assert "1000 bytes" in error["message"]
    assert client.get("/articles").get_json()["total"] == 0
    assert post_json(client, "/articles", big[:1]).status_code == 201


# --- GET /articles ----------------------------------------------------------------------------


@pytest.fixture
def three_articles(client):
    batch = [
        article(1, "Newest", hours_ago=1),
        article(2, "Older", hours_ago=5),
        article(3, "Two days old", hours_ago=48),
    ]
    assert post_json(client, "/articles", batch).status_code == 201


def titles(response, key="articles"):
    assert response.status_code == 200
    return [item["title"] for item in response.get_json()[key]]


def test_get_articles_defaults_to_24_hours_newest_first(client, three_articles):
    response = client.get("/articles")
    assert titles(response) == ["Newest", "Older"]
    body = response.get_json()
    assert body["total"] == 2
    first = body["articles"][0]
    assert first["url"] == "https://news.example/1"
    assert first["source"] == "Test Wire"
    assert set(first) == {"id", "url", "title", "summary", "content", "source", "published_at"}
    assert first["published_at"].endswith("Z")


def test_get_articles_hours_limit_offset(client, three_articles):
    assert titles(client.get("/articles?hours=72")) == ["Newest", "Older", "Two days old"]
    assert titles(client.get("/articles?hours=2")) == ["Newest"]
    paged = client.get("/articles?hours=72&limit=1&offset=1")
    assert titles(paged) == ["Older"]
    assert paged.get_json()["total"] == 3  # the total ignores the page
    assert titles(client.get("/articles?hours=72&offset=3")) == []


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=501",
        "limit=x",
        "limit=",
        "limit=1.5",
        "offset=-1",
        "offset=x",
        "hours=0",
        "hours=721",
        "hours=-3",
        "hours=abc",
        "hours=1_0",
        "limit=" + "1" * 5000,
        "hours=%201",
        "hours=\uff11\uff12",
    ],
)
def test_get_articles_bad_query_is_422(client, query):
    assert_error(client.get(f"/articles?{query}"), 422, "invalid_value")


@pytest.mark.parametrize("query", ["limit=1", "limit=500", "offset=0", "hours=1", "hours=720"])
def test_get_articles_query_bounds_are_inclusive(client, query):
    assert client.get(f"/articles?{query}").status_code == 200


# --- POST /stories/generate and jobs (no consumer: jobs stay queued) ---------------------------


def generate(client, body=None, **kwargs):
    if body is None:
        return client.post("/stories/generate", **kwargs)
    return post_json(client, "/stories/generate", body, **kwargs)


def test_generate_answers_202_with_the_job(client):
    response = generate(client, {"time_window_hours": 12, "force": True})
    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == {"job_id", "status", "status_url"}
    assert body["status"] == "queued"
    assert body["status_url"] == f"/jobs/{body['job_id']}"
    job = client.get(body["status_url"]).get_json()
    assert job["id"] == body["job_id"]
    assert job["status"] == "queued"
    assert job["time_window_hours"] == 12
    assert job["force"] is True
    assert job["progress"] == 0.0
    assert job["started_at"] is None


def test_generate_with_an_empty_body_uses_the_defaults(client):
    response = generate(client)
    assert response.status_code == 202
    job = client.get(response.get_json()["status_url"]).get_json()
    assert (job["time_window_hours"], job["force"]) == (24, False)
    # {} is the same request: deduplicated against the first.
    assert generate(client, {}).get_json()["job_id"] == job["id"]


@pytest.mark.parametrize(
    "raw",
    [
        '{"time_window_hours": null}',
        '{"time_window_hours": "24"}',
        '{"time_window_hours": true}',
        '{"time_window_hours": NaN}',
        '{"time_window_hours": Infinity}',
        '{"time_window_hours": -Infinity}',
        '{"time_window_hours": 0}',
        '{"time_window_hours": 0.5}',
        '{"time_window_hours": 721}',
        '{"time_window_hours": -1}',
        '{"time_window_hours": 1' + "0" * 400 + "}",
        '{"time_window_hours": [24]}',
        '{"force": "yes"}',
        '{"force": 1}',
        '{"force": null}',
        '{"hours": 24}',
        '{"time_window_hours": 24, "extra": 1}',
        "[]",
        "[24]",
        '"24"',
        "24",
        "null",
    ],
)
def test_generate_rejects_bad_input_with_422(client, raw):
    assert_error(post_raw(client, "/stories/generate", raw), 422)
    assert client.get("/jobs").get_json()["jobs"] == []


def test_generate_malformed_and_non_json_bodies(client):
    assert_error(post_raw(client, "/stories/generate", "{oops"), 400, "malformed_json")
    assert_error(post_raw(client, "/stories/generate", "{}", "text/plain"), 415)


@pytest.mark.parametrize("hours", [1, 720, 1.5])
def test_generate_hour_bounds(client, hours):
    assert generate(client, {"time_window_hours": hours}).status_code == 202


def test_equal_request_while_queued_is_deduplicated(client):
    first = generate(client, {"time_window_hours": 6}).get_json()
    second = generate(client, {"time_window_hours": 6.0, "force": False})
    assert second.status_code == 200
    assert second.get_json() == {
        "job_id": first["job_id"],
        "status": "queued",
        "status_url": f"/jobs/{first['job_id']}",
        "deduplicated": True,
    }
    assert len(client.get("/jobs").get_json()["jobs"]) == 1


def test_different_requests_are_new_jobs(client):
    base = generate(client, {"time_window_hours": 6}).get_json()["job_id"]
    other_hours = generate(client, {"time_window_hours": 7})
    forced = generate(client, {"time_window_hours": 6, "force": True})
    assert other_hours.status_code == forced.status_code == 202
    ids = {base, other_hours.get_json()["job_id"], forced.get_json()["job_id"]}
    assert len(ids) == 3


@pytest.mark.backends
def test_unknown_job_is_404(client):
    assert_error(client.get("/jobs/0123456789abcdef0123456789abcdef"), 404, "not_found")
    assert_error(client.post("/jobs/nope/cancel"), 404, "not_found")
    # PostgreSQL refuses a NUL in a query's text: it must not get that far.
    assert_error(client.get("/jobs/a%00b"), 404, "not_found")
    assert_error(client.post("/jobs/a%00b/cancel"), 404, "not_found")


def test_list_jobs_newest_first_with_filters(client):
    ids = [generate(client, {"time_window_hours": h}).get_json()["job_id"] for h in (1, 2, 3)]
    listed = client.get("/jobs").get_json()["jobs"]
    assert [j["id"] for j in listed] == ids[::-1]
    assert [j["id"] for j in client.get("/jobs?limit=2").get_json()["jobs"]] == ids[:0:-1]
    assert client.post(f"/jobs/{ids[0]}/cancel").status_code == 202
    cancelled = client.get("/jobs?status=cancelled").get_json()["jobs"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    queued = client.get("/jobs?status=queued").get_json()["jobs"]
    assert [j["id"] for j in queued] == ids[:0:-1]


@pytest.mark.parametrize("query", ["status=bogus", "status=QUEUED", "limit=0", "limit=x"])
def test_list_jobs_bad_query_is_422(client, query):
    assert_error(client.get(f"/jobs?{query}"), 422, "invalid_value")


def test_cancel_a_queued_job_then_generate_again(client):
    job_id = generate(client).get_json()["job_id"]
    response = client.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 202
    assert response.get_json()["status"] == "cancelled"
    job = client.get(f"/jobs/{job_id}").get_json()
    assert job["status"] == "cancelled"
    assert job["finished_at"] is not None
    again = generate(client)
    assert again.status_code == 202
    assert "deduplicated" not in again.get_json()
    assert again.get_json()["job_id"] != job_id
    # Cancelling an ended job changes nothing.
    assert client.post(f"/jobs/{job_id}/cancel").get_json()["status"] == "cancelled"


def orphan() -> str:
    """A job left running by workers that died 11 minutes ago: none is alive to finish it."""
    job, _ = jobs.request_job(24, False)
    long_ago = utcnow() - timedelta(seconds=recovery.ORPHANED_AFTER_S + 60)
    Job.update(status="running", started_at=long_ago).where(Job.id == job.id).execute()
    return job.id


def every_row() -> dict[str, list[str]]:
    return {model.__name__: sorted(map(repr, model.select().tuples())) for model in TABLES}


@pytest.mark.backends
def test_a_job_no_worker_will_finish_is_shown_failed_and_the_next_request_records_it(client):
    job_id = orphan()
    before = every_row()
    shown = client.get(f"/jobs/{job_id}").get_json()
    assert shown["status"] == "failed" and "no worker" in shown["error"]
    assert client.get("/jobs").get_json()["jobs"] == [shown]
    assert client.get("/jobs?status=failed").get_json()["jobs"] == [shown]
    assert client.get("/jobs?status=running").get_json()["jobs"] == []
    assert every_row() == before  # shown, not written
    # An equal request does not join it: it is recorded failed, as shown, and a new job starts.
    again = generate(client)
    assert again.status_code == 202 and again.get_json()["job_id"] != job_id
    assert Job.get_by_id(job_id).to_dict() == shown


@pytest.mark.backends
def test_no_get_request_writes(client):
    client.post("/articles", json=[article(1, "Quake hits Eldham"), article(2, "Eldham quake")])
    job, _ = jobs.request_job(24, True)
    for cluster_id in jobs.plan_job(job.id):
        jobs.run_cluster(cluster_id, tasks.llm())
    feeds.register("https://wire.example/feed.xml", ingest.FeedDocument("Wire", None, []))
    story_id = Story.get().id
    paths = [
        "/",
        "/health",
        "/stats",
        "/metrics",
        "/articles",
        "/stories",
        f"/stories/{story_id}",
        f"/stories/{story_id}/versions",
        "/feed.xml",
        "/feed.atom",
        "/feed.json",
        "/feeds",
        "/jobs",
        f"/jobs/{job.id}",
        f"/jobs/{job.id}/events",  # the job has ended: the stream ends at once
        f"/jobs/{orphan()}",
    ]
    before = every_row()
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path
        response.get_data()  # a stream runs as it is read
    assert every_row() == before


# --- stories ----------------------------------------------------------------------------------


def test_stories_empty_and_unknown(client):
    assert client.get("/stories").get_json() == {"stories": [], "total": 0}
    assert_error(client.get("/stories/12345"), 404, "not_found")
    assert_error(client.get("/stories/abc"), 404, "not_found")
    assert_error(client.get("/stories/-1"), 404, "not_found")


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=501",
        "offset=-1",
        "hours=0",
        "hours=721",
        "sort=",
        "sort=newest",
        "sort=IMPORTANCE",
        "sort=importance,recent",
    ],
)
def test_stories_bad_query_is_422(client, query):
    assert_error(client.get(f"/stories?{query}"), 422, "invalid_value")


# --- LLM calls --------------------------------------------------------------------------------

FIRE = [
    article(1, "Wildfire forces evacuation of Brenton valley", "Crews fight the Brenton fire."),
    article(2, "Brenton valley wildfire: thousands evacuated", "The Brenton fire spreads."),
]


def run_inline(llm) -> None:
    job, _ = jobs.request_job(24, False)
    for cluster_id in jobs.plan_job(job.id, llm=llm):
        jobs.run_cluster(cluster_id, llm)


@pytest.mark.backends
def test_a_story_links_the_calls_that_wrote_each_version(client, llm):
    ingest.store(FIRE)
    llm.enqueue(NOT_JSON)  # the first reply is no JSON: asked again
    run_inline(llm)
    ingest.store([article(3, "Brenton valley wildfire doubles in size", "The fire spreads.")])
    run_inline(llm)

    (story_id,) = [s.id for s in Story.select()]
    story = client.get(f"/stories/{story_id}").get_json()
    assert story["version"] == 2
    (latest,) = story["calls"]
    assert latest["url"] == f"/calls/{latest['id']}" and latest["outcome"] == "ok"
    versions = client.get(f"/stories/{story_id}/versions").get_json()["versions"]
    assert versions[0]["calls"] == story["calls"]
    assert [c["outcome"] for c in versions[1]["calls"]] == ["invalid", "ok"]

    first = client.get(versions[1]["calls"][0]["url"]).get_json()
    assert (first["story_id"], first["story_version"], first["attempt"]) == (story_id, 1, 1)
    assert first["prompt"] == llm.history[0].messages
    assert first["reply"] == NOT_JSON and "not JSON" in first["error"]
    written = client.get(latest["url"]).get_json()
    assert json.loads(written["reply"])["title"] == story["title"]


@pytest.mark.backends
def test_an_unknown_call_is_404(client):
    assert_error(client.get("/calls/12345"), 404, "not_found")
    assert_error(client.get("/calls/abc"), 404, "not_found")


# --- errors in general ------------------------------------------------------------------------


def test_unknown_route_is_404_json(client):
    assert_error(client.get("/no/such/route"), 404, "not_found")
    assert_error(client.post("/no/such/route", json={}), 404, "not_found")


@pytest.mark.parametrize(
    "method, path",
    [
        ("delete", "/articles"),
        ("put", "/articles"),
        ("get", "/stories/generate"),
        ("post", "/health"),
    ],
)
def test_wrong_method_is_405_json(client, method, path):
    response = getattr(client, method)(path)
    assert_error(response, 405, "method_not_allowed")
    assert "Allow" in response.headers


# --- the API token ----------------------------------------------------------------------------


@pytest.fixture
def token_client(tmp_path, ollama):
    app = create_app(init(make_settings(tmp_path, ollama.url, STORYAPP_API_TOKEN="s3cret")))
    yield app.test_client()
    database.close()


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", "s3cret", "Bearer s3cret2", "Basic s3cret"]
)
def test_token_refuses_posts_without_it(token_client, header):
    headers = {"Authorization": header} if header else {}
    response = post_json(token_client, "/articles", article(1, "A"), headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert_error(generate(token_client, {}, headers=headers), 401)
    assert token_client.get("/articles").get_json()["total"] == 0


def test_token_lets_posts_through_and_gets_need_none(token_client):
    auth = {"Authorization": "bearer s3cret"}  # the scheme is case-insensitive (RFC 9110)
    response = post_json(token_client, "/articles", article(1, "A"), headers=auth)
    assert response.status_code == 201
    assert generate(token_client, {}, headers=auth).status_code == 202
    assert token_client.get("/articles").get_json()["total"] == 1
    assert len(token_client.get("/jobs").get_json()["jobs"]) == 1
    assert token_client.get("/health").status_code == 200


def test_token_guards_feed_changes_but_not_the_list(token_client, feed_server):
    feed_server.publish("/wire.rss", rss("Wire", []))
    url = {"url": feed_server.url("/wire.rss")}
    assert_error(post_json(token_client, "/feeds", url), 401, "unauthorized")
    auth = {"Authorization": "Bearer s3cret"}
    feed = post_json(token_client, "/feeds", url, headers=auth).get_json()
    assert_error(token_client.delete(f"/feeds/{feed['id']}"), 401, "unauthorized")
    assert_error(token_client.delete(f"/feeds/{feed['id']}", headers={"Authorization": "x"}), 401)
    assert [f["id"] for f in token_client.get("/feeds").get_json()["feeds"]] == [feed["id"]]
    assert token_client.delete(f"/feeds/{feed['id']}", headers=auth).status_code == 204


# --- feeds ------------------------------------------------------------------------------------


def test_register_list_and_remove_feeds(client, feed_server):
    feed_server.publish("/wire.rss", rss("Harbour & Coast Wire", [item(1, "Storm")]))
    feed_server.publish("/other.atom", atom("Valley News", []), "application/atom+xml")
    url = feed_server.url("/wire.rss")
    response = post_json(client, "/feeds", {"url": url})
    assert response.status_code == 201
    feed = response.get_json()
    assert feed["url"] == url
    # Fetched once to see that it is a feed, and named as it names itself.
    assert (feed["title"], feed["site_url"]) == ("Harbour & Coast Wire", "https://wire.example/")
    assert (feed["last_fetched_at"], feed["last_success_at"], feed["last_error"]) == (
        None,
        None,
        None,
    )
    again = post_json(client, "/feeds", {"url": f" {url}"})
    assert (again.status_code, again.get_json()) == (200, feed)
    assert len(feed_server.headers_sent_to("/wire.rss")) == 1  # a known URL is not fetched again
    other = post_json(client, "/feeds", {"url": feed_server.url("/other.atom")}).get_json()
    assert other["title"] == "Valley News"

    listed = client.get("/feeds").get_json()
    assert listed == {"feeds": [feed, other]}

    response = client.delete(f"/feeds/{feed['id']}")
    assert (response.status_code, response.get_data()) == (204, b"")
    assert client.get("/feeds").get_json() == {"feeds": [other]}
    assert_error(client.delete(f"/feeds/{feed['id']}"), 404, "not_found")
    assert_error(client.delete("/feeds/nope"), 404, "not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"url": "file:///etc/passwd"},
        {"url": "javascript:alert(1)"},
        {"url": "wire.example/feed.xml"},
        {"url": ""},
        {"url": None},
        {"url": 42},
        {},
        ["https://wire.example/feed.xml"],
    ],
)
def test_a_feed_needs_an_http_url(client, body):
    assert_error(post_json(client, "/feeds", body), 422)
    assert client.get("/feeds").get_json() == {"feeds": []}


def test_a_url_that_serves_no_feed_is_refused_with_the_reason(client, feed_server):
    feed_server.publish("/page.html", b"<!DOCTYPE html><html><body>News</body></html>", "text/html")
    feed_server.publish("/broken.xml", b"<rss><channel><title>Cut", "application/rss+xml")
    feed_server.publish("/other.xml", b"<?xml version='1.0'?><sitemap/>", "application/xml")
    reasons = {
        "/missing.xml": "HTTP 404 Not Found",
        "/page.html": "not an RSS/Atom feed: an HTML page",
        "/broken.xml": "not a readable RSS/Atom feed",
        "/other.xml": "not an RSS/Atom feed: XML of another kind",
    }
    for path, reason in reasons.items():
        error = assert_error(
            post_json(client, "/feeds", {"url": feed_server.url(path)}), 422, "not_a_feed"
        )
        assert reason in error["message"]
    closed = post_json(client, "/feeds", {"url": f"http://127.0.0.1:{free_port()}/feed.xml"})
    assert "Connection refused" in assert_error(closed, 422, "not_a_feed")["message"]
    assert client.get("/feeds").get_json() == {"feeds": []}


def test_feed_bodies_that_are_not_json_or_have_extras(client):
    extra = {"url": "https://wire.example/feed.xml", "interval": 5}
    assert_error(post_json(client, "/feeds", extra), 422, "unknown_field")
    assert_error(post_raw(client, "/feeds", "{", "application/json"), 400, "malformed_json")
    assert_error(post_raw(client, "/feeds", "https://a.example/", "text/plain"), 415)


# --- health -----------------------------------------------------------------------------------


def test_health_ok_against_the_fake_ollama(client, ollama, configured):
    report_from(configured)  # a worker found the server answering, with the model
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["queue"]["ok"] is True
    assert body["llm"]["reachable"] is True
    assert body["llm"]["model_available"] is True


def test_health_model_missing_is_degraded(tmp_path, ollama):
    settings = init(make_settings(tmp_path, ollama.url, STORYAPP_MODEL="no-such-model:1b"))
    app = create_app(settings)
    try:
        report_from(settings)
        body = app.test_client().get("/health").get_json()
    finally:
        database.close()
    assert body["status"] == "degraded"
    assert body["llm"]["reachable"] is True
    assert body["llm"]["model_available"] is False


def test_health_without_ollama_is_degraded(tmp_path):
    settings = init(make_settings(tmp_path, f"http://127.0.0.1:{free_port()}"))
    app = create_app(settings)
    try:
        report_from(settings)
        response = app.test_client().get("/health")
    finally:
        database.close()
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["database"]["ok"] is True
    assert body["llm"]["reachable"] is False
    assert body["llm"]["model_available"] is False


def test_health_and_every_request_say_503_when_the_database_is_gone(tmp_path, ollama):
    app = create_app(init(make_settings(tmp_path, ollama.url)))
    client = app.test_client()
    assert client.get("/health").status_code == 200
    shutil.rmtree(tmp_path / "data")  # the SQLite file and its directory: it cannot be opened
    response = client.get("/health")
    assert response.status_code == 503
    assert response.get_json()["database"]["ok"] is False
    for request in (client.get("/stories"), client.post("/articles", json=[article(1, "T")])):
        assert_error(request, 503, "database_unavailable")


def test_a_mistake_in_sql_is_no_outage(tmp_path, ollama):
    # SQLite's OperationalError covers both an unreachable file and a wrong query.
    app = create_app(init(make_settings(tmp_path, ollama.url)))
    app.add_url_rule("/wrong", view_func=lambda: database.execute_sql("SELECT nope FROM story"))
    assert_error(app.test_client().get("/wrong"), 500, "internal_error")


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/stories/9223372036854775808"),
        ("get", "/stories/99999999999999999999999/versions"),
        ("get", "/calls/9223372036854775808"),
        ("delete", "/feeds/99999999999999999999999"),
    ],
)
def test_an_id_too_large_for_any_engine_is_unknown(client, method, path):
    assert_error(getattr(client, method)(path), 404)


# --- end to end, through a real consumer --------------------------------------------------------


def test_ingest_generate_and_read_stories(client, consumer, ollama):
    storm = [
        article(1, "Storm floods harbour city, ferries halted", "Storm surge floods the harbour."),
        article(2, "Harbour city flooded as storm surge hits", "Ferries halted by the storm."),
        article(3, "Storm surge: harbour city floods, ferries stop", "Flooding in the harbour."),
    ]
    bank = [
        article(4, "Central bank raises interest rates again", "Rates up by a quarter point."),
        article(5, "Interest rates raised by central bank", "The central bank raises rates."),
    ]
    single = [article(6, "Local bakery wins pastry award", "A croissant takes the prize.")]
    assert post_json(client, "/articles", storm + bank + single).get_json()["created"] == 6

    response = generate(client, {"time_window_hours": 24})
    assert response.status_code == 202
    job = wait_for_job(client, response.get_json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["progress"] == 1.0
    assert job["total"] == 3
    assert job["done"] == 3
    assert job["counts"]["llm"] == 2
    assert job["counts"]["single"] == 1
    assert ollama.chat_count == 2

    body = client.get("/stories").get_json()
    assert body["total"] == 3
    by_urls = {frozenset(a["url"] for a in s["articles"]): s for s in body["stories"]}
    assert set(by_urls) == {frozenset(a["url"] for a in group) for group in (storm, bank, single)}
    storm_story = by_urls[frozenset(a["url"] for a in storm)]
    assert storm_story["generator"] == "llm"
    assert storm_story["model"] == ollama.model
    assert storm_story["article_count"] == 3
    assert storm_story["title"] and storm_story["summary"] and storm_story["key_points"]
    assert by_urls[frozenset([single[0]["url"]])]["generator"] == "single"

    one = client.get(f"/stories/{storm_story['id']}")
    assert one.status_code == 200
    one = one.get_json()
    # Read a moment later, it has decayed by a hair at most; and it links the call that wrote it.
    assert one.pop("importance") == pytest.approx(storm_story.pop("importance"), abs=0.002)
    (call,) = one.pop("calls")
    assert client.get(call["url"]).get_json()["story_id"] == storm_story["id"]
    assert one == storm_story

    paged = client.get("/stories?limit=1&offset=2").get_json()
    assert paged["total"] == 3
    assert [s["id"] for s in paged["stories"]] == [body["stories"][2]["id"]]
    assert client.get("/stories?hours=1").get_json()["total"] == 3
