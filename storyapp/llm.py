"""The LLM behind one small interface, whatever server runs it (STYLE.md): `generate(messages,
schema, options) -> Reply`, one request a call; `check_host(host)`, whether one of its `hosts`
answers and has the model, and `check()`, the same over all of them; `close()`. The options
are the server's business to map (`Options`); retrying is the caller's (synthesis.py), so each
attempt is logged on its own. `from_settings` makes the one the settings name: Ollama's
/api/chat (ollama_llm.py), an OpenAI-compatible server (openai_llm.py), or a model in-process
(local_llm.py).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from storyapp.config import Settings

if TYPE_CHECKING:  # slots.py raises LLMError, so it imports this module
    from storyapp.slots import Slots


@dataclass(frozen=True)
class Options:
    """What one request asks of any server; each backend says it in its own words."""

    temperature: float = 0.2
    reply_tokens: int = 700  # the reply is cut here
    context_tokens: int = 8192  # the prompt and the reply must fit


@dataclass
class Reply:
    data: dict | list | str | int | float | bool | None  # the parsed JSON the model wrote
    host: str
    latency_ms: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    text: str = ""  # the reply as the model wrote it, for the call log
    truncated: bool = False  # the reply hit Options.reply_tokens and was cut there
    # latency_ms is the server's own time on the request when it says it (Ollama does), else
    # the time from sending to the reply here, which holds any wait in the server's queue.
    latency_includes_queue: bool = True


class LLMError(Exception):
    """One failed request. `outcome` is how the call row records it: timeout, error or invalid
    (the server answered, but not with JSON); or skipped: no request went, as every host's
    circuit breaker is open (slots.py), which no call row records. `retryable` says whether
    trying again can help."""

    def __init__(
        self,
        message: str,
        *,
        outcome: str,
        retryable: bool,
        host: str = "",
        latency_ms: float = 0.0,
        status_code: int | None = None,
        reply_text: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        truncated: bool = False,
        latency_includes_queue: bool = True,
    ):
        super().__init__(message)
        self.latency_includes_queue = latency_includes_queue
        # What the server sent back, when it did answer (a reply that is not JSON).
        self.reply_text = reply_text
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.truncated = truncated
        self.outcome = outcome
        self.retryable = retryable
        self.host = host
        self.latency_ms = latency_ms
        self.status_code = status_code


class LLM(Protocol):
    name: str  # the kind of server: part of every cache key
    model: str
    hosts: tuple[str, ...]
    # Asks for the short story of fewer articles (prompt.build): a model on this box's CPU
    # reads a long prompt for minutes.
    brief: bool

    def generate(self, messages: list[dict], schema: dict, options: Options) -> Reply: ...

    def check_host(self, host: str, timeout: float = 3.0) -> dict: ...

    def check(self, timeout: float = 3.0) -> dict: ...

    def close(self) -> None: ...


def check_all(
    llm: LLM, timeout: float = 3.0, answered: Callable[[str], None] | None = None
) -> dict:
    """Whether any host answers and has the model, from each host's `check_host`: {"reachable",
    "model_available", "model"}, and "errors" for the hosts that did not answer. `answered` is
    told each host that answered."""
    reachable, available, errors = False, False, []
    for host in llm.hosts:
        found = llm.check_host(host, timeout)
        if found["reachable"]:
            if answered is not None:
                answered(host)
            reachable = True
            available = available or found["model_available"]
        else:
            errors.append(f"{host}: {found['error']}")
    result = {"reachable": reachable, "model_available": available, "model": llm.model}
    if errors:
        result["errors"] = errors
    return result


# Statuses where the same request may well work a moment later: overloaded or crashed runner.
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


def from_settings(settings: Settings, slots: "Slots | None" = None) -> LLM:
    """The LLM the settings name; `slots` bound its requests in flight (default: per process)."""
    if settings.llm_backend == "local":
        from storyapp.local_llm import LocalLLM

        return LocalLLM(settings.model, timeout=settings.llm_timeout)
    if settings.llm_backend == "openai":
        from storyapp.openai_llm import OpenAILLM

        return OpenAILLM(
            settings.llm_urls,
            settings.model,
            timeout=settings.llm_timeout,
            concurrency=settings.llm_concurrency,
            api_key=settings.llm_api_key,
            slots=slots,
        )
    from storyapp.ollama_llm import OllamaLLM

    return OllamaLLM(
        settings.llm_urls,
        settings.model,
        timeout=settings.llm_timeout,
        concurrency=settings.llm_concurrency,
        slots=slots,
    )
