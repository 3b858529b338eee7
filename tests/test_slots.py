"""The per-host bound on LLM requests, held across processes through Redis."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from backends import REDIS_URL
from test_llm import MESSAGES
from workers import wait_until

from storyapp.fake_ollama import FakeOllama
from storyapp.ollama_llm import OllamaLLM
from storyapp.slots import RedisSlots
from storyapp.story import schema
from storyapp.synthesis import GENERATION

pytestmark = pytest.mark.backends("scale")


@pytest.fixture
def client():
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def namespace(backend):
    return f"storyapp.llm-slots.{backend.env['STORYAPP_QUEUE_NAME']}"


@pytest.fixture
def shared(client, namespace):
    """Makes RedisSlots in this test's own namespace, as each consumer process would."""

    def make(hosts, limit, lease_s=60.0, waiter_ttl_s=2.0):
        return RedisSlots(client, namespace, tuple(hosts), limit, lease_s, waiter_ttl_s)

    return make


@pytest.fixture
def line(namespace):
    """The key of the line of waiting requests, for a test to see who waits (slots.TAKE)."""
    return f"{{{namespace}}}.waiting"


def test_the_bound_holds_across_clients_that_share_nothing_else(shared):
    # Two clients, as in two consumer processes, called from twelve threads; a bound of 3.
    with FakeOllama(latency=0.1, slots=32) as server:
        clients = [
            OllamaLLM(
                (server.url,),
                "llama3.1:8b",
                timeout=5,
                concurrency=3,
                slots=shared([server.url], 3),
            )
            for _ in range(2)
        ]
        with ThreadPoolExecutor(max_workers=12) as pool:
            calls = [pool.submit(c.generate, MESSAGES, schema(), GENERATION) for c in clients * 12]
            hosts = [call.result().host for call in calls]
        for c in clients:
            c.close()
    assert hosts == [server.url] * 24
    assert server.chat_count == 24 and server.peak_in_flight == 3


def test_each_request_takes_the_host_with_the_fewest_in_flight(shared):
    slots = shared(["http://a:11434", "http://b:11434"], 2)
    taken = [slots.take() for _ in range(4)]
    hosts = sorted(t.__enter__() for t in taken)
    assert hosts == ["http://a:11434", "http://a:11434", "http://b:11434", "http://b:11434"]
    for t in taken:
        t.__exit__(None, None, None)
    with slots.take() as host:  # all given back: room again
        assert host == "http://a:11434"


def test_a_slot_held_by_a_process_that_died_frees_itself(shared):
    dead = shared(["http://a:11434"], 1, lease_s=0.5)
    held = dead.take()
    held.__enter__()  # and never given back: the process was killed
    waiting = shared(["http://a:11434"], 1)
    started = time.monotonic()
    with waiting.take():
        waited = time.monotonic() - started
    assert 0.3 < waited < 3


def test_waiting_requests_are_served_in_the_order_they_came(shared, client, line):
    # Waiters that keep their place however slowly a loaded machine lets them ask: this test is
    # about the order of the line, not about a waiter that stopped asking (the next test).
    holder, early, late = (shared(["http://a:11434"], 1, waiter_ttl_s=60.0) for _ in range(3))
    order = []

    def wait_for_a_slot(slots, name):
        with slots.take():
            order.append(name)

    threads = [
        threading.Thread(target=wait_for_a_slot, args=(early, "early")),
        threading.Thread(target=wait_for_a_slot, args=(late, "late")),
    ]
    with holder.take():
        for place, t in enumerate(threads, 1):
            t.start()
            wait_until(lambda n=place: client.zcard(line) == n, what=f"{place} in line")
    with holder.take():  # given back and at once asked for again: the line goes first
        order.append("holder again")
    for t in threads:
        t.join()
    assert order == ["early", "late", "holder again"]


def test_a_waiter_that_stopped_asking_leaves_the_line(shared, client, line):
    holder = shared(["http://a:11434"], 1)
    gone = shared(["http://a:11434"], 1, waiter_ttl_s=0.3)
    with holder.take():
        assert gone.try_take("a request of a process that died") is None  # in line, first
        # Arrivals in the same millisecond of Redis's clock are in the order of their tokens:
        # the next one comes a millisecond later at least, so it is behind.
        arrived = client.zscore(line, "a request of a process that died")
        wait_until(lambda: redis_ms(client) > arrived, what="Redis's clock to move on")
    started = time.monotonic()
    with shared(["http://a:11434"], 1, waiter_ttl_s=0.3).take():
        waited = time.monotonic() - started
    assert 0.15 < waited < 3


def redis_ms(client) -> int:
    seconds, microseconds = client.time()
    return seconds * 1000 + microseconds // 1000
