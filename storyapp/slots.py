"""How many LLM requests may be in flight per host at once, and which host takes the next one.

Each host has a circuit breaker (breaker.py) and a bound that adapts to the server (`Bound`),
kept in this process (`Hosts`): a request goes to a host whose breaker lets it through and
that has room under its bound, the one with the fewest in flight; when every host is skipped
it fails at once. `ProcessSlots` (the default) counts the requests of this process's threads.
`RedisSlots` counts those of every process that shares a Redis, on any machine: a request
holds a lease in a sorted set per host (token -> expiry), taken in one Lua script, so two
processes cannot both take the last slot, and requests wait in one line, served in the order
they came; a process killed mid-request holds its lease only until it expires.

A thread waiting for a slot can have a function called every so often (`while_waiting`):
jobs.py renews the cluster's lease so, as waiting in line is not the cluster being lost.
"""

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from typing import Protocol

from storyapp.breaker import Breaker
from storyapp.llm import LLMError

log = logging.getLogger(__name__)


class Bound:
    """How many requests one host is sent at once, found rather than guessed: it starts at the
    configured bound (the ceiling), is halved when a reply waited in the server's queue, or a
    request timed out, or the server said it is busy (429, 503), and grows by one after as many
    replies in a row as it allows that did not wait. A server that runs one request at a time
    settles at 1-2; one with four slots stays at 4.

    Whether a reply waited: the server's own time on it (Ollama's durations) against the time
    it took here; when the server does not say (OpenAI-compatible servers), against the
    fastest of the last replies. Only a request sent since the last cut can cut again: the ones
    in flight when it came were sent under the old bound and say nothing of the new one."""

    # A reply waited when it took longer than its service time by half that time and more,
    # and by more than the noise of a request over a loaded machine.
    QUEUED_SHARE = 0.5
    QUEUED_MIN_S = 0.05
    RECENT = 16  # the replies whose fastest stands for the service time, when not told it

    def __init__(self, ceiling: int):
        self.ceiling = ceiling
        self.limit = ceiling
        self.cuts = 0  # how many times it was cut: which requests were sent under the bound
        self._good = 0
        self._recent: deque[float] = deque(maxlen=self.RECENT)

    def replied(self, sent_at_cut: int, wall_s: float, server_s: float | None) -> None:
        if server_s is None:
            service = min(self._recent) if self._recent else None
            self._recent.append(wall_s)
        else:
            service = server_s
        if service is not None and wall_s - service > self.QUEUED_SHARE * service + (
            self.QUEUED_MIN_S
        ):
            self.cut(sent_at_cut)
            return
        self._good += 1
        if self._good >= self.limit and self.limit < self.ceiling:
            self.limit += 1
            self._good = 0

    def cut(self, sent_at_cut: int) -> None:
        if sent_at_cut != self.cuts:
            return
        self.limit = max(1, self.limit // 2)
        self.cuts += 1
        self._good = 0


# Statuses where the server says it has more than it can take.
OVERLOADED = {429, 503}


class Slot:
    """A request's place on a host; the backend tells it what came of the request (`report`),
    which the host's breaker and bound learn from."""

    def __init__(self, hosts: "Hosts", host: str, sent_at_cut: int):
        self.host = host
        self.reported = False
        self._hosts = hosts
        self._sent_at_cut = sent_at_cut

    def report(
        self,
        outcome: str,
        status_code: int | None = None,
        wall_s: float = 0.0,
        server_s: float | None = None,
    ) -> None:
        """`outcome` as the call log says it (ok, invalid, timeout, error); an error with no
        status is a connection that failed; `wall_s` the time here, `server_s` the server's
        own time on the request when it says it."""
        self.reported = True
        with self._hosts.changed:
            breaker, bound = self._hosts.breakers[self.host], self._hosts.bounds[self.host]
            was_open = breaker.state != "closed"
            if outcome == "timeout":
                breaker.failed("timeout")
                bound.cut(self._sent_at_cut)
            elif outcome == "error" and status_code is None:
                breaker.failed("refused")
            else:
                breaker.answered()
                if status_code in OVERLOADED:
                    bound.cut(self._sent_at_cut)
                elif outcome in ("ok", "invalid"):
                    bound.replied(self._sent_at_cut, wall_s, server_s)
            if breaker.state != "closed" and not was_open:
                log.warning("LLM host skipped: %s", breaker.why())
            self._hosts.changed.notify_all()


class Hosts:
    """Each host's breaker and bound, and this process's requests in flight on it."""

    def __init__(self, hosts: tuple[str, ...], ceiling: int):
        self.names = hosts
        self.changed = threading.Condition()
        self.breakers = {h: Breaker(h) for h in hosts}
        self.bounds = {h: Bound(ceiling) for h in hosts}
        self.in_flight = dict.fromkeys(hosts, 0)

    def limits(self) -> dict[str, int]:
        """How many requests each host may have in flight now: its bound when its breaker is
        closed, 1 (the probe) when it is due one, else 0. Raises when every host is skipped
        (open): a probe in flight is waited for, as its answer may close its breaker. Under
        `changed`."""
        limits = {}
        for host in self.names:
            breaker = self.breakers[host]
            if breaker.state == "closed":
                limits[host] = self.bounds[host].limit
            else:
                limits[host] = int(breaker.allows())
        if all(self.breakers[h].state == "open" for h in self.names):
            raise LLMError(
                "; ".join(self.breakers[h].why() for h in self.names),
                outcome="skipped",
                retryable=False,
                host=self.names[0],
            )
        return limits

    def pick(self) -> str | None:
        """The host with room and the fewest in flight, None if every one is full. Under
        `changed`."""
        room = []
        for host, limit in self.limits().items():
            closed = self.breakers[host].state == "closed"
            in_flight = self.in_flight[host] if closed else 0  # a probe goes alone
            if in_flight < limit:
                room.append((self.in_flight[host], host))
        return min(room)[1] if room else None

    def checked(self, host: str) -> None:
        """`host` answered a check (llm.check): a probe may go to it now (Breaker.due_now)."""
        with self.changed:
            self.breakers[host].due_now()
            self.changed.notify_all()

    def start(self, host: str) -> Slot:
        """Under `changed`."""
        self.in_flight[host] += 1
        self.breakers[host].sent()
        return Slot(self, host, self.bounds[host].cuts)

    def end(self, slot: Slot) -> None:
        with self.changed:
            self.in_flight[slot.host] -= 1
            if not slot.reported:
                self.breakers[slot.host].abandoned()
            self.changed.notify_all()


class Slots(Protocol):
    hosts: Hosts

    def take(self) -> AbstractContextManager[Slot]:
        """Waits for a free slot on some host and holds it; raises LLMError (outcome skipped)
        at once when every host's breaker is open."""


_waiting: ContextVar[tuple[float, Callable[[], None]] | None] = ContextVar(
    "storyapp.slots.waiting", default=None
)


@contextmanager
def while_waiting(every_s: float, call: Callable[[], None]) -> Iterator[None]:
    """Calls `call` every `every_s` while this thread waits for an LLM slot."""
    token = _waiting.set((every_s, call))
    try:
        yield
    finally:
        _waiting.reset(token)


class Waiter:
    """A thread's wait for a slot: how long it may sleep before `tick()` is due again."""

    # Asked again at least this often: a breaker's cool-down ends with no one to say so.
    LONGEST_S = 1.0

    def __init__(self):
        self._hook = _waiting.get()
        self._next = time.monotonic() + self._hook[0] if self._hook else None

    def sleep_s(self) -> float:
        if self._next is None:
            return self.LONGEST_S
        return min(self.LONGEST_S, max(self._next - time.monotonic(), 0.0))

    def tick(self) -> None:
        """Calls the thread's `while_waiting` function when it is due; outside any lock."""
        if self._hook is not None and time.monotonic() >= self._next:
            self._hook[1]()
            self._next = time.monotonic() + self._hook[0]


@contextmanager
def held(lock: threading.Lock) -> Iterator[None]:
    """Holds `lock`, waiting for it as for a slot: the `while_waiting` function is called."""
    waiter = Waiter()
    while not lock.acquire(timeout=waiter.sleep_s()):
        waiter.tick()
    try:
        yield
    finally:
        lock.release()


class ProcessSlots:
    def __init__(self, hosts: tuple[str, ...], limit: int):
        self.hosts = Hosts(hosts, limit)

    @contextmanager
    def take(self) -> Iterator[Slot]:
        waiter = Waiter()
        while True:
            with self.hosts.changed:
                host = self.hosts.pick()
                if host is not None:
                    slot = self.hosts.start(host)
                    break
                self.hosts.changed.wait(waiter.sleep_s())
            waiter.tick()
        try:
            yield slot
        finally:
            self.hosts.end(slot)


# KEYS[1]: the line of waiting requests (token -> arrival, ms); KEYS[2]: when each last asked
# (token -> ms); KEYS[3..]: each host's leases (token -> expiry, ms). ARGV: lease ms, token, ms
# after which a waiter that stopped asking (its process died) leaves the line, then each host's
# limit (Hosts.limits: 0 for a host skipped). Puts the caller in line; if it is among the
# first as many as there are free slots, takes one on the host with room and the fewest leases
# and returns that host's 1-based index, else 0. First come, first served: a thread that just
# gave a slot back cannot take it again ahead of one that has been waiting. Times are Redis's,
# so the machines' clocks need not agree.
TAKE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local lease, token, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)) do
  redis.call('ZREM', KEYS[1], gone)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
