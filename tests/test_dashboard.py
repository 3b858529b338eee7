"""The dashboard: its page as the server renders it, then in a real browser (Debian's chromium,
headless, driven by Playwright) against waitress, a real consumer and a fake Ollama slow enough
for the progress bar to move."""

import os
import re
import time
from pathlib import Path

import pytest
from conftest import article, running_consumer, serving, shifted_sample
from playwright.sync_api import sync_playwright

from storyapp import events, heartbeat, ingest, jobs
from storyapp.api import create_app
from storyapp.dashboard import TOP_STORIES, percent, seconds, sources

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does it)"
        # CI must run the browser tests; a new user's first `pytest` says what it skipped.
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_the_page_follows_a_job_to_the_end_and_shows_its_stories(app, ollama, browser):
    ollama.latency = 0.4
    client = app.test_client()
    assert client.post("/articles", json=shifted_sample()).status_code == 201
    with running_consumer(), serving(app) as base:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        outside = []
        page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))
        job_id = client.post("/stories/generate", json={}).get_json()["job_id"]
        page.goto(base + "/")
        stories_at_start = page.locator("#stories article").count()
        bar = page.get_by_role("progressbar", name=re.compile(r"of \d+ clusters"))

        ARTIFACTS.mkdir(exist_ok=True)
        running_shot = ARTIFACTS / "dashboard-running.png"
        running_shot.unlink(missing_ok=True)
        seen = []
        deadline = time.monotonic() + 30
        while page.locator("#job .status").inner_text() != "succeeded":
            assert time.monotonic() < deadline, f"the page never showed the job end: {seen}"
            value = float(bar.evaluate("e => e.value"))
            if not seen or seen[-1] != value:
                seen.append(value)
                if 0.5 <= value < 1 and not running_shot.exists():
                    page.screenshot(path=running_shot)
            page.wait_for_timeout(50)
        seen.append(float(bar.evaluate("e => e.value")))

        job = client.get(f"/jobs/{job_id}").get_json()
        assert job["status"] == "succeeded"
        assert seen == sorted(seen), seen  # never backwards
        assert len([v for v in seen if 0 < v < 1]) >= 2, seen  # it moved, in steps
        assert seen[-1] == 1.0
        assert page.locator('#job [data-field="done"]').inner_text() == str(job["total"])

        # The stories and figures came in with the end of the job, without a reload.
        stories = page.locator("#stories article")
        stories.nth(TOP_STORIES - 1).wait_for()
        assert stories.count() == TOP_STORIES > stories_at_start
        first = client.get("/stories?limit=1").get_json()["stories"][0]
        assert stories.first.locator("h3").inner_text() == first["title"]
        # The title opens the story's own page; the links under it lead to its sources.
        title = stories.first.locator("h3 a")
        assert title.get_attribute("href") == f"/stories/{first['id']}"
        source_links = stories.first.locator("p a")
        assert source_links.first.get_attribute("href") in {a["url"] for a in first["articles"]}
        figures = page.locator("#figures")
        assert "1 succeeded" in figures.inner_text()
        assert figures.get_by_role("cell", name=ollama.url).count() == 1
        assert not outside, f"the page loaded something from elsewhere: {outside}"

        page.screenshot(path=ARTIFACTS / "dashboard.png")

        phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
        phone.goto(base + "/")
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert phone.get_by_role("heading", name="Top stories").is_visible()
        phone.screenshot(path=ARTIFACTS / "dashboard-phone.png")


def test_an_idle_page_picks_up_a_new_job(app, ollama, browser):
    client = app.test_client()
    assert client.post("/articles", json=shifted_sample()).status_code == 201
    ollama.latency = 0.05
    with running_consumer(), serving(app) as base:
        page = browser.new_page()
        page.goto(base + "/")
        assert "No job yet" in page.locator("#job").inner_text()
        client.post("/stories/generate", json={})  # the page looks for new jobs every 5 s
        page.locator("#job .status-succeeded").wait_for(timeout=20_000)
        assert page.locator("#stories article").count() == TOP_STORIES


