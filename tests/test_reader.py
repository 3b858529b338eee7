"""The reader's side: GET /stories filtered, paged and searched on every engine; a story's page
as HTML for a browser and JSON for an API client; and both pages in a real browser."""

import re
from datetime import timedelta

import pytest
from conftest import article, serving
from test_dashboard import ARTIFACTS, browser  # noqa: F401 (a fixture)

from storyapp import clustering, ingest, jobs
from storyapp.db import transaction
from storyapp.models import Article, utcnow
from storyapp.reader import changes
from storyapp.story import Cited, StoryText

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def write_story(first: int, title: str, sentence: str, outlets: list[str], **parts) -> int:
    """A story of one article per outlet, each sentence citing the first article, written as a
    run writes it (jobs.save_story); a story of the same articles again is its next version."""
    records = [
        article(first + n, f"{title} ({outlet})", sentence, source=outlet, hours_ago=1 + n)
        for n, outlet in enumerate(outlets)
    ]
    ingest.store(records)
    rows = list(Article.select().where(Article.url.in_([r["url"] for r in records])))
    ids = sorted(a.id for a in rows)
    story = StoryText(
        title=title,
        summary=[Cited(text=sentence, sources=[ids[0]])],
        key_points=[Cited(text=f"Point of {title}", sources=ids[-1:])],
        **parts,
    )
    window = (utcnow() - timedelta(hours=48), utcnow())
    key = clustering.cluster_key([a.content_hash for a in rows] + [str(parts)])
    plan = jobs.ClusterPlan(key, ids, [], window)
    with transaction():
        return jobs.save_story(plan, story, "llm", "m", list(jobs.load_texts(ids).values())).id


@pytest.fixture
def stories(configured) -> dict[str, int]:
    return {
        "flood": write_story(
            100,
            "Floods close the Brenton valley road",
            "Rivers rose overnight across the valley.",
            ["Coast Wire", "Daily Ledger", "Valley Post"],
            category="environment",
        ),
        "match": write_story(
            200,
            "Harbour United win the cup final",
            "The final ended two to one after extra time.",
            ["Sports Desk", "coast  wire"],
            category="sports",
        ),
        "budget": write_story(
            300,
            "Council passes the flood defence budget",
            "The council voted for new river walls.",
            ["Daily Ledger"],
            category="politics",
        ),
    }


def ids_of(client, query: str = "") -> list[int]:
    answer = client.get(f"/stories?{query}").get_json()
    assert answer["total"] >= len(answer["stories"])
    return [s["id"] for s in answer["stories"]]


@pytest.mark.backends
def test_stories_are_filtered_by_category_outlet_and_words(stories, client):
    everything = ids_of(client)
    assert sorted(everything) == sorted(stories.values())
    assert ids_of(client, "category=sports") == [stories["match"]]
    # An outlet in any case and spacing; a story counts if any of its articles is from it.
    assert sorted(ids_of(client, "source=COAST%20WIRE")) == sorted(
        [stories["flood"], stories["match"]]
    )
    assert ids_of(client, "source=Nobody") == []
    # Words, stemmed: "flooding" finds "floods" and "flood"; every word must be there.
    assert sorted(ids_of(client, "q=flooding")) == sorted([stories["flood"], stories["budget"]])
    assert ids_of(client, "q=flood%20council") == [stories["budget"]]
    assert ids_of(client, "q=extra+time") == [stories["match"]]
    assert ids_of(client, "q=point") != []  # key points are searched too
    # Query syntax is taken as words: no operator reaches the engine, nothing fails.
    assert ids_of(client, 'q=flood"%20OR%20NEAR(') == []
    assert ids_of(client, "q=%22%28%29*") == []
    # Filters together, in the listing's order.
    assert ids_of(client, "q=flood&category=politics&source=daily+ledger") == [stories["budget"]]
    listed = [i for i in everything if i in (stories["flood"], stories["budget"])]
    assert ids_of(client, "q=flood") == listed
    # Blank filters are no filters (a form sends them so).
    assert ids_of(client, "q=&category=&source=") == everything


