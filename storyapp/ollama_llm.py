"""Ollama's /api/chat through the official client: requests spread over the configured hosts,
at most `concurrency` in flight per host across every thread of the process, or across
processes with shared slots (slots.py), a bound that adapts to the server by what each request
came to and how long the server says it worked on it."""

import json
import os
import time

import httpx

from storyapp.llm import RETRYABLE_STATUS, LLMError, Options, Reply, check_all
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


class OllamaLLM:
    name = "ollama"
    brief = False

    def __init__(
        self,
        hosts: tuple[str, ...],
        model: str,
        *,
        timeout: float,
        concurrency: int,
        slots: Slots | None = None,
    ):
        """`slots` bound the requests in flight; by default `concurrency` per host, among the
        threads of this process."""
        self.model = model
        self.hosts = hosts
        self._clients = {h: ollama.Client(host=h, timeout=timeout) for h in hosts}
        self._slots = slots or ProcessSlots(hosts, concurrency)

    def generate(self, messages: list[dict], schema: dict, options: Options) -> Reply:
        with self._slots.take() as slot:
            started = time.perf_counter()
            try:
                response = self._clients[slot.host].chat(
                    model=self.model,
                    messages=messages,
                    format=schema,
                    options={
                        "temperature": options.temperature,
                        "num_predict": options.reply_tokens,
                        "num_ctx": options.context_tokens,
                    },
                    stream=False,
                )
            except Exception as exc:
                elapsed_ms = (time.perf_counter() - started) * 1000
                error = _as_llm_error(exc, slot.host, self.model, elapsed_ms)
                slot.report(error.outcome, error.status_code, elapsed_ms / 1000)
                raise error from exc
            wall_s = time.perf_counter() - started
            server_s = _server_seconds(response)
            content = response.message.content or ""
            try:
                data = json.loads(content)
            except json.JSONDecodeError:
                data, outcome = None, "invalid"
            else:
                outcome = "ok"
            slot.report(outcome, 200, wall_s, server_s)
        host = slot.host
        latency = {
            "latency_ms": (wall_s if server_s is None else server_s) * 1000,
            "latency_includes_queue": server_s is None,
        }
        tokens = {
            "prompt_tokens": response.prompt_eval_count,
            "completion_tokens": response.eval_count,
            # Ollama says "length" when num_predict cut the reply.
            "truncated": response.done_reason == "length",
        }
        if outcome == "invalid":
            raise LLMError(
                f"reply is not JSON: {content[:80]!r}",
                outcome="invalid",
                retryable=True,
                host=host,
                reply_text=content,
                **latency,
                **tokens,
            )
        return Reply(data=data, host=host, text=content, **latency, **tokens)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def check(self, timeout: float = 3.0) -> dict:
        """Whether any host answers and has the model (llm.check_all)."""
        # A host that answers: skipped after failures, it is probed at the next request, not
        # after the rest of its cool-down. Only here, where the planner asks before a run: the
        # workers' health checks (check_host, every 30 s) only look.
        return check_all(self, timeout, answered=self._slots.hosts.checked)

    def check_host(self, host: str, timeout: float = 3.0) -> dict:
        """Whether `host` answers and has the model, for the workers' health reports and the
        demo. Uses its own short timeout: a check must not wait as long as a generation may."""
        client = ollama.Client(host=host, timeout=timeout)
        try:
            names = {m.model for m in client.list().models}
        except Exception as exc:
            return {"reachable": False, "model_available": False, "error": _describe(exc)}
        finally:
            client.close()
        available = self.model in names or f"{self.model}:latest" in names
        return {"reachable": True, "model_available": available, "error": None}


def _server_seconds(response) -> float | None:
    """The server's own time on the request: loading the model, reading the prompt, writing
    the reply. Not Ollama's total_duration: that starts when the request arrives, so it holds
    the wait for a free parallel slot, which is what the bound must see (slots.Bound)."""
    if response.eval_duration is None:  # a server that does not say
        return None
    parts = (response.load_duration, response.prompt_eval_duration, response.eval_duration)
    return sum(part or 0 for part in parts) / 1e9


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
