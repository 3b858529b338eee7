"""Generated bodies and query strings thrown at the API: whatever comes in, the answer is never a
5xx, and every error has the contract's JSON shape."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=15), inner, max_size=6)
    ),
    max_leaves=25,
)
article_like = st.fixed_dictionaries(
    {},
    optional={
        "url": st.one_of(
            st.text(max_size=30),
            st.just("https://news.example/x"),
            st.sampled_from(["file:///etc/passwd", "javascript:alert(1)", "//x"]),
        ),
        "title": st.one_of(st.text(max_size=30), st.integers(), st.none()),
        "summary": json_values,
        "published_at": st.one_of(
            st.text(max_size=30), st.just("2026-11-27T10:00:00Z"), st.integers()
        ),
        "source": json_values,
        "extra": json_values,
    },
)
bodies = st.one_of(
    json_values,
    article_like,
    st.lists(article_like, max_size=4),
    st.fixed_dictionaries({"articles": st.lists(article_like, max_size=4)}),
    st.fixed_dictionaries(
        {},
        optional={"time_window_hours": json_values, "force": json_values, "other": json_values},
    ),
)
# What one engine takes, another may refuse (PostgreSQL: no NUL in text): fuzz both.
pytestmark = pytest.mark.backends

FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_sound(response):
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        error = response.get_json()["error"]
        assert set(error) >= {"code", "message"}


@pytest.mark.parametrize("path", ["/articles", "/stories/generate", "/jobs/x/cancel"])
@FUZZ
@given(body=bodies)
def test_json_bodies_never_make_a_5xx(client, path, body):
    raw = json.dumps(body, allow_nan=True)
    assert_sound(client.post(path, data=raw, content_type="application/json"))


@FUZZ
@given(
    raw=st.binary(max_size=200),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
    ),
)
def test_raw_bytes_never_make_a_5xx(client, raw, content_type):
    for path in ("/articles", "/stories/generate"):
        assert_sound(client.post(path, data=raw, content_type=content_type or None))


@FUZZ
@given(
    path=st.sampled_from(["/articles", "/stories", "/jobs"]),
    params=st.dictionaries(
        st.sampled_from(["hours", "limit", "offset", "status", "x"]),
        st.text(max_size=12) | st.integers().map(str),
        max_size=4,
    ),
)
def test_query_strings_never_make_a_5xx(client, path, params):
    assert_sound(client.get(path, query_string=params))


@FUZZ
@given(job_id=st.text(max_size=60), story_id=st.text(max_size=20))
def test_ids_in_paths_never_make_a_5xx(client, job_id, story_id):
    from urllib.parse import quote

    assert_sound(client.get(f"/jobs/{quote(job_id, safe='')}"))
    assert_sound(client.get(f"/stories/{quote(story_id, safe='')}"))