@pytest.mark.backends
def test_filtered_stories_are_paged_with_the_total_of_the_filter(stories, client):
    everything = ids_of(client, "q=point")
    pages = [ids_of(client, f"q=point&limit=1&offset={n}") for n in range(4)]
    assert pages == [[everything[0]], [everything[1]], [everything[2]], []]
    answer = client.get("/stories?q=flood&limit=1").get_json()
    assert answer["total"] == 2 and len(answer["stories"]) == 1


@pytest.mark.parametrize(
    "query",
    ["category=weather", "category=Sports", "q=" + "x" * 201, "source=a%00b", "q=a%0Ab"],
)
def test_bad_filters_are_422(client, query):
    response = client.get(f"/stories?{query}")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "invalid_value"


@pytest.mark.backends
def test_a_merged_story_is_not_listed_but_its_page_says_where_it_went(stories, client):
    from storyapp.models import Story

    Story.update(merged_into=stories["flood"]).where(Story.id == stories["budget"]).execute()
    assert stories["budget"] not in ids_of(client, "q=council")
    html = client.get(f"/stories/{stories['budget']}", headers=HTML).get_data(as_text=True)
    assert f'<a href="/stories/{stories["flood"]}">Floods close the Brenton valley road</a>' in html


def test_a_story_is_json_for_an_api_client_and_html_for_a_browser(stories, client):
    path = f"/stories/{stories['flood']}"
    for headers in ({}, {"Accept": "application/json"}, {"Accept": "*/*"}):
        response = client.get(path, headers=headers)
        assert response.content_type == "application/json"
        assert response.get_json()["id"] == stories["flood"]
    response = client.get(path, headers=HTML)
    assert response.status_code == 200 and response.content_type.startswith("text/html")
    assert "Vary" in response.headers and "Accept" in response.headers["Vary"]
    # The list too; and an unknown story is JSON's 404 either way.
    assert client.get("/stories", headers=HTML).content_type.startswith("text/html")
    assert client.get("/stories").content_type == "application/json"
    missing = client.get("/stories/999999", headers=HTML)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"


def test_the_story_page_links_its_citations_sources_and_versions(stories, client):
    story = client.get(f"/stories/{stories['flood']}").get_json()
    html = client.get(f"/stories/{stories['flood']}", headers=HTML).get_data(as_text=True)
    articles = story["articles"]  # oldest first, numbered as the citations are
    first_cited = next(a for a in articles if a["id"] == story["citations"]["summary"][0][0])
    number = articles.index(first_cited) + 1
    assert f'Rivers rose overnight across the valley.<sup><a href="{first_cited["url"]}"' in html
    assert f">[{number}]</a></sup>" in html
    for n, a in enumerate(articles, 1):  # each source, with its time
        assert f'<li value="{n}"><span class="source">{a["source"]}</span>' in html
        assert f'<a href="{a["url"]}">{a["title"]}</a>' in html
        assert f'<time datetime="{a["published_at"]}">' in html
    assert "first written, from 3 articles" in html
    assert "environment" in html


@pytest.mark.backends
def test_the_page_tells_what_each_version_changed(configured, client):
    story_id = write_story(500, "Quake hits Eldham", "A quake hit Eldham.", ["Coast Wire"])
    again = write_story(500, "Quake hits Eldham", "A quake hit Eldham.", ["Coast Wire"])
    assert again == story_id  # same articles: the same story, written again
    write_story(500, "Eldham quake: homes damaged", "Homes were damaged.", ["Coast Wire", "Ledger"])
    versions = client.get(f"/stories/{story_id}/versions").get_json()["versions"]
    assert [v["version"] for v in versions] == [3, 2, 1]
    html = client.get(f"/stories/{story_id}", headers=HTML).get_data(as_text=True)
    shown = re.findall(r'<li value="(\d)">\s*<time[^>]*>[^<]*</time>:\s*([^<]*)<', html)
    assert [(v, text.strip()) for v, text in shown] == [
        (
            "3",
            "1 article added; title was “Quake hits Eldham”; summary rewritten; "
            "key points rewritten",
        ),
        ("2", "written again, unchanged"),
        ("1", "first written, from 1 article"),
    ]


