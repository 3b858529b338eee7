"""The story's shape: the schema the LLM fills, the check of its reply, the stored form."""

import json

import pytest

from storyapp import story
from storyapp.story import StoryText


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ([], "object"),
        ({"title": "t", "summary": "s"}, "key_points"),
        ({"title": "", "summary": "s", "key_points": ["a"]}, "title"),
        ({"title": "t", "summary": "s", "key_points": "a"}, "key_points"),
        ({"title": "t", "summary": "s", "key_points": [" "]}, "key_points"),
        ({"title": "t" * 201, "summary": "s", "key_points": ["a"]}, "title"),
        ({"title": "t", "summary": "s", "key_points": ["a"] * 9}, "key_points"),
        ({"title": "t", "summary": "s", "key_points": ["a" * 301]}, "key_points.0"),
        ({"title": 5, "summary": "s", "key_points": ["a"]}, "title"),
        ({"title": "t\x00", "summary": "s", "key_points": ["a"]}, "NUL"),
        ({"title": "t", "summary": "s", "key_points": ["\ud800"]}, "key_points.0: .*unicode"),
    ],
)
def test_a_reply_that_is_not_a_story_is_refused_in_one_line(reply, problem):
    with pytest.raises(ValueError, match=problem) as refused:
        story.parse(reply)
    assert "\n" not in str(refused.value)


def test_a_reply_is_tidied_and_keeps_only_the_story_fields():
    written = story.parse(
        {
            "title": "  Floods in\nLowbridge ",
            "summary": " The Vale flooded. ",
            "key_points": ["1,200  moved", "  ", "Rain\tgoes on"],
            "confidence": "high",  # a model's own extra key
        }
    )
    assert written.to_dict() == {
        "title": "Floods in Lowbridge",
        "summary": "The Vale flooded.",
        "key_points": ["1,200 moved", "Rain goes on"],
    }


def test_the_schema_follows_from_the_declaration():
    schema = json.loads(json.dumps(story.schema()))
    assert schema["type"] == "object"
    assert set(schema["required"]) == set(StoryText.model_fields) == set(schema["properties"])
    assert schema["properties"]["key_points"]["type"] == "array"
    assert schema["properties"]["key_points"]["maxItems"] == story.KEY_POINTS_MAX
    # The same declaration checks a reply and shapes what is stored and served.
    stored = StoryText(title="t", summary="s", key_points=["k"]).to_dict()
    assert list(stored) == list(schema["properties"])
