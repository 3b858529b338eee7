"""The per-host bound on LLM requests: how it adapts to the server, how a host's breaker steers
requests away from it, and the bound held across processes through Redis."""

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from backends import REDIS_URL
from conftest import init, make_settings, running_consumer, shifted_sample, wait_for_job
from test_llm import MESSAGES
from workers import assert_finished_once, wait_until

from storyapp import supervisor, tasks
from storyapp.api import create_app
from storyapp.fake_ollama import FakeOllama
from storyapp.llm import LLMError
from storyapp.models import LLMCall
from storyapp.ollama_llm import OllamaLLM
from storyapp.slots import Bound, ProcessSlots, RedisSlots, while_waiting
from storyapp.story import schema
from storyapp.synthesis import GENERATION

# The tests that take a backend run on the scale one: Redis.
pytestmark = pytest.mark.backends("scale")


def test_the_bound_starts_at_the_ceiling_and_halves_when_a_reply_waited_in_the_queue():
    bound = Bound(8)
    assert bound.limit == 8
    bound.replied(0, wall_s=1.0, server_s=0.95)  # no wait to speak of
    assert bound.limit == 8
    bound.replied(0, wall_s=2.0, server_s=1.0)  # waited as long as it took
    assert (bound.limit, bound.cuts) == (4, 1)
    # Sent before that cut, under the old bound: it says nothing of the new one.
    bound.replied(0, wall_s=3.0, server_s=1.0)
    assert bound.limit == 4
    bound.replied(1, wall_s=3.0, server_s=1.0)
    bound.cut(2)  # a timeout or a 503
    bound.cut(3)
    bound.cut(4)
    assert bound.limit == 1  # the floor


def test_the_bound_grows_by_one_after_as_many_good_replies_as_it_allows():
    bound = Bound(4)
    bound.cut(0)
    assert bound.limit == 2
    bound.replied(1, 1.0, 1.0)
    assert bound.limit == 2
    bound.replied(1, 1.0, 1.0)
    assert bound.limit == 3
    for _ in range(3):
        bound.replied(1, 1.0, 1.0)
    assert bound.limit == 4
    for _ in range(8):
        bound.replied(1, 1.0, 1.0)
    assert bound.limit == 4  # the ceiling


def test_without_the_servers_time_the_fastest_recent_reply_is_the_yardstick():
    bound = Bound(4)
    bound.replied(0, 0.8, None)  # the first: nothing to compare it with
    bound.replied(0, 1.0, None)  # a longer reply, not a wait
    assert bound.limit == 4
    bound.replied(0, 1.7, None)  # twice the fastest: it waited
    assert bound.limit == 2


def test_requests_go_round_a_host_whose_breaker_is_open():
    slots = ProcessSlots(("http://a:11434", "http://b:11434"), 2)
    for _ in range(3):
        with slots.take() as slot:
            failed = slot.host == "http://a:11434"
            slot.report("timeout" if failed else "ok", None if failed else 200, 0.1, 0.1)
    # a failed until its breaker opened; every request now goes to b.
    assert slots.hosts.breakers["http://a:11434"].state == "open"
    for _ in range(4):
        with slots.take() as slot:
            assert slot.host == "http://b:11434"
            slot.report("ok", 200, 0.1, 0.1)


def test_with_every_host_open_a_request_fails_at_once_saying_why():
    slots = ProcessSlots(("http://a:11434",), 4)
    for _ in range(3):
        with slots.take() as slot:
            slot.report("error")  # a refused connection: no status
    started = time.monotonic()
    with pytest.raises(LLMError) as caught, slots.take():
        pass
    assert time.monotonic() - started < 0.5
    assert caught.value.outcome == "skipped" and not caught.value.retryable
    assert str(caught.value) == ("http://a:11434: 3 refused connections in a row, skipped for 60 s")


def test_while_the_probe_is_out_the_other_requests_wait_for_its_word():
    slots = ProcessSlots(("http://a:11434",), 4)
    for _ in range(3):
        with slots.take() as slot:
            slot.report("timeout")
    slots.hosts.checked("http://a:11434")  # it answered a check: the probe may go now
    went = []
    with slots.take() as probe:
        waiter = threading.Thread(target=lambda: went.append(take_and_answer(slots)))
        waiter.start()
        time.sleep(0.3)
        assert went == []  # waiting: neither sent nor turned away
        probe.report("ok", 200, 0.1, 0.1)
    waiter.join(timeout=5)
    assert went == ["http://a:11434"]
    assert slots.hosts.breakers["http://a:11434"].state == "closed"


def take_and_answer(slots) -> str:
    with slots.take() as slot:
        slot.report("ok", 200, 0.1, 0.1)
        return slot.host


