"""A small HTTP server that speaks Ollama's API (/api/chat, /api/tags, /api/version), and
OpenAI's as Ollama's own /v1 does (/v1/chat/completions, /v1/models), for the tests and the
benchmark: no GPU, a set latency, a set number of parallel slots, and switches
for the ways a real server fails. What it answers comes from a reply function given the request;
the default fills in the JSON schema the request carries, so the reply fits whatever shape a
story has, and its sentences are the shown articles' own first sentences, cited, so that it
holds up against them (grounding.py). It reads the articles by the prompt's tags, never its
wording.

    with FakeOllama(latency=0.45, slots=4) as server:
        os.environ["OLLAMA_HOST"] = server.url
"""

import json
import random
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# How the server behaves; what an "ok" answer says is the reply function's business.
MODES = ("ok", "busy", "error", "missing", "hang")
# A reply function's answer: a value sent as JSON, or a string sent as it is.
Content = dict | list | str
# Ollama's own words for these failures.
BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
MISSING_MESSAGE = "not found, try pulling it first"


class FakeOllama:
    def __init__(
        self,
        model: str = "llama3.1:8b",
        latency: float = 0.0,
        jitter: float = 0.0,
        slots: int = 4,
        host: str = "127.0.0.1",
        port: int = 0,
        reply: Callable[[dict], Content] | None = None,
    ):
        self.model = model
        self.latency, self.jitter = latency, jitter
        # Given the /api/chat request's body, returns the message's content: a value sent as
        # JSON, or a string sent as it is (what a model that ignores the format writes).
        self.reply = reply or schema_reply
        self.mode = "ok"
        # Modes for the next requests, in order, before `mode` applies again.
        self.script: list[str] = []
        self.requests: list[dict] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.held = 0  # requests waiting for release()
        self._let_through: int | None = None  # while holding: replies still to let through
        self._released = threading.Event()
        self._slots = threading.Semaphore(slots)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def chat_count(self) -> int:
        return len(self.requests)

    def start(self) -> "FakeOllama":
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # ends hanging requests
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeOllama":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def hold(self, after: int = 0) -> None:
        """Lets `after` more replies through, then holds every reply until release(): a test
        lines up on `held`, the requests it sees waiting, rather than on a latency that a slow
        machine outlasts."""
        with self._lock:
            self._let_through = after
            self._released.clear()

    def release(self) -> None:
        with self._lock:
            self._let_through = None
            self._released.set()

    def _wait_if_held(self) -> None:
        with self._lock:
            if self._let_through is None:
                return
            self._let_through -= 1
            if self._let_through >= 0:
                return
            self.held += 1
        self._released.wait()
        with self._lock:
            self.held -= 1

    def next_mode(self) -> str:
        with self._lock:
            return self.script.pop(0) if self.script else self.mode

    def completion(self, body: dict) -> tuple[int, dict]:
        """OpenAI's /v1/chat/completions, as Ollama's own /v1 maps it: the JSON schema of
        `response_format` is the request's format; the answer and its errors in OpenAI's shape."""
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
        chat = {"model": body.get("model"), "messages": body.get("messages", []), "api": "openai"}
        if schema is not None:
            chat["format"] = schema
        return _as_completion(*self.chat(chat))

    def chat(self, body: dict) -> tuple[int, dict]:
        mode = self.next_mode()
        with self._lock:
            self.requests.append(body)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if mode == "busy":
                return 503, {"error": BUSY_MESSAGE}
            if mode == "missing" or body.get("model") != self.model:
                return 404, {"error": f'model "{body.get("model")}" {MISSING_MESSAGE}'}
            if mode == "hang":
                self._stop.wait()
                return 500, {"error": "server stopped"}
            arrived = time.perf_counter()
            with self._slots:
                started = time.perf_counter()
                delay = self.latency + random.uniform(-self.jitter, self.jitter)
                if delay > 0:
                    self._stop.wait(delay)
                self._wait_if_held()
                if mode == "error":
                    return 500, {"error": "llama runner process has terminated"}
                content = self.reply(body)
                if not isinstance(content, str):
                    content = json.dumps(content)
                finished = time.perf_counter()
            prompt = "".join(m.get("content", "") for m in body.get("messages", []))
            # As Ollama times it: the total from the request's arrival, so it holds the wait
            # for a slot; reading the prompt and writing the reply (a tenth and the rest of
            # the time in the slot) only the work on it.
            worked_ns = int((finished - started) * 1e9)
            return 200, {
                "model": self.model,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "message": {"role": "assistant", "content": content},
                "done": True,
                "done_reason": "stop",
                "total_duration": int((finished - arrived) * 1e9),
                "load_duration": 0,
                "prompt_eval_count": len(prompt) // 4,
                "prompt_eval_duration": worked_ns // 10,
                "eval_count": len(content) // 4,
                "eval_duration": worked_ns - worked_ns // 10,
            }
        finally:
            with self._lock:
                self.in_flight -= 1