def test_changes_name_articles_that_left_and_a_new_writer():
    from storyapp.models import StoryVersion

    def version(n, ids, generator, title="T"):
        content = StoryText(
            title=title,
            summary=[Cited(text="S.", sources=[1])],
            key_points=[Cited(text="K", sources=[1])],
        ).to_dict()
        return StoryVersion(
            version=n, article_ids=ids, generator=generator, content=content, article_count=1
        )

    before, after = version(1, [1, 2, 3], "fallback"), version(2, [3, 4], "llm")
    assert changes(before, after) == [
        "1 article added",
        "2 articles out of the window",
        "written by llm, was fallback",
    ]
    assert changes(None, version(7, [1], "llm")) == ["written from 1 article"]


def test_the_list_page_filters_pages_and_offers_the_feeds(stories, client):
    html = client.get("/stories?limit=1&q=flood", headers=HTML).get_data(as_text=True)
    assert "Stories 1–1 of 2" in html
    assert 'href="/stories?limit=1&amp;q=flood&amp;offset=1" rel="next"' in html
    assert 'rel="prev"' not in html
    assert 'type="application/rss+xml" title="storyapp (RSS)" href="/feed.xml?q=flood"' in html
    last = client.get("/stories?limit=1&q=flood&offset=1", headers=HTML).get_data(as_text=True)
    assert "Stories 2–2 of 2" in last and 'rel="next"' not in last
    assert 'href="/stories?limit=1&amp;q=flood" rel="prev"' in last
    assert '<option value="Daily Ledger">Daily Ledger</option>' in html  # outlets offered
    assert '<option value="sports">sports</option>' in html
    nothing = client.get("/stories?q=volcano", headers=HTML).get_data(as_text=True)
    assert "No story matches" in nothing


def test_markup_in_a_story_stays_text(configured, client):
    story_id = write_story(
        600, "<script>alert(1)</script> fire", "A <b>fire</b> broke out.", ["<i>Wire</i>"]
    )
    for path in ("/stories", f"/stories/{story_id}"):
        html = client.get(path, headers=HTML).get_data(as_text=True)
        assert "<script>alert" not in html and "<b>fire" not in html, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path


def test_a_reader_finds_opens_and_follows_a_story_in_a_browser(stories, app, browser):  # noqa: F811
    with serving(app) as base:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        outside = []
        page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))
        page.route(re.compile(r"https://news\.example/.*"), lambda route: route.fulfill(body="ok"))
        page.goto(base + "/")  # the operations page links to the reader's
        page.get_by_role("link", name="read the stories").click()
        page.wait_for_url(base + "/stories")
        assert page.locator(".stories article").count() == 3

        # Filter by category, then search; the form is a plain GET.
        page.get_by_label("Category").select_option("environment")
        page.get_by_role("button", name="Show").click()
        page.wait_for_url(re.compile(r"category=environment"))
        titles = page.locator(".stories h3").all_inner_texts()
        assert titles == ["Floods close the Brenton valley road"]
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "reader.png")
        page.get_by_label("Category").select_option("")
        page.get_by_label("Search").fill("council")
        page.get_by_role("button", name="Show").click()
        page.wait_for_url(re.compile(r"q=council"))
        assert page.locator(".stories h3").all_inner_texts() == [
            "Council passes the flood defence budget"
        ]
        assert page.get_by_label("Search").input_value() == "council"  # the form keeps it

        # Open the story: its citation leads to the cited article.
        page.get_by_role("link", name="Council passes the flood defence budget").click()
        page.wait_for_url(f"{base}/stories/{stories['budget']}")
        assert page.locator("h1").inner_text() == "Council passes the flood defence budget"
        assert page.locator("#sources li").count() == 1
        assert page.locator("#versions li").count() == 1
        page.screenshot(path=ARTIFACTS / "story.png", full_page=True)
        with page.expect_navigation():
            page.locator("#summary sup a").first.click()
        assert page.url.startswith("https://news.example/")
        assert outside == [page.url]  # nothing else left the server: no external assets
        page.close()
