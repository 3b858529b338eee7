"""The story's shape, declared once. `StoryText` is what a writer (the LLM, or the extractive
fallback) says about one event; from it follow the JSON schema the LLM is asked to fill, the
check of its reply, the form stored (Story.content, StoryVersion.content, the reply cache) and
the fields of a story in the API. A new field is one line here, plus what it means.
`ArticleText` is what a story is written from.
"""

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

TITLE_MAX = 200
SUMMARY_MAX = 2000
KEY_POINT_MAX = 300
KEY_POINTS_MAX = 8

KeyPoint = Annotated[str, StringConstraints(min_length=1, max_length=KEY_POINT_MAX)]


class StoryText(BaseModel):
    # A model may add keys of its own: only these are kept.
    model_config = ConfigDict(extra="ignore", frozen=True)

    title: str = Field(min_length=1, max_length=TITLE_MAX)
    summary: str = Field(min_length=1, max_length=SUMMARY_MAX)
    key_points: list[KeyPoint] = Field(min_length=1, max_length=KEY_POINTS_MAX)

    @field_validator("title", mode="before")
    @classmethod
    def _one_line(cls, value):
        return " ".join(value.split()) if isinstance(value, str) else value

    @field_validator("summary", mode="before")
    @classmethod
    def _stripped(cls, value):
        return value.strip() if isinstance(value, str) else value

    @field_validator("key_points", mode="before")
    @classmethod
    def _points(cls, value):
        # Blank points are dropped, not counted against the reply: models pad lists.
        if isinstance(value, list) and all(isinstance(p, str) for p in value):
            return [" ".join(p.split()) for p in value if p.strip()]
        return value

    @field_validator("title", "summary", "key_points", mode="after")
    @classmethod
    def _storable(cls, value):
        # Legal in JSON, refused by PostgreSQL. (A lone surrogate, which no database stores,
        # pydantic refuses itself.)
        if any("\x00" in text for text in (value if isinstance(value, list) else [value])):
            raise ValueError("holds a NUL character")
        return value

    def to_dict(self) -> dict:
        return self.model_dump()


@functools.cache
def schema() -> dict:
    """The JSON schema sent to the LLM with every request (made once: pydantic takes a while)."""
    return StoryText.model_json_schema()


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
