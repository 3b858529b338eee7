"""A circuit breaker for one LLM host: after FAILURES timeouts or refused connections in a row
the host is skipped for COOL_DOWN_S, then one request goes through as a probe (the others wait
for its word); its answer closes the breaker, its failure opens it for another cool-down. A
hung server then costs one timeout per host rather than every attempt of every cluster. The
state lives in the process (each worker process learns on its own); slots.py keeps one breaker
per host and asks it before each request.
"""

import time
from collections.abc import Callable

FAILURES = 3
COOL_DOWN_S = 60.0

KINDS = {
    "timeout": ("timeout", "timeouts"),
    "refused": ("refused connection", "refused connections"),
}


class Breaker:
    """closed -> (FAILURES in a row) open -> (cool-down) half-open, one probe -> closed or open.
    Not thread-safe: its owner (slots.Hosts) calls it under its own lock."""

    def __init__(
        self,
        host: str,
        failures: int = FAILURES,
        cool_down_s: float = COOL_DOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.host = host
        self.failures_to_open = failures
        self.cool_down_s = cool_down_s
        self._clock = clock
        self._failed: list[str] = []  # the kinds of the failures in a row, oldest first
        self._opened_at: float | None = None
        self._probing = False  # the half-open state's one request is out

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at >= self.cool_down_s:
            return "half-open"
        return "open"

    def allows(self) -> bool:
        """Whether a request may go to the host now, without taking the probe."""
        state = self.state
        return state == "closed" or (state == "half-open" and not self._probing)

    def sent(self) -> None:
        """A request goes to the host: in the half-open state, that is the probe."""
        if self._opened_at is not None:
            self._probing = True

    def answered(self) -> None:
        """The host answered (anything over HTTP: it is alive)."""
        self._failed.clear()
        self._opened_at, self._probing = None, False

    def failed(self, kind: str) -> None:
        """No answer: `kind` is timeout or refused."""
        self._failed.append(kind)
        if self._probing or len(self._failed) >= self.failures_to_open:
            self._opened_at, self._probing = self._clock(), False

    def due_now(self) -> None:
        """The host answered something else (a health check): its cool-down is over, a probe
        may go at once, rather than the stories waiting out the rest of it."""
        if self.state == "open":
            self._opened_at = self._clock() - self.cool_down_s

    def abandoned(self) -> None:
        """A request that went and came to nothing either way (its caller failed): a probe may
        go again."""
        self._probing = False

    def why(self) -> str:
        """Why the host is skipped, as the job's error says it."""
        counts = {kind: self._failed.count(kind) for kind in KINDS if kind in self._failed}
        said = " and ".join(f"{n} {KINDS[kind][n != 1]}" for kind, n in counts.items())
        return f"{self.host}: {said} in a row, skipped for {self.cool_down_s:.0f} s"
