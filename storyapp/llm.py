"""The LLM behind one small interface: `generate(messages, schema) -> Reply`, one request a call.

`OllamaLLM` speaks Ollama's /api/chat through the official client, spreads requests over the
configured hosts and keeps at most `concurrency` requests in flight per host: across every thread
of the process, or across processes with shared slots (slots.py). Retrying is the caller's
choice (synthesis.py): each attempt is logged on its own.
"""

import json
import os
import time
from dataclasses import dataclass
from typing import Protocol

import httpx

from storyapp.slots import ProcessSlots, Slots

# The ollama package makes a default client from OLLAMA_HOST as it is imported, and a list of
# hosts ("http://a:11434,http://b:11434", which storyapp spreads its calls over) made that
# raise, so every command failed before it started. storyapp never uses that client.
_hosts = os.environ.pop("OLLAMA_HOST", None)
try:
    import ollama
finally:
    if _hosts is not None:
        os.environ["OLLAMA_HOST"] = _hosts


@dataclass
class Reply:
    data: dict | list | str | int | float | bool | None  # the parsed JSON the model wrote
    host: str
    latency_ms: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class LLMError(Exception):
    """One failed request. `outcome` is how the call row records it: timeout, error or invalid
    (the server answered, but not with JSON). `retryable` says whether trying again can help."""

    def __init__(
        self,
        message: str,
        *,
        outcome: str,
        retryable: bool,
        host: str = "",
        latency_ms: float = 0.0,
        status_code: int | None = None,
    ):
        super().__init__(message)
        self.outcome = outcome
        self.retryable = retryable
        self.host = host
        self.latency_ms = latency_ms
        self.status_code = status_code


class LLM(Protocol):
    model: str

    def generate(self, messages: list[dict], schema: dict) -> Reply: ...


# Statuses where the same request may well work a moment later: overloaded or crashed runner.
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


class OllamaLLM:
    def __init__(
        self,
        hosts: tuple[str, ...],
        model: str,
        *,
        timeout: float,
        concurrency: int,
        options: dict | None = None,
        slots: Slots | None = None,
    ):
        """`slots` bound the requests in flight; by default `concurrency` per host, among the
        threads of this process."""
        self.model = model
        self.hosts = hosts
        self.options = options or {}
        self._clients = {h: ollama.Client(host=h, timeout=timeout) for h in hosts}
        self._slots = slots or ProcessSlots(hosts, concurrency)

    def generate(self, messages: list[dict], schema: dict) -> Reply:
        with self._slots.take() as host:
            started = time.perf_counter()
            try:
                response = self._clients[host].chat(
                    model=self.model,
                    messages=messages,
                    format=schema,
                    options=self.options,
                    stream=False,
                )
            except Exception as exc:
                elapsed_ms = (time.perf_counter() - started) * 1000
                raise _as_llm_error(exc, host, self.model, elapsed_ms) from exc
            latency_ms = (time.perf_counter() - started) * 1000
        content = response.message.content or ""
        try:
            data = json.loads(content)
        except json.JSONDecodeError:
            raise LLMError(
                f"reply is not JSON: {content[:80]!r}",
                outcome="invalid",
                retryable=True,
                host=host,
                latency_ms=latency_ms,
            ) from None
        return Reply(
            data=data,
            host=host,
            latency_ms=latency_ms,
            prompt_tokens=response.prompt_eval_count,
            completion_tokens=response.eval_count,
        )

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def check(self, timeout: float = 3.0) -> dict:
        """Whether any host answers and has the model, for /health and the demo. Uses its own
        short timeout: a health check must not wait as long as a generation may."""
        reachable, available, errors = False, False, []
        for host in self.hosts:
            client = ollama.Client(host=host, timeout=timeout)
            try:
                names = {m.model for m in client.list().models}
            except Exception as exc:
                errors.append(f"{host}: {_describe(exc)}")
                continue
            finally:
                client.close()
            reachable = True
            available = available or self.model in names or f"{self.model}:latest" in names
        result = {"reachable": reachable, "model_available": available, "model": self.model}
        if errors:
            result["errors"] = errors
        return result


def _as_llm_error(exc: Exception, host: str, model: str, latency_ms: float) -> LLMError:
    common = {"host": host, "latency_ms": latency_ms}
    if isinstance(exc, ollama.ResponseError):
        status = exc.status_code
        if status == 404:
            message = f"model {model} not found on {host}: run `ollama pull {model}` there"
        else:
            message = f"HTTP {status} from {host}: {exc.error}"
        return LLMError(
            message,
            outcome="error",
            retryable=status in RETRYABLE_STATUS,
            status_code=status,
            **common,
        )
    if isinstance(exc, httpx.TimeoutException):
        message = f"no reply from {host} in time"
        return LLMError(message, outcome="timeout", retryable=True, **common)
    return LLMError(_describe(exc, host), outcome="error", retryable=True, **common)


def _describe(exc: Exception, host: str = "") -> str:
    if isinstance(exc, ConnectionError | httpx.TransportError):
        return f"cannot connect to {host}" if host else "cannot connect"
    return f"{type(exc).__name__}: {exc}"
