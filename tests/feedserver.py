"""A local HTTP server for the feed tests, on a free port: documents published at paths (RSS,
Atom, anything), answered with 304 when the request's If-None-Match or If-Modified-Since
matches; a slow path, an endless one, a redirect to a file: URL, and 404 for the rest. It
records every request's path and headers."""

import contextlib
import hashlib
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape

SLOW = "/slow.xml"  # answers after `slow_s` seconds
ENDLESS = "/endless.xml"  # sends bytes until the client hangs up
TO_FILE = "/to-file.xml"  # redirects to file:///etc/passwd


class FeedServer:
    def __init__(self):
        self.documents: dict[str, dict] = {}
        self.requests: list[tuple[str, dict]] = []
        self.slow_s = 2.0
        self._published = 0
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> "FeedServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()  # wakes the slow handler
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def publish(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/rss+xml",
        etag: bool = True,
        last_modified: bool = True,
    ) -> None:
        """Serves `body` at `path` with the validators asked for; a new body gets new ones."""
        self._published += 1  # a distinct Last-Modified for every body, even within a second
        modified = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=self._published)
        self.documents[path] = {
            "body": body,
            "type": content_type,
            "ETag": f'"{hashlib.sha256(body).hexdigest()[:16]}"' if etag else None,
            "Last-Modified": format_datetime(modified, usegmt=True) if last_modified else None,
        }

    def headers_sent_to(self, path: str) -> list[dict]:
        return [headers for p, headers in self.requests if p == path]


def _handler_for(server: FeedServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

        def do_GET(self):
            server.requests.append((self.path, dict(self.headers)))
            # The client may hang up first: what the slow and endless paths are for.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.answer()

        def answer(self):
            if self.path == SLOW:
                server._closing.wait(server.slow_s)
                return self.send(200, b"<rss/>", "application/rss+xml")
            if self.path == ENDLESS:
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.end_headers()
                while not server._closing.is_set():
                    self.wfile.write(b"<rss>" + b" " * 8192)
                return None
            if self.path == TO_FILE:
                self.send_response(302)
                self.send_header("Location", "file:///etc/passwd")
                self.send_header("Content-Length", "0")
                return self.end_headers()
            document = server.documents.get(self.path)
            if document is None:
                return self.send(404, b"not here", "text/plain")
            validators = {k: document[k] for k in ("ETag", "Last-Modified") if document[k]}
            if (
                validators.get("ETag") is not None
                and self.headers.get("If-None-Match") == validators["ETag"]
            ) or (
                validators.get("Last-Modified") is not None
                and self.headers.get("If-Modified-Since") == validators["Last-Modified"]
            ):
                self.send_response(304)
                for name, value in validators.items():
                    self.send_header(name, value)
                return self.end_headers()
            return self.send(200, document["body"], document["type"], validators)

        def send(self, status, body, content_type, headers=None):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


def rss(title: str, items: list[dict]) -> bytes:
    """An RSS 2.0 document of articles ({"url", "title", "summary", "published_at"})."""
    entries = "".join(
        f"<item><title>{escape(i['title'])}</title><link>{escape(i['url'])}</link>"
        f"<description>{escape(i.get('summary', ''))}</description>"
        f"<pubDate>{format_datetime(_aware(i['published_at']))}</pubDate></item>"
        for i in items
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
        f"<title>{escape(title)}</title><link>https://wire.example/</link>"
        f"<description>News</description>{entries}</channel></rss>\n"
    ).encode()


def atom(title: str, items: list[dict]) -> bytes:
    """An Atom 1.0 document of the same kind of articles."""
    entries = "".join(
        f'<entry><title>{escape(i["title"])}</title><link href="{escape(i["url"])}"/>'
        f"<id>{escape(i['url'])}</id><summary>{escape(i.get('summary', ''))}</summary>"
        f"<updated>{_aware(i['published_at']).isoformat()}</updated></entry>"
        for i in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>{escape(title)}</title><id>urn:feed:{escape(title)}</id>"
        f"<updated>{datetime.now(UTC).isoformat()}</updated>{entries}</feed>\n"
    ).encode()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def item(n: int, title: str, summary: str = "", hours_ago: float = 1.0) -> dict:
    return {
        "url": f"https://wire.example/{n}",
        "title": title,
        "summary": summary,
        "published_at": datetime.now(UTC) - timedelta(hours=hours_ago),
    }
