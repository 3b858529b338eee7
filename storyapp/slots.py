"""How many LLM requests may be in flight per host at once, and which host takes the next one.

`ProcessSlots` (the default) bounds the worker threads of one process, with a semaphore per
host. `RedisSlots` bounds every process that shares a Redis, on any machine: a request holds a
lease in a sorted set per host (token -> expiry), taken in one Lua script, so two processes
cannot both take the last slot, and requests wait in one line, served in the order they came;
a process killed mid-request holds its lease only until it expires.
"""

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

log = logging.getLogger(__name__)


class Slots(Protocol):
    def take(self) -> AbstractContextManager[str]:
        """Waits for a free slot on some host and holds it; yields the host."""


class ProcessSlots:
    def __init__(self, hosts: tuple[str, ...], limit: int):
        self.hosts = hosts
        self._semaphores = {h: threading.BoundedSemaphore(limit) for h in hosts}
        self._in_flight = dict.fromkeys(hosts, 0)
        self._lock = threading.Lock()

    @contextmanager
    def take(self) -> Iterator[str]:
        # The host with the fewest requests in flight (or waiting for a slot) gets the next one.
        with self._lock:
            host = min(self.hosts, key=self._in_flight.__getitem__)
            self._in_flight[host] += 1
        try:
            with self._semaphores[host]:
                yield host
        finally:
            with self._lock:
                self._in_flight[host] -= 1


# KEYS[1]: the line of waiting requests (token -> arrival, ms); KEYS[2]: when each last asked
# (token -> ms); KEYS[3..]: each host's leases (token -> expiry, ms). ARGV: limit per host,
# lease ms, token, ms after which a waiter that stopped asking (its process died) leaves the
# line. Puts the caller in line; if it is among the first as many as there are free slots,
# takes one on the host with the fewest leases and returns that host's 1-based index, else 0.
# First come, first served: a thread that just gave a slot back cannot take it again ahead of
# one that has been waiting. Times are Redis's, so the machines' clocks need not agree.
TAKE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local limit, lease, token, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)) do
  redis.call('ZREM', KEYS[1], gone)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
redis.call('ZADD', KEYS[1], 'NX', now, token)
redis.call('ZADD', KEYS[2], now, token)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
local free, best, fewest = 0, 0, limit
for i = 3, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local held = redis.call('ZCARD', KEYS[i])
  free = free + math.max(limit - held, 0)
  if held < fewest then
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
        self.hosts = hosts
        self.limit = limit
        self.lease_ms = int(lease_s * 1000)
        self.waiter_ttl_ms = int(waiter_ttl_s * 1000)
        self._client = client
        # One hash tag for all: a Lua script's keys must live on one Redis Cluster node.
        line = [f"{{{namespace}}}.waiting", f"{{{namespace}}}.asked"]
        self._keys = line + [f"{{{namespace}}}.{host}" for host in hosts]
        self._take = client.register_script(TAKE)

    def try_take(self, token: str) -> str | None:
        """One try, which also keeps `token`'s place in line: the host taken, or None."""
        args = [self.limit, self.lease_ms, token, self.waiter_ttl_ms]
        index = self._take(keys=self._keys, args=args)
        return self.hosts[index - 1] if index else None

    @contextmanager
    def take(self) -> Iterator[str]:
        token = uuid.uuid4().hex
        delay = self.POLL_S[0]
        while (host := self.try_take(token)) is None:
            time.sleep(delay)
            delay = min(delay * 2, self.POLL_S[1])
        try:
            yield host
        finally:
            try:
                self._client.zrem(self._keys[2 + self.hosts.index(host)], token)
            except Exception as exc:  # the reply is in hand; the lease expires by itself
                log.warning("could not give back an LLM slot on %s: %s", host, exc)