redis.call('ZADD', KEYS[1], 'NX', now, token)
redis.call('ZADD', KEYS[2], now, token)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
local free, best, fewest = 0, 0, 0
for i = 3, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local held = redis.call('ZCARD', KEYS[i])
  local room = math.max(tonumber(ARGV[i + 1]) - held, 0)
  free = free + room
  if room > 0 and (best == 0 or held < fewest) then
    best, fewest = i, held
  end
end
if best == 0 or redis.call('ZRANK', KEYS[1], token) >= free then
  return 0
end
redis.call('ZREM', KEYS[1], token)
redis.call('ZREM', KEYS[2], token)
redis.call('ZADD', KEYS[best], now + lease, token)
redis.call('PEXPIRE', KEYS[best], lease)
return best - 2
"""


class RedisSlots:
    # A waiting request asks again after this long, doubling up to the second figure: an LLM
    # call takes seconds, so a freed slot stands idle a few percent of one at most.
    POLL_S = (0.01, 0.1)

    def __init__(
        self,
        client,
        namespace: str,
        hosts: tuple[str, ...],
        limit: int,
        lease_s: float,
        waiter_ttl_s: float = 2.0,
    ):
        self.hosts = Hosts(hosts, limit)
        self.lease_ms = int(lease_s * 1000)
        self.waiter_ttl_ms = int(waiter_ttl_s * 1000)
        self._client = client
        # One hash tag for all: a Lua script's keys must live on one Redis Cluster node.
        line = [f"{{{namespace}}}.waiting", f"{{{namespace}}}.asked"]
        self._keys = line + [f"{{{namespace}}}.{host}" for host in hosts]
        self._take = client.register_script(TAKE)

    def try_take(self, token: str) -> Slot | None:
        """One try, which also keeps `token`'s place in line: the slot taken, or None."""
        with self.hosts.changed:
            limits = self.hosts.limits()
        args = [self.lease_ms, token, self.waiter_ttl_ms, *limits.values()]
        index = self._take(keys=self._keys, args=args)
        if not index:
            return None
        with self.hosts.changed:
            return self.hosts.start(self.hosts.names[index - 1])

    @contextmanager
    def take(self) -> Iterator[Slot]:
        token = uuid.uuid4().hex
        delay = self.POLL_S[0]
        waiter = Waiter()
        try:
            while (slot := self.try_take(token)) is None:
                time.sleep(min(delay, waiter.sleep_s()))
                delay = min(delay * 2, self.POLL_S[1])
                waiter.tick()
        except BaseException:
            # Every host skipped, or the waiter's function gave up: out of the line at once,
            # not after it stopped asking, so that those behind it need not wait for that.
            self._client.zrem(self._keys[0], token)
            self._client.zrem(self._keys[1], token)
            raise
        try:
            yield slot
        finally:
            self.hosts.end(slot)
            try:
                self._client.zrem(self._keys[2 + self.hosts.names.index(slot.host)], token)
            except Exception as exc:  # the reply is in hand; the lease expires by itself
                log.warning("could not give back an LLM slot on %s: %s", slot.host, exc)