def _as_completion(status: int, answer: dict) -> tuple[int, dict]:
    """An /api/chat answer as OpenAI's /v1/chat/completions gives it."""
    if status != 200:
        return status, {"error": {"message": answer["error"], "type": "server_error"}}
    return 200, {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": answer["model"],
        "choices": [
            {
                "index": 0,
                "message": answer["message"],
                "finish_reason": "length" if answer["done_reason"] == "length" else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": answer["prompt_eval_count"],
            "completion_tokens": answer["eval_count"],
            "total_tokens": answer["prompt_eval_count"] + answer["eval_count"],
        },
    }


def schema_reply(body: dict) -> Content:
    """The default reply: a value that fits the schema the request sends as `format` (an empty
    object when it sends none, or Ollama's plain "json"); for a story's schema, one whose
    title, summary and key points are the articles' own words (`grounded`)."""
    schema = body.get("format")
    if not isinstance(schema, dict):
        return {}
    value = fill(schema)
    if {"title", "summary", "key_points"} <= set(schema.get("properties", {})):
        value = {"title": value["title"], **grounded(body.get("messages", []))} | {
            k: v for k, v in value.items() if k not in ("title", "summary", "key_points")
        }
        value = _without_unsupported(value)
    return value


ARTICLE = re.compile(r'<article number="(\d+)"[^>]*>\n(.*?)\n</article>', re.DOTALL)


def grounded(messages: list[dict]) -> dict:
    """A title, summary and key points made of the shown articles' own lines and sentences,
    each citing its article's number: what a faithful model might write."""
    content = messages[-1]["content"] if messages else ""
    shown = [(int(n), text.split("\n")) for n, text in ARTICLE.findall(content)]
    if not shown:
        return {"title": "A story", "summary": [], "key_points": []}
    per_article = [
        [(s.strip()[:240], number) for s in re.split(r"(?<=[.!?])\s+", " ".join(lines[1:]))]
        + [(lines[0][:240], number)]  # and its headline, last
        for number, lines in shown
    ]
    title = shown[0][1][0][:200]
    sentences, seen = [], {title}
    for rank in range(3):  # every article's first sentence, then every second one ...
        for found in per_article:
            if (
                rank < len(found)
                and len(found[rank][0].split()) >= 2
                and found[rank][0] not in seen
            ):
                seen.add(found[rank][0])
                sentences.append({"text": found[rank][0], "sources": [found[rank][1]]})
    return {"title": title, "summary": sentences[:1], "key_points": sentences[1:4]}


def _without_unsupported(value: dict) -> dict:
    # The filled-in optional parts ("Who", "2026-01-01") are in no article: left out, as a
    # careful model would leave them.
    return {k: value[k] for k in ("title", "summary", "key_points")}


def fill(schema: dict, root: dict | None = None, name: str = "value"):
    """A value that fits a JSON schema, made from the schema alone: each property named after
    itself ("Title", "Key points 1"), arrays of up to three items, the first choice of an enum
    or an anyOf, lengths and minimums kept. It covers what a story's schema uses (pydantic's
    $refs included), so a new field of the story needs nothing here."""
    root = root or schema
    if "$ref" in schema:  # "#/$defs/Name"
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return fill(target, root, name)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return fill(options[0], root, name)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {key: fill(sub, root, key) for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        count = max(schema.get("minItems", 0), min(3, schema.get("maxItems", 3)), 1)
        return [fill(schema.get("items", {}), root, f"{name} {i}") for i in range(1, count + 1)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        return int(low) if kind == "integer" else float(low)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    if schema.get("format") in ("date", "date-time"):
        return "2026-01-01" if schema["format"] == "date" else "2026-01-01T00:00:00Z"
    text = name.replace("_", " ").capitalize().ljust(schema.get("minLength", 0), ".")
    return text[: schema.get("maxLength", len(text))]


def _handler_for(server: FakeOllama):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle's algorithm on, the second waits
        # for the client's delayed ACK, 40 ms a request. Ollama's own server sets TCP_NODELAY.
        disable_nagle_algorithm = True

        def do_GET(self):
            if self.path == "/v1/models":
                self._send(
                    200, {"object": "list", "data": [{"id": server.model, "object": "model"}]}
                )
            elif self.path == "/api/tags":
                model = {"name": server.model, "model": server.model, "size": 4_900_000_000}
                self._send(200, {"models": [model]})
            elif self.path == "/api/version":
                self._send(200, {"version": "0.12.0-fake"})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._send(400, {"error": "invalid JSON"})
                return
            if self.path == "/v1/chat/completions":
                self._send(*server.completion(body))
            elif self.path == "/api/chat":
                self._send(*server.chat(body))
            else:
                self._send(404, {"error": "not found"})

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout): nothing to tell it

        def log_message(self, format, *args):
            pass  # tests read `requests`, not the server's access log

    return Handler
