"""Any server that speaks OpenAI's `/v1/chat/completions`: vLLM, SGLang, llama.cpp's server,
LM Studio, TGI, and hosted ones. The servers that batch many requests at once are here, and
storyapp's one task per cluster is what feeds them.

The story's schema goes in `response_format` as `json_schema` (strict: the servers that honour
it constrain the reply to it; the others are held to it after the reply anyway). Tokens come
from `usage`, a reply cut off by `max_tokens` says `finish_reason: "length"`. 429 and 5xx are
retried as for Ollama; 400, 401, 403 and 404 are not. Plain HTTP (httpx), no SDK: the few
fields storyapp uses are all there is to it.
"""

import json
import time

import httpx

from storyapp.llm import RETRYABLE_STATUS, LLMError, Options, Reply, check_all
from storyapp.slots import ProcessSlots, Slots


class OpenAILLM:
    name = "openai"
    brief = False

    def __init__(
        self,
        urls: tuple[str, ...],
        model: str,
        *,
        timeout: float,
        concurrency: int,
        api_key: str | None = None,
        slots: Slots | None = None,
    ):
        """`urls` are base URLs ending in /v1, as OpenAI's client takes them."""
        self.model = model
        self.hosts = urls
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self._slots = slots or ProcessSlots(urls, concurrency)

    def generate(self, messages: list[dict], schema: dict, options: Options) -> Reply:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": options.temperature,
            "max_tokens": options.reply_tokens,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "story", "schema": schema, "strict": True},
            },
        }
        with self._slots.take() as slot:
            url = slot.host
            started = time.perf_counter()
            try:
                response = self._client.post(f"{url}/chat/completions", json=body)
            except httpx.TimeoutException:
                elapsed = time.perf_counter() - started
                slot.report("timeout", None, elapsed)
                raise LLMError(
                    f"no reply from {url} in time",
                    outcome="timeout",
                    retryable=True,
                    host=url,
                    latency_ms=elapsed * 1000,
                ) from None
            except httpx.TransportError:
                elapsed = time.perf_counter() - started
                slot.report("error", None, elapsed)
                raise LLMError(
                    f"cannot connect to {url}",
                    outcome="error",
                    retryable=True,
                    host=url,
                    latency_ms=elapsed * 1000,
                ) from None
            wall_s = time.perf_counter() - started
            answer = _answer(response, url, self.model, wall_s * 1000)
            outcome = answer.outcome if isinstance(answer, LLMError) else "ok"
            slot.report(outcome, response.status_code, wall_s)
        if isinstance(answer, LLMError):
            raise answer
        return answer

    def check(self, timeout: float = 3.0) -> dict:
        """Whether any server answers `GET /models` and lists the model (llm.check_all)."""
        # A host that answers: skipped after failures, it is probed at the next request, not
        # after the rest of its cool-down. Only here, where the planner asks before a run: the
        # workers' health checks (check_host, every 30 s) only look.
        return check_all(self, timeout, answered=self._slots.hosts.checked)

    def check_host(self, host: str, timeout: float = 3.0) -> dict:
        try:
            response = self._client.get(f"{host}/models", timeout=timeout)
            response.raise_for_status()
            names = {m.get("id") for m in response.json().get("data", [])}
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            return {"reachable": False, "model_available": False, "error": error}
        return {"reachable": True, "model_available": self.model in names, "error": None}

    def close(self) -> None:
        self._client.close()


def _answer(response: httpx.Response, url: str, model: str, latency_ms: float) -> Reply | LLMError:
    """The reply, or what was wrong with it. The reply does not say how long the server worked
    on the request: `latency_ms`, taken here, holds any wait in its queue."""
    if response.status_code != 200:
        return _http_error(response, url, model, latency_ms)
    try:
        answer = response.json()
        choice = answer["choices"][0]
        content = choice["message"]["content"] or ""
    except (ValueError, KeyError, IndexError, TypeError):
        return LLMError(
            f"{url} answered with no completion: {response.text[:80]!r}",
            outcome="error",
            retryable=True,
            host=url,
            latency_ms=latency_ms,
        )
    usage = answer.get("usage") or {}
    tokens = {
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "truncated": choice.get("finish_reason") == "length",
    }
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        return LLMError(
            f"reply is not JSON: {content[:80]!r}",
            outcome="invalid",
            retryable=True,
            host=url,
            latency_ms=latency_ms,
            reply_text=content,
            **tokens,
        )
    return Reply(data=data, host=url, latency_ms=latency_ms, text=content, **tokens)


def _http_error(response: httpx.Response, url: str, model: str, latency_ms: float) -> LLMError:
    status = response.status_code
    try:
        detail = response.json().get("error")
        detail = detail.get("message") if isinstance(detail, dict) else detail
    except (ValueError, AttributeError):
        detail = response.text[:200]
    if status == 404:
        message = f"model {model} not found on {url}: {detail}"
    elif status in (401, 403):
        message = f"{url} refused the key (HTTP {status}): set STORYAPP_LLM_API_KEY"
    else:
        message = f"HTTP {status} from {url}: {detail}"
    return LLMError(
        message,
        outcome="error",
        retryable=status in RETRYABLE_STATUS,
        host=url,
        latency_ms=latency_ms,
        status_code=status,
    )
