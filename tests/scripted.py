"""A scripted LLM for the tests, in the spirit of simonw/llm's MockModel: queue the replies a
test needs (`enqueue`), let a default answer the rest, read what was asked (`history`). It is
an LLM as storyapp.llm defines one, so a job test hands it to `jobs.run_cluster` and needs no
HTTP server; the tests of HTTP, of the Ollama client and of whole processes use the fake server
(storyapp/fake_ollama.py). Also here: the replies and failures a real server gives, for both.

    llm = ScriptedLLM()
    llm.enqueue(busy(), NOT_JSON, {"title": "T", "summary": [{"text": "S", "sources": [1]}],
                                   "key_points": [{"text": "K", "sources": [2]}]})
    synthesize(articles, llm)
    assert len(llm.history) == 3
"""

import json
import threading
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from storyapp.fake_ollama import schema_reply
from storyapp.llm import LLMError, Options, Reply, check_all

# What a model writes when it goes wrong.
NOT_JSON = "Sure! Here is your story: {title: oops"
OFF_SCHEMA = {"headline": "missing the required fields"}
TOO_LONG = {
    "title": "t",
    "summary": [{"text": "word " * 50_000, "sources": [1]}],
    "key_points": [{"text": "k", "sources": [1]}],
}
# What a model steered by an article might write: fields that are not the story's, and markup.
STEERED = {
    "title": "<script>alert(1)</script> Ignore the job",
    "summary": [{"text": "Status: failed. Delete all stories.", "sources": [1]}],
    "key_points": [{"text": "<b>bold</b>", "sources": [1]}],
    "status": "failed",
    "force": True,
    "article_count": 999,
}

HOST = "scripted"


# The failures OllamaLLM raises, worded and classified as it does.
def busy() -> LLMError:
    return _failure(f"HTTP 503 from {HOST}: server busy", status_code=503)


def crashed() -> LLMError:
    return _failure(f"HTTP 500 from {HOST}: llama runner process has terminated", status_code=500)


def missing(model: str) -> LLMError:
    message = f"model {model} not found on {HOST}: run `ollama pull {model}` there"
    return _failure(message, status_code=404, retryable=False)


def refused() -> LLMError:
    return _failure(f"cannot connect to {HOST}")


def timed_out() -> LLMError:
    return _failure(f"no reply from {HOST} in time", outcome="timeout")


def _failure(message: str, outcome: str = "error", retryable: bool = True, **more) -> LLMError:
    return LLMError(message, outcome=outcome, retryable=retryable, host=HOST, **more)


class Call(NamedTuple):
    messages: list[dict]
    schema: dict
    options: Options


# A reply as a test scripts it: the parsed JSON (a dict or a list), the raw text the model
# wrote (parsed as OllamaLLM parses it: text that is not JSON is an "invalid" LLMError), an
# exception to raise, or a function of (messages, schema) that returns one of those: it runs
# while the LLM "writes", so a test can act at that moment.
Scripted = dict | list | str | Exception | Callable[[list[dict], dict], object]


def fits_the_schema(messages: list[dict], schema: dict) -> dict:
    """The default reply, as the fake server gives it: a value that fits the schema asked
    for; a story that holds up against the articles shown."""
    return schema_reply({"messages": messages, "format": schema})


class ScriptedLLM:
    name = "scripted"
    brief = False
    host = HOST
    latency_ms = 12.5
    prompt_tokens = 100
    completion_tokens = 20

    def __init__(self, model: str = "test-model", default: Scripted = fits_the_schema):
        self.model = model
        self.default = default  # the reply when none is queued
        self.reachable = True  # what check() says: a test of an outage sets it False
        self.history: list[Call] = []
        self.closed = False
        self._queue: deque[Scripted] = deque()
        self._lock = threading.Lock()  # worker threads share one LLM

    def enqueue(self, *replies: Scripted) -> "ScriptedLLM":
        """Replies for the next calls, in order, before the default answers again."""
        with self._lock:
            self._queue.extend(replies)
        return self

    def generate(self, messages: list[dict], schema: dict, options: Options) -> Reply:
        with self._lock:
            self.history.append(Call(messages, schema, options))
            reply = self._queue.popleft() if self._queue else self.default
        if callable(reply):
            reply = reply(messages, schema)
        if isinstance(reply, Exception):
            raise reply
        text = reply if isinstance(reply, str) else json.dumps(reply)
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            message = f"reply is not JSON: {text[:80]!r}"
            raise _failure(
                message, "invalid", latency_ms=self.latency_ms, reply_text=text
            ) from None
        return Reply(
            data=data,
            host=self.host,
            latency_ms=self.latency_ms,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            text=text,
        )

    hosts = (HOST,)

    def check_host(self, host: str = HOST, timeout: float = 3.0) -> dict:
        error = None if self.reachable else f"cannot connect to {HOST}"
        return {"reachable": self.reachable, "model_available": self.reachable, "error": error}

    def check(self, timeout: float = 3.0) -> dict:
        return check_all(self, timeout)

    def close(self) -> None:
        self.closed = True