def test_a_busy_server_halves_the_bound_and_an_answer_is_no_failure():
    slots = ProcessSlots(("http://a:11434",), 4)
    with slots.take() as slot:
        slot.report("error", 503)
    assert slots.hosts.bounds["http://a:11434"].limit == 2
    for _ in range(5):
        with slots.take() as slot:
            slot.report("error", 500)  # the runner crashed: the host answers all the same
    assert slots.hosts.breakers["http://a:11434"].state == "closed"


def test_a_thread_waiting_for_a_slot_has_its_function_called():
    slots = ProcessSlots(("http://a:11434",), 1)
    calls = []
    with slots.take():
        waiter = threading.Thread(target=wait_for_a_slot, args=(slots, calls))
        waiter.start()
        wait_until(lambda: len(calls) >= 3, timeout=10, what="three calls while it waits")
    waiter.join()
    assert calls[-1] == "took it"


def wait_for_a_slot(slots, calls):
    with while_waiting(0.05, lambda: calls.append("waiting")), slots.take():
        calls.append("took it")


# A call takes 0.4-0.6 s on a server that runs one at a time; a cluster's lease outlasts one
# call and its timeout, not the line of clusters waiting for the server.
REPLY_S, JITTER_S, TIMEOUT_S, SHORT_LEASE_S = 0.5, 0.1, 4.0, 5.0


@pytest.mark.backends
def test_a_one_slot_server_is_driven_at_its_own_pace(tmp_path, backend, monkeypatch):
    monkeypatch.setattr(tasks, "lease_seconds", lambda timeout: SHORT_LEASE_S)
    with FakeOllama(latency=REPLY_S, jitter=JITTER_S, slots=1) as server:
        env = {"STORYAPP_LLM_CONCURRENCY": "4", "STORYAPP_LLM_TIMEOUT": str(TIMEOUT_S)}
        client = create_app(init(make_settings(tmp_path, server.url, **env, **backend.env)))
        client = client.test_client()
        assert client.post("/articles", json=shifted_sample()).status_code == 201
        # Eight threads for a server that runs one request: most clusters wait their turn
        # for many times their lease, while the supervisor reclaims expired leases.
        with running_consumer(workers=8):
            supervisor.start_supervisor()
            try:
                job_id = client.post("/stories/generate").get_json()["job_id"]
                job = wait_for_job(client, job_id, timeout=180)
            finally:
                supervisor.stop_supervisor()
        bound = tasks.llm()._slots.hosts.bounds[server.url].limit
    assert_finished_once(job_id)
    per_cluster = Counter(key for (key,) in LLMCall.select(LLMCall.cluster_key).tuples())
    assert len(per_cluster) == job["counts"]["llm"] > 10
    assert set(per_cluster.values()) == {1}  # no cluster ran twice
    assert {c.outcome for c in LLMCall.select()} == {"ok"}  # none timed out in the queue
    assert bound in (1, 2)
    # The calls' latencies are the server's own time on them, without the queue.
    assert max(c.latency_ms for c in LLMCall.select()) < (REPLY_S + JITTER_S) * 1000 + 100
    assert not any(c.latency_includes_queue for c in LLMCall.select())


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
    hosts = sorted(t.__enter__().host for t in taken)
    assert hosts == ["http://a:11434", "http://a:11434", "http://b:11434", "http://b:11434"]
    for t in taken:
        t.__exit__(None, None, None)
    with slots.take() as slot:  # all given back: room again
        assert slot.host == "http://a:11434"


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
            # Arrivals in one millisecond of Redis's clock are in the order of their tokens:
            # the next one (the holder's again, below) must come a millisecond later at least.
            arrived = max(score for _, score in client.zrange(line, 0, -1, withscores=True))
            wait_until(lambda a=arrived: redis_ms(client) > a, what="Redis's clock to move on")
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


def test_a_waiter_whose_hosts_are_all_skipped_leaves_the_line_at_once(shared, client, line):
    holder = shared(["http://a:11434"], 1)
    waiting = shared(["http://a:11434"], 1, waiter_ttl_s=60.0)
    errors = []

    def wait():
        try:
            with waiting.take():
                pass
        except LLMError as exc:
            errors.append(exc)

    with holder.take():
        thread = threading.Thread(target=wait)
        thread.start()
        wait_until(lambda: client.zcard(line) == 1, what="the waiter in line")
        with waiting.hosts.changed:  # its process finds the host hung meanwhile
            for _ in range(3):
                waiting.hosts.breakers["http://a:11434"].failed("timeout")
        thread.join(timeout=10)
        assert client.zcard(line) == 0  # gone, not left there for 60 s
    assert "http://a:11434: 3 timeouts in a row" in str(errors[0])
