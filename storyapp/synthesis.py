"""Writes one cluster up as a story: the request (prompt.py) to the LLM, the reply checked
against the story's shape (story.py), the retries, and the extractive fallback
(extractive.py) when the LLM cannot help. Plain data in, plain data out."""

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from storyapp import prompt, story
from storyapp.extractive import extractive_story, lead_story
from storyapp.llm import LLM, LLMError, Options
from storyapp.story import ArticleText, StoryText

# What every request asks of the server: a fixed reply length, a context that holds the prompt
# budget (each backend says this in its own words: llm.Options).
GENERATION = Options(temperature=0.2, reply_tokens=700, context_tokens=8192)
# A transport failure (busy, down, crashed) gets this many attempts in all, with this backoff.
TRANSPORT_ATTEMPTS = 3
BACKOFF_S = (0.25, 1.0)
# A reply that does not fit the schema is tried once more, then the fallback writes the story.
INVALID_ATTEMPTS = 2


@dataclass
class CallRecord:
    """One LLM request, for the call log."""

    attempt: int
    outcome: str  # ok | invalid | timeout | error
    host: str
    latency_ms: float
    status_code: int | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reply: str | None = None  # what the server sent back, as it sent it


@dataclass
class Synthesis:
    story: StoryText
    generator: str  # llm | fallback | single
    calls: list[CallRecord] = field(default_factory=list)
    error: str | None = None  # why the LLM did not write it, when it did not
    key: str | None = None  # the request's cache key, when the LLM was asked
    cached: bool = False  # the reply came from the cache, not from a call
    reply: StoryText | None = None  # the LLM's story as it cited (prompt numbers): cached
    messages: list[dict] | None = None  # the prompt the LLM was sent


def request_key(llm: LLM, messages: list[dict]) -> str:
    """The cache key of a request: everything it sends and whom to (the kind of server, the
    model, the prompt, the schema, the options). Rewording the prompt or changing the story's
    shape makes new keys by itself: nothing to bump by hand."""
    request = [llm.name, llm.model, messages, story.schema(), asdict(GENERATION)]
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


def synthesize(
    articles: Sequence[ArticleText],
    llm: LLM | None,
    sleep: Callable[[float], None] = time.sleep,
    cache: Callable[[str], StoryText | None] = lambda key: None,
) -> Synthesis:
    """A story for the cluster: from the LLM when it gives a valid reply (or gave one to the
    same request before: `cache` looks the request's key up), else extractive."""
    if len(articles) == 1:
        return Synthesis(lead_story(articles[0]), "single")
    if llm is None:
        return Synthesis(extractive_story(articles), "fallback", error="no LLM configured")
    request = prompt.build(articles)
    messages = request.messages

    def as_positions(reply: StoryText) -> StoryText:
        # Prompt numbers to 1-based positions in `articles`; a number the prompt never gave
        # is no citation.
        if not reply.cited() <= set(range(1, len(request.shown) + 1)):
            raise ValueError("cites an article number the prompt did not give")
        return reply.with_sources(lambda n: request.shown[n - 1] + 1)

    key = request_key(llm, messages)
    if (known := cache(key)) is not None:
        return Synthesis(as_positions(known), "llm", key=key, cached=True, reply=known)
    calls: list[CallRecord] = []
    transport_failures = invalid_replies = 0
    error = None
    while transport_failures < TRANSPORT_ATTEMPTS and invalid_replies < INVALID_ATTEMPTS:
        attempt = len(calls) + 1
        try:
            reply = llm.generate(messages, story.schema(), GENERATION)
        except LLMError as exc:
            calls.append(
                CallRecord(
                    attempt,
                    exc.outcome,
                    exc.host,
                    exc.latency_ms,
                    exc.status_code,
                    str(exc),
                    exc.prompt_tokens,
                    exc.completion_tokens,
                    exc.reply_text,
                )
            )
            error = str(exc)
            if exc.outcome == "invalid":
                invalid_replies += 1
                continue
            transport_failures += 1
            if not exc.retryable or transport_failures >= TRANSPORT_ATTEMPTS:
                break
            sleep(BACKOFF_S[min(transport_failures - 1, len(BACKOFF_S) - 1)])
            continue
        record = CallRecord(
            attempt,
            "ok",
            reply.host,
            reply.latency_ms,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            reply=reply.text,
        )
        calls.append(record)
        try:
            written = story.parse(reply.data)
            cited = as_positions(written)
        except ValueError as exc:
            record.outcome, record.error = "invalid", str(exc)
            error = f"invalid reply: {exc}"
            invalid_replies += 1
            continue
        return Synthesis(cited, "llm", calls, key=key, reply=written, messages=messages)
    fallback = extractive_story(articles)
    return Synthesis(fallback, "fallback", calls, error, key, messages=messages)