def test_with_every_stream_refused_the_page_polls_the_job(configured, ollama, browser, monkeypatch):
    monkeypatch.setattr(events, "MAX_STREAMS", 0)  # GET /jobs/<id>/events answers 429
    app = create_app(configured)
    client = app.test_client()
    assert client.post("/articles", json=shifted_sample()).status_code == 201
    ollama.latency = 0.2
    with running_consumer(), serving(app) as base:
        client.post("/stories/generate", json={})
        page = browser.new_page()
        page.goto(base + "/")
        assert page.locator("#job .status").inner_text() in ("queued", "running")
        page.locator("#job .status-succeeded").wait_for(timeout=20_000)
        assert page.locator("#job-progress").evaluate("e => e.value") == 1
        assert page.locator("#stories article").count() == TOP_STORIES


# --- the page as rendered, without a browser ------------------------------------------------


def test_an_empty_page(client):
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert '<html lang="en">' in html and 'name="viewport"' in html
    assert "No job yet" in html and "No stories yet" in html
    assert "http" not in html.replace("http://127.0.0.1", "")  # nothing from elsewhere
    script = client.get("/static/dashboard.js")
    assert script.status_code == 200 and b"EventSource" in script.data
    script.close()


def test_the_page_shows_stories_with_sources_and_escapes_them(client, ollama):
    ingest.store(
        [
            article(1, "Bridge <script>alert(1)</script> closes", source="Coast Wire"),
            article(2, "Bridge closes for repairs", source="Daily Ledger"),
            article(3, "Harbour bridge shut for repairs", source="Coast Wire"),
        ]
    )
    job, _ = jobs.request_job(24, False)
    for cluster_id in jobs.plan_job(job.id):
        jobs.run_cluster(cluster_id, None)
    html = client.get("/").get_data(as_text=True)
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-active="false"' in html and "succeeded" in html
    assert html.count(">Coast Wire</a>") == 1 and ">Daily Ledger</a>" in html
    assert 'href="https://news.example/' in html
    assert "1 succeeded" in html
    # Every sentence and key point links to the articles it cites.
    story = client.get("/stories").get_json()["stories"][0]
    urls = {a["id"]: a["url"] for a in story["articles"]}
    for ids in story["citations"]["summary"] + story["citations"]["key_points"]:
        for article_id in ids:
            assert f'<sup><a href="{urls[article_id]}"' in html


def test_the_page_watches_the_oldest_active_job(client):
    done, _ = jobs.request_job(12, False)
    jobs.cancel_job(done.id)
    running, _ = jobs.request_job(24, False)
    jobs.request_job(48, False)  # queued behind it
    html = client.get("/").get_data(as_text=True)
    assert f'data-job-id="{running.id}"' in html and 'data-active="true"' in html


def test_a_job_waiting_for_a_worker_that_does_not_run_says_so(client):
    jobs.request_job(24, False)
    html = client.get("/").get_data(as_text=True)
    assert 'id="no-worker"' in html and "<dt>Workers alive</dt><dd>0</dd>" in html
    assert 'id="job-eta"' not in html  # no worker: the job will not end when it would say
    worker = heartbeat.register()
    heartbeat.beat(worker)
    html = client.get("/").get_data(as_text=True)
    assert 'id="no-worker"' not in html
    assert 'id="job-eta"' in html
    assert re.search(r"<dt>Workers alive</dt><dd>1, \d+ MB</dd>", html)


def test_a_job_of_an_empty_window_says_why(client):
    ingest.store([article(1, "Ferry service resumes", hours_ago=50)])
    job, _ = jobs.request_job(24, False)
    assert jobs.plan_job(job.id) == []
    html = client.get("/").get_data(as_text=True)
    assert re.search(r'<p id="job-note">no article in the window [^<]*; the newest is 2 days', html)


def test_filters():
    assert [seconds(v) for v in (None, 0.0424, 3.25, 150)] == ["–", "42 ms", "3.2 s", "2 min 30 s"]
    assert [percent(v) for v in (None, 0, 0.1234)] == ["–", "0.0 %", "12.3 %"]
    articles = [
        {"source": "A", "url": "u1", "title": "t1"},
        {"source": "", "url": "u2", "title": "t2"},
        {"source": "A", "url": "u3", "title": "t3"},
    ]
    assert sources(articles) == [
        {"name": "A", "url": "u1", "title": "t1"},
        {"name": "unknown source", "url": "u2", "title": "t2"},
    ]
