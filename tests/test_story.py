"""The story's shape: the schema the LLM fills, the check of its reply, the stored and served
forms, and the citations that run through all three."""

import json

import pytest

from storyapp import story
from storyapp.story import StoryText


def cited(text: str, *sources: int) -> dict:
    return {"text": text, "sources": list(sources) or [1]}


GOOD = {
    "title": "Floods in Lowbridge",
    "summary": [cited("The Vale flooded.", 1, 2)],
    "key_points": [cited("1,200 moved", 2)],
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"summary": "The Vale flooded."}, "summary: .*list"),
        ({"summary": []}, "summary"),
        ({"title": ""}, "title"),
        ({"title": 5}, "title"),
        ({"title": "t" * 201}, "title"),
        ({"key_points": [{"text": "no sources"}]}, "key_points.0.sources"),
        ({"key_points": [cited("x", 0)]}, "key_points.0.sources.0"),
        ({"key_points": [{"text": " ", "sources": [1]}]}, "key_points.0.text"),
        ({"key_points": [cited("a")] * 9}, "key_points"),
        ({"key_points": [cited("a" * 401)]}, "key_points.0.text"),
        ({"title": "t\x00"}, "NUL"),
        ({"key_points": [cited("\ud800")]}, "key_points.0.text: .*unicode"),
        ({"category": "gossip"}, "category"),
        ({"timeline": [{"date": "last Tuesday", "event": "e", "sources": [1]}]}, "timeline.0.date"),
        ({"quote": {"text": "q", "speaker": "s"}}, "quote.source"),
    ],
)
def test_a_reply_that_is_not_a_story_is_refused_in_one_line(change, problem):
    with pytest.raises(ValueError, match=problem) as refused:
        story.parse({**GOOD, **change})
    assert "\n" not in str(refused.value)
    with pytest.raises(ValueError, match="object"):
        story.parse([])


def test_a_reply_is_tidied_and_keeps_only_the_story_fields():
    written = story.parse(
        {
            "title": "  Floods in\nLowbridge ",
            "summary": [cited(" The Vale  flooded. ", 1)],
            "key_points": [cited("1,200\tmoved", 2)],
            "confidence": "high",  # a model's own extra key
        }
    )
    assert written.to_dict() == {
        "title": "Floods in Lowbridge",
        "summary": [{"text": "The Vale flooded.", "sources": [1]}],
        "key_points": [{"text": "1,200 moved", "sources": [2]}],
    }


def test_sources_map_from_prompt_numbers_to_article_ids_everywhere():
    full = story.parse(
        {
            **GOOD,
            "perspectives": [{"who": "The mayor", "view": "It will peak.", "sources": [2]}],
            "timeline": [{"date": "2026-11-27", "event": "Rain began.", "sources": [1]}],
            "quote": {"text": "We are ready.", "speaker": "The mayor", "source": 2},
        }
    )
    assert full.cited() == {1, 2}
    ids = full.with_sources(lambda n: {1: 501, 2: 502}[n])
    assert ids.cited() == {501, 502}
    public = ids.public()
    assert public["summary"] == "The Vale flooded."
    assert public["key_points"] == ["1,200 moved"]
    assert public["citations"] == {"summary": [[501, 502]], "key_points": [[502]]}
    assert public["perspectives"] == [
        {"who": "The mayor", "view": "It will peak.", "article_ids": [502]}
    ]
    assert public["timeline"][0]["article_ids"] == [501]
    assert public["quote"] == {
        "text": "We are ready.",
        "speaker": "The mayor",
        "article_ids": [502],
    }


def test_the_schema_follows_from_the_declaration():
    schema = json.loads(json.dumps(story.schema()))
    assert schema["type"] == "object"
    assert set(schema["required"]) == {"title", "summary", "key_points"}
    assert set(schema["properties"]) == set(StoryText.model_fields)
    # What is stored holds only what was written: optional parts left out stay out.
    assert set(StoryText.model_validate(GOOD).to_dict()) == {"title", "summary", "key_points"}
