"""The access log of `storyapp serve`: one JSON line per request (logs.py), with its method,
path, status and duration, written when the answer has been sent (an event stream's when it
ends). WSGI middleware, so every answer is counted, Flask's errors and static files too.

The query string is left out: it may hold the read token (`?token=`).
"""

import logging
import time
from collections.abc import Callable, Iterable

from werkzeug.wsgi import ClosingIterator

log = logging.getLogger("storyapp.access")


class AccessLog:
    def __init__(self, app: Callable):
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        status = {}

        def recording_start(line: str, headers, exc_info=None):
            status["code"] = int(line.split(" ", 1)[0])
            return start_response(line, headers, exc_info)

        def record() -> None:
            method, path = environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
            code = status.get("code")
            log.info(
                "%s %s %s",
                method,
                path,
                code,
                extra={
                    "method": method,
                    "path": path,
                    "status": code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )

        return ClosingIterator(self.app(environ, recording_start), record)
