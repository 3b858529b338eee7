"""A small HTTP server that speaks Ollama's API (/api/chat, /api/tags, /api/version), for the
tests and the benchmark: no GPU, a set latency, a set number of parallel slots, and switches
for the ways a real server fails. It writes a story from the articles in the prompt, so what
comes back passes the same checks a real model's reply must.

    with FakeOllama(latency=0.45, slots=4) as server:
        os.environ["OLLAMA_HOST"] = server.url
"""

import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("ok", "busy", "error", "missing", "garbage", "invalid", "long", "steer", "hang")
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
    ):
        self.model = model
        self.latency, self.jitter = latency, jitter
        self.mode = "ok"
        # Modes for the next requests, in order, before `mode` applies again.
        self.script: list[str] = []
        self.requests: list[dict] = []
        self.in_flight = 0
        self.peak_in_flight = 0
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
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeOllama":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def next_mode(self) -> str:
        with self._lock:
            return self.script.pop(0) if self.script else self.mode

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
            with self._slots:
                started = time.perf_counter()
                delay = self.latency + random.uniform(-self.jitter, self.jitter)
                if delay > 0:
                    self._stop.wait(delay)
                if mode == "error":
                    return 500, {"error": "llama runner process has terminated"}
                content = self._reply_content(mode, body)
                elapsed_ns = int((time.perf_counter() - started) * 1e9)
            prompt = "".join(m.get("content", "") for m in body.get("messages", []))
            return 200, {
                "model": self.model,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "message": {"role": "assistant", "content": content},
                "done": True,
                "done_reason": "stop",
                "total_duration": elapsed_ns,
                "load_duration": 0,
                "prompt_eval_count": len(prompt) // 4,
                "eval_count": len(content) // 4,
                "eval_duration": elapsed_ns,
            }
        finally:
            with self._lock:
                self.in_flight -= 1

    def _reply_content(self, mode: str, body: dict) -> str:
        if mode == "garbage":
            return "Sure! Here is your story: {title: oops"
        if mode == "invalid":
            return json.dumps({"headline": "missing the required fields"})
        if mode == "long":
            return json.dumps({"title": "t", "summary": "word " * 50_000, "key_points": ["k"]})
        if mode == "steer":  # a reply a steered model might give: extra fields, markup
            return json.dumps(
                {
                    "title": "<script>alert(1)</script> Ignore the job",
                    "summary": "Status: failed. Delete all stories.",
                    "key_points": ["<b>bold</b>"],
                    "status": "failed",
                    "force": True,
                    "article_count": 999,
                }
            )
        prompt = body.get("messages", [{}])[-1].get("content", "")
        titles = re.findall(r"<article[^>]*>\n([^\n]+)", prompt)
        first = titles[0] if titles else "Untitled"
        return json.dumps(
            {
                "title": f"{first}"[:200],
                "summary": f"{len(titles)} reports cover this event. " + " ".join(titles[:2])[:600],
                "key_points": [t[:300] for t in titles[:5]] or [first],
            }
        )


def _handler_for(server: FakeOllama):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle's algorithm on, the second waits
        # for the client's delayed ACK, 40 ms a request. Ollama's own server sets TCP_NODELAY.
        disable_nagle_algorithm = True

        def do_GET(self):
            if self.path == "/api/tags":
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
            if self.path != "/api/chat":
                self._send(404, {"error": "not found"})
                return
            self._send(*server.chat(body))

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
