"""How many LLM requests may be in flight per host at once, and which host takes the next one.

`ProcessSlots` (the default) bounds the worker threads of one process, with a semaphore per
host. `RedisSlots` bounds every process that shares a Redis, on any machine: a request holds a
lease in a sorted set per host (token -> expiry), taken in one Lua script, so two processes
cannot both take the last slot; a process killed mid-request holds its lease only until it
expires.
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


# KEYS: each host's leases, a sorted set of token -> expiry in ms. ARGV: limit, lease ms, token.
# Takes a slot on the host with the fewest leases, if one has room; returns its 1-based index,
# or 0. Expiry is on Redis's clock, so the machines' clocks need not agree.
TAKE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local best, fewest = 0, tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local held = redis.call('ZCARD', key)
  if held < fewest then
    best, fewest = i, held
  end
end
if best > 0 then
  redis.call('ZADD', KEYS[best], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[best], tonumber(ARGV[2]))
end
return best
"""


class RedisSlots:
    # A waiting request asks again after this long, doubling up to the second figure: an LLM
    # call takes seconds, so a slot freed is taken within a few percent of one.
    POLL_S = (0.01, 0.2)

    def __init__(self, client, namespace: str, hosts: tuple[str, ...], limit: int, lease_s: float):
        self.hosts = hosts
        self.limit = limit
        self.lease_ms = int(lease_s * 1000)
        self._client = client
        # One hash tag for all of them: a Lua script's keys must live on one Redis Cluster node.
        self._keys = [f"{{{namespace}}}.{host}" for host in hosts]
        self._take = client.register_script(TAKE)

    @contextmanager
    def take(self) -> Iterator[str]:
        token = uuid.uuid4().hex
        delay = self.POLL_S[0]
        while not (index := self._take(keys=self._keys, args=[self.limit, self.lease_ms, token])):
            time.sleep(delay)
            delay = min(delay * 2, self.POLL_S[1])
        try:
            yield self.hosts[index - 1]
        finally:
            try:
                self._client.zrem(self._keys[index - 1], token)
            except Exception as exc:  # the reply is in hand; the lease expires by itself
                log.warning("could not give back an LLM slot on %s: %s", self.hosts[index - 1], exc)
