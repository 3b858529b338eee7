"""Writes one cluster up as a story: the request (prompt.py) to the LLM, the reply checked
against the story's shape (story.py) and against its articles (grounding.py), the retries,
and the extractive fallback (extractive.py) when the LLM cannot help. Plain data in, plain
data out.

A reply is tried again when it breaks the schema, is no story (grounding.sane), or keeps no
summary or no key point once its unsupported and repeated statements are dropped; a reply the
token cap cut off is not sent again unchanged: the second try asks for the short story
(prompt.COMPACT_PROMPT).
"""

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from storyapp import grounding, prompt, story
from storyapp.extractive import extractive_story, lead_story
from storyapp.llm import LLM, LLMError, Options, Reply
from storyapp.story import ArticleText, StoryText

# What every request asks of the server (each backend says it in its own words: llm.Options):
# a reply cap from the story's limits (story.reply_tokens), and a context that holds the
# prompt's budget (about 3.5 characters a token, to be safe), the instructions and that reply.
GENERATION = Options(
    temperature=0.2,
    reply_tokens=story.reply_tokens(),
    context_tokens=math.ceil(
        (prompt.PROMPT_BUDGET_CHARS + len(prompt.SYSTEM_PROMPT) + 150 * prompt.PROMPT_MAX_ARTICLES)
        / 3.5
    )
    + story.reply_tokens(),
)
# A transport failure (busy, down, crashed) gets this many attempts in all, with this backoff.
TRANSPORT_ATTEMPTS = 3
BACKOFF_S = (0.25, 1.0)
# A reply that is no story is tried once more, then the fallback writes the story.
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
    latency_includes_queue: bool = True  # llm.Reply's


@dataclass
class Synthesis:
    story: StoryText  # cites 1-based positions in the articles it was written from
    generator: str  # llm | fallback | single
    calls: list[CallRecord] = field(default_factory=list)
    error: str | None = None  # why the LLM did not write it, when it did not
    key: str | None = None  # the request's cache key, when the LLM was asked
    cached: bool = False  # the reply came from the cache, not from a call
    reply: StoryText | None = None  # the LLM's story as it cited (prompt numbers): cached
    messages: list[dict] | None = None  # the prompt the LLM was sent
    checked: int = 0  # statements checked against their articles (grounding.py)
    dropped: int = 0  # of which dropped as unsupported


def request_key(llm: LLM, request: prompt.Prompt) -> str:
    """The cache key of a request: everything it sends and whom to (the kind of server, the
    model, the prompt, the schema, the options). Rewording the prompt or changing the story's
    shape makes new keys by itself: nothing to bump by hand."""
    sent = [llm.name, llm.model, request.messages, request.schema, asdict(GENERATION)]
    return hashlib.sha256(json.dumps(sent, sort_keys=True).encode()).hexdigest()


def synthesize(
    articles: Sequence[ArticleText],
    llm: LLM | None,
    sleep: Callable[[float], None] = time.sleep,
    cache: Callable[[str], StoryText | None] = lambda key: None,
) -> Synthesis:
    """A story for the cluster: from the LLM when it gives a reply that holds up (or gave one
    to the same request before: `cache` looks the request's key up), else extractive."""
    if len(articles) == 1:
        return _checked(Synthesis(lead_story(articles[0]), "single"), articles)
    if llm is None:
        fallback = Synthesis(extractive_story(articles), "fallback", error="no LLM configured")
        return _checked(fallback, articles)
    request = prompt.build(articles, brief=llm.brief)
    key = request_key(llm, request)
    if (known := cache(key)) is not None:
        try:
            written = _accept(known, request, articles)
            return Synthesis(
                written.story,
                "llm",
                key=key,
                cached=True,
                reply=known,
                checked=written.checked,
                dropped=written.dropped,
            )
        except ValueError:
            pass  # the checks tightened since it was cached: ask again
    calls: list[CallRecord] = []
    transport_failures = invalid_replies = 0
    error = None
    while transport_failures < TRANSPORT_ATTEMPTS and invalid_replies < INVALID_ATTEMPTS:
        attempt = len(calls) + 1
        try:
            reply = llm.generate(request.messages, request.schema, GENERATION)
        except LLMError as exc:
            error = str(exc)
            if exc.outcome == "skipped":  # no request went: every host is skipped for now
                break
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
                    exc.latency_includes_queue,
                )
            )
            if exc.outcome == "invalid":
                invalid_replies += 1
                if exc.truncated:
                    request = _shorter(request, articles)
                    if request is None:
                        break
                continue
            transport_failures += 1
            if not exc.retryable or transport_failures >= TRANSPORT_ATTEMPTS:
                break
            sleep(BACKOFF_S[min(transport_failures - 1, len(BACKOFF_S) - 1)])
            continue
        record = _record(attempt, reply)
        calls.append(record)
        try:
            parsed = story.parse(reply.data)
            written = _accept(parsed, request, articles)
        except ValueError as exc:
            record.outcome, record.error = "invalid", str(exc)
            error = f"invalid reply: {exc}"
            invalid_replies += 1
            if reply.truncated:
                request = _shorter(request, articles)
                if request is None:
                    break
            continue
        return Synthesis(
            written.story,
            "llm",
            calls,
            key=key,
            reply=parsed,
            messages=request.messages,
            checked=written.checked,
            dropped=written.dropped,
        )
    messages = None if request is None else request.messages
    fallback = Synthesis(
        extractive_story(articles), "fallback", calls, error, key, messages=messages
    )
    return _checked(fallback, articles)


def _accept(
    reply: StoryText, request: prompt.Prompt, articles: Sequence[ArticleText]
) -> grounding.Grounding:
    """The reply as a story of `articles`, its unsupported statements dropped; ValueError if it
    is no story, cites a number the prompt did not give, or nothing of it stands."""
    grounding.sane(reply)
    if not reply.cited() <= set(range(1, len(request.shown) + 1)):
        raise ValueError("cites an article number the prompt did not give")
    positions = reply.with_sources(lambda n: request.shown[n - 1] + 1)
    checked = grounding.ground(positions, articles, [i + 1 for i in request.shown])
    if checked.story is None:
        raise ValueError(f"no summary or no key point of it stands: {checked.reasons[0]}")
    return checked


def _shorter(request: prompt.Prompt, articles) -> prompt.Prompt | None:
    """After a reply the token cap cut off: the short story, or nothing if that was it. (The
    same articles, numbered the same: a reply to it is cached under the first request's key.)"""
    if request.schema == story.schema(True, len(request.shown)):
        return None
    return prompt.build(articles, compact=True)


def _record(attempt: int, reply: Reply) -> CallRecord:
    return CallRecord(
        attempt,
        "ok",
        reply.host,
        reply.latency_ms,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        reply=reply.text,
        latency_includes_queue=reply.latency_includes_queue,
    )


def _checked(result: Synthesis, articles: Sequence[ArticleText]) -> Synthesis:
    """The extractive writers' figures: their sentences are the articles' own, so nothing is
    dropped, but what was checked is counted like any story's. (They repeat the headline as
    the key point on purpose, where an article has nothing more to say.)"""
    figures = grounding.ground(result.story, articles, repeats_allowed=True)
    result.checked, result.dropped = figures.checked, figures.dropped
    return result
