"""The fake server's default reply (the request's schema filled in; for a story, the shown
articles' own sentences) and its hold on replies that race tests line up on."""

from concurrent.futures import ThreadPoolExecutor

from test_llm import MESSAGES
from test_synthesis import FLOOD
from workers import wait_until

from storyapp import prompt
from storyapp.fake_ollama import fill, schema_reply
from storyapp.grounding import ground, sane
from storyapp.ollama_llm import OllamaLLM
from storyapp.story import parse, schema
from storyapp.synthesis import GENERATION


def test_the_default_reply_is_a_valid_story():
    request = prompt.build(FLOOD)
    story = schema_reply({"messages": request.messages, "format": request.schema})
    written = parse(story)
    sane(written)  # a story, not placeholders
    positions = written.with_sources(lambda n: request.shown[n - 1] + 1)
    assert ground(positions, FLOOD).dropped == 0  # every sentence borne out by its article
    assert schema_reply({"messages": [], "format": "json"}) == {}


def test_a_schema_is_filled_within_its_bounds():
    # The shapes pydantic's model_json_schema() gives: $defs, Optional as anyOf with null,
    # Literal as enum, bounds on lengths, counts and numbers.
    schema = {
        "$defs": {
            "Quote": {
                "type": "object",
                "properties": {
                    "text": {"type": "string", "minLength": 20},
                    "article_ids": {"type": "array", "items": {"type": "integer"}},
                },
            }
        },
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 3},
            "category": {"enum": ["politics", "sport"]},
            "quote": {"anyOf": [{"$ref": "#/$defs/Quote"}, {"type": "null"}]},
            "points": {"type": "array", "items": {"type": "string"}, "minItems": 5},
            "importance": {"type": "number", "minimum": 0.5},
            "breaking": {"type": "boolean"},
        },
    }
    value = fill(schema)
    assert value["title"] == "Tit"
    assert value["category"] == "politics"
    assert len(value["quote"]["text"]) == 20 and value["quote"]["article_ids"] == [0, 0, 0]
    assert value["points"] == [f"Points {i}" for i in range(1, 6)]
    assert (value["importance"], value["breaking"]) == (0.5, False)


def test_held_replies_wait_for_release(ollama):
    ollama.hold(after=1)
    llm = OllamaLLM((ollama.url,), ollama.model, timeout=30, concurrency=4)
    with ThreadPoolExecutor(max_workers=3) as pool:
        calls = [pool.submit(llm.generate, MESSAGES, schema(), GENERATION) for _ in range(3)]
        wait_until(
            lambda: ollama.held == 2 and sum(c.done() for c in calls) == 1,
            what="one reply out, two held",
        )
        ollama.release()
        assert all(c.result().data == schema_reply(ollama.requests[0]) for c in calls)
    llm.close()
