"""The story's shape, declared once. `StoryText` is what a writer (the LLM, or the extractive
fallback) says about one event; from it follow the JSON schema the LLM is asked to fill, the
check of its reply, the form stored (Story.content, StoryVersion.content, the reply cache) and
the fields of a story in the API (`public`). A new field is one line here, plus what it means.
`ArticleText` is what a story is written from.

Every statement names the articles it rests on (`sources`): in a reply, the numbers the prompt
gave them; in what synthesis returns, their 1-based positions in the articles it was given;
in what is stored, their ids (`with_sources` maps one to the other).
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

# Limits a reply is held to. They also size the reply token cap (reply_tokens): an 8B model
# fills this schema in 300-600 tokens; one that runs to the cap is looping.
TITLE_MAX = 200
SENTENCE_MAX = 250
NAME_MAX = 60
SUMMARY_SENTENCES = 4
KEY_POINTS_MAX = 6
PERSPECTIVES_MAX = 3
TIMELINE_MAX = 5
ENTITIES_MAX = 4
# The short story (schema(compact=True)): so many summary sentences and key points, no fewer,
# so that a model that would stop at one writes facts beyond its headline.
SHORT_SUMMARY = 2
SHORT_KEY_POINTS = 3
CATEGORIES = (
    "world",
    "politics",
    "business",
    "technology",
    "science",
    "health",
    "sports",
    "culture",
    "environment",
    "crime",
)


def _one_line(value):
    return " ".join(value.split()) if isinstance(value, str) else value


def _storable(value: str) -> str:
    # Both legal in JSON: no database stores a lone surrogate, and PostgreSQL no NUL.
    if "\x00" in value:
        raise ValueError("holds a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("holds a lone surrogate, not unicode text") from None
    return value


def _text(limit: int):
    return Annotated[
        str,
        BeforeValidator(_one_line),
        StringConstraints(min_length=1, max_length=limit),
        AfterValidator(_storable),
    ]


Title = _text(TITLE_MAX)
Sentence = _text(SENTENCE_MAX)
Name = _text(NAME_MAX)
Source = Annotated[int, Field(ge=1)]


def _once_each(value):
    # Models repeat a source ([1, 1, 2]); it counts once.
    return list(dict.fromkeys(value)) if isinstance(value, list) else value


Sources = Annotated[list[Source], BeforeValidator(_once_each), Field(min_length=1, max_length=8)]


class Part(BaseModel):
    # A model may add keys of its own: only these are kept.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Cited(Part):
    text: Sentence
    sources: Sources


class Perspective(Part):
    who: Name
    view: Sentence
    sources: Sources


class Development(Part):
    date: date  # YYYY-MM-DD
    event: Sentence
    sources: Sources


class Quote(Part):
    text: Sentence
    speaker: Name
    source: Source


class Entities(Part):
    people: list[Name] = Field(default_factory=list, max_length=ENTITIES_MAX)
    places: list[Name] = Field(default_factory=list, max_length=ENTITIES_MAX)
    organisations: list[Name] = Field(default_factory=list, max_length=ENTITIES_MAX)


class StoryText(Part):
    title: Title
    summary: list[Cited] = Field(min_length=1, max_length=SUMMARY_SENTENCES)
    key_points: list[Cited] = Field(min_length=1, max_length=KEY_POINTS_MAX)
    category: Literal[CATEGORIES] | None = None
    perspectives: list[Perspective] = Field(default_factory=list, max_length=PERSPECTIVES_MAX)
    timeline: list[Development] = Field(default_factory=list, max_length=TIMELINE_MAX)
    quote: Quote | None = None
    entities: Entities | None = None

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", exclude_defaults=True)

    def cited(self) -> set[int]:
        """Every source any statement names."""
        return {s for part in _statements(self) for s in _sources_of(part)}

    def with_sources(self, mapping: Callable[[int], int]) -> "StoryText":
        """The same story, every source passed through `mapping` (positions to ids, say)."""

        def remap(value):
            if isinstance(value, dict):
                return {
                    key: [mapping(s) for s in item]
                    if key == "sources"
                    else mapping(item)
                    if key == "source"
                    else remap(item)
                    for key, item in value.items()
                }
            if isinstance(value, list):
                return [remap(item) for item in value]
            return value

        return StoryText.model_validate(remap(self.model_dump(mode="json")))

    def public(self) -> dict:
        """The story's fields in the API: the summary as text and the key points as strings,
        with what each rests on in `citations`; the other parts each with their article_ids."""
        out = {
            "title": self.title,
            "summary": " ".join(s.text for s in self.summary),
            "key_points": [p.text for p in self.key_points],
            "citations": {
                "summary": [list(s.sources) for s in self.summary],
                "key_points": [list(p.sources) for p in self.key_points],
            },
            "category": self.category,
            "perspectives": [
                {"who": p.who, "view": p.view, "article_ids": list(p.sources)}
                for p in self.perspectives
            ],
            "timeline": [
                {"date": d.date.isoformat(), "event": d.event, "article_ids": list(d.sources)}
                for d in self.timeline
            ],
            "quote": None
            if self.quote is None
            else {
                "text": self.quote.text,
                "speaker": self.quote.speaker,
                "article_ids": [self.quote.source],
            },
            "entities": None if self.entities is None else self.entities.model_dump(),
        }
        return out


def _statements(story: StoryText) -> list[Part]:
    parts: list[Part] = [*story.summary, *story.key_points, *story.perspectives, *story.timeline]
    return parts + ([story.quote] if story.quote is not None else [])


def _sources_of(part: Part) -> list[int]:
    return [part.source] if isinstance(part, Quote) else list(part.sources)


# A grammar compiler expands `maxLength: N` into ~N rules, and llama.cpp's refuses N at
# ~1,500: longer bounds are left to the check after the reply. Shorter ones stay: they are what
# stops a small model looping inside a string until the token cap.
SENT_LENGTH_MAX = 1000


@functools.cache
def schema(compact: bool = False, articles: int | None = None) -> dict:
    """The JSON schema sent to the LLM (made once: pydantic takes a while): flat (no $refs),
    no bound a grammar compiler chokes on, and, given the number of `articles` shown, no
    source beyond it. `compact` asks for the short story: the required fields only, so many of
    each (SHORT_*), for a second try after a reply ran long and from a model in-process."""
    full = StoryText.model_json_schema()
    flat = _sendable(full, full.get("$defs", {}), articles)
    if compact:
        flat["properties"] = {k: flat["properties"][k] for k in flat["required"]}
        for name, count in (("summary", SHORT_SUMMARY), ("key_points", SHORT_KEY_POINTS)):
            flat["properties"][name].update(minItems=count, maxItems=count)
    return flat


def _sendable(node, defs: dict, articles: int | None, name: str = ""):
    if isinstance(node, list):
        return [_sendable(item, defs, articles, name) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _sendable(defs[node["$ref"].rsplit("/", 1)[1]], defs, articles, name)
    out = {
        key: _sendable(value, defs, articles, key)
        for key, value in node.items()
        if key not in ("$defs", "title", "default", "properties")
        and not (key == "maxLength" and value > SENT_LENGTH_MAX)
    }
    if "properties" in node:  # field names, not keywords: none is dropped
        out["properties"] = {
            key: _sendable(value, defs, articles, key) for key, value in node["properties"].items()
        }
    if articles is not None and name in ("source", "sources"):
        target = out["items"] if out.get("type") == "array" else out
        target["maximum"] = articles
    return out


@functools.cache
def reply_tokens() -> int:
    """The reply token cap, from the limits above: every field at its longest, about four
    characters a token, and a quarter more for the JSON around them. A reply that reaches it
    has looped; one that stops short of it has room for the longest valid story."""
    sentence = SENTENCE_MAX / 4 + 8  # its sources and braces
    longest = (
        TITLE_MAX / 4
        + SUMMARY_SENTENCES * sentence
        + KEY_POINTS_MAX * sentence
        + PERSPECTIVES_MAX * (NAME_MAX / 4 + sentence)
        + TIMELINE_MAX * (4 + sentence)
        + (SENTENCE_MAX + NAME_MAX) / 4
        + 3 * ENTITIES_MAX * NAME_MAX / 4
        + 10
    )
    return round(longest * 1.25)


def parse(data) -> StoryText:
    """The reply as a story, or ValueError saying in one line what is wrong with it."""
    if not isinstance(data, dict):
        raise ValueError("reply is not a JSON object")
    try:
        return StoryText.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "reply"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ValueError(f"{where}: {first['msg']}{more}") from None


@dataclass(frozen=True)
class ArticleText:
    title: str
    summary: str
    content: str
    source: str
    published_at: datetime
    content_hash: str


def trim(text: str, limit: int) -> str:
    """At most `limit` characters, the ellipsis included, cut at a space where one is near."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 2]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit * 0.8 else cut) + " …"
