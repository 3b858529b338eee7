import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import free_port
from scripted import NOT_JSON

from storyapp.fake_ollama import FakeOllama
from storyapp.llm import LLMError
from storyapp.ollama_llm import OllamaLLM
from storyapp.story import schema
from storyapp.synthesis import GENERATION

MESSAGES = [
    {"role": "system", "content": "Write a story."},
    {"role": "user", "content": '<article source="A" published="x">\nQuake hits Eldham\nbody'},
]


OPEN: list[OllamaLLM] = []


@pytest.fixture(autouse=True)
def close_clients():
    yield
    while OPEN:
        OPEN.pop().close()


def client(*servers, timeout=5.0, concurrency=4, model="llama3.1:8b"):
    hosts = tuple(s if isinstance(s, str) else s.url for s in servers)
    OPEN.append(OllamaLLM(hosts, model, timeout=timeout, concurrency=concurrency))
    return OPEN[-1]


def test_reply_is_parsed_with_tokens_and_latency(ollama):
    story = {"title": "Quake hits Eldham", "summary": "Homes damaged.", "key_points": ["6.1"]}
    ollama.reply = lambda body: story
    reply = client(ollama).generate(MESSAGES, schema(), GENERATION)
    assert reply.data == story
    assert reply.host == ollama.url
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert reply.latency_ms > 0
    sent = ollama.requests[0]
    assert sent["stream"] is False
    assert sent["format"] == schema()
    assert sent["model"] == "llama3.1:8b"


@pytest.mark.parametrize(
    "mode, content, outcome, status, retryable",
    [
        ("busy", None, "error", 503, True),
        ("error", None, "error", 500, True),
        ("missing", None, "error", 404, False),
        ("ok", NOT_JSON, "invalid", None, True),
    ],
)
def test_failures_are_classified(ollama, mode, content, outcome, status, retryable):
    ollama.mode = mode
    if content is not None:
        ollama.reply = lambda body: content
    with pytest.raises(LLMError) as caught:
        client(ollama).generate(MESSAGES, schema(), GENERATION)
    assert caught.value.outcome == outcome
    assert caught.value.status_code == status
    assert caught.value.retryable is retryable
    assert caught.value.host == ollama.url


def test_an_invalid_reply_keeps_the_tokens_the_server_counted(ollama):
    ollama.reply = lambda body: NOT_JSON
    with pytest.raises(LLMError) as caught:
        client(ollama).generate(MESSAGES, schema(), GENERATION)
    assert caught.value.outcome == "invalid" and caught.value.reply_text == NOT_JSON
    assert caught.value.prompt_tokens > 0 and caught.value.completion_tokens > 0


def test_the_latency_is_the_servers_own_time_without_its_queue():
    # A server that runs one request at a time, sent two at once: the second waits for the
    # first in the server's queue, which Ollama's durations leave out.
    with FakeOllama(latency=0.3, slots=1) as server:
        llm = client(server, concurrency=2)
        with ThreadPoolExecutor(max_workers=2) as pool:
            started = time.perf_counter()
            replies = list(pool.map(lambda _: llm.generate(MESSAGES, schema(), GENERATION), [1, 2]))
            waited = time.perf_counter() - started
    assert waited >= 0.6
    for reply in replies:
        assert not reply.latency_includes_queue
        assert 250 < reply.latency_ms < 450


def test_a_host_skipped_after_failures_is_tried_again_once_it_answers_a_check(ollama):
    llm = client(ollama)
    for _ in range(3):
        llm._slots.hosts.breakers[ollama.url].failed("refused")  # down a moment ago
    with pytest.raises(LLMError, match="3 refused connections in a row") as caught:
        llm.generate(MESSAGES, schema(), GENERATION)
    assert caught.value.outcome == "skipped" and ollama.chat_count == 0
    assert llm.check()["reachable"]
    assert llm.generate(MESSAGES, schema(), GENERATION).host == ollama.url


def test_missing_model_says_so(ollama):
    with pytest.raises(LLMError, match="model nope:1b not found.*ollama pull nope:1b"):
        client(ollama, model="nope:1b").generate(MESSAGES, schema(), GENERATION)


def test_a_server_that_never_answers_times_out(ollama):
    ollama.mode = "hang"
    with pytest.raises(LLMError) as caught:
        client(ollama, timeout=0.3).generate(MESSAGES, schema(), GENERATION)
    assert caught.value.outcome == "timeout"
    assert caught.value.retryable


def test_refused_connection_is_a_retryable_error():
    with pytest.raises(LLMError, match="cannot connect") as caught:
        client(f"http://127.0.0.1:{free_port()}").generate(MESSAGES, schema(), GENERATION)
    assert caught.value.outcome == "error"
    assert caught.value.retryable


def test_requests_in_flight_are_bounded_per_host():
    with FakeOllama(latency=0.1, slots=32) as server:
        llm = client(server, concurrency=3)
        with ThreadPoolExecutor(max_workers=12) as pool:
            list(pool.map(lambda _: llm.generate(MESSAGES, schema(), GENERATION), range(24)))
        assert server.chat_count == 24
        assert server.peak_in_flight == 3


def test_several_hosts_share_the_work():
    with FakeOllama(latency=0.05) as one, FakeOllama(latency=0.05) as two:
        llm = client(one, two, concurrency=2)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda _: llm.generate(MESSAGES, schema(), GENERATION), range(16)))
        assert one.chat_count + two.chat_count == 16
        assert one.chat_count >= 4 and two.chat_count >= 4
        assert one.peak_in_flight <= 2 and two.peak_in_flight <= 2


def test_check_reports_reachability_and_model(ollama):
    assert client(ollama).check()["model_available"] is True
    assert client(ollama, model="other:7b").check() == {
        "reachable": True,
        "model_available": False,
        "model": "other:7b",
    }
    down = client(f"http://127.0.0.1:{free_port()}").check(timeout=1)
    assert down["reachable"] is False and down["errors"]
