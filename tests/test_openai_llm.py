"""The OpenAI-compatible backend against a local server that speaks /v1/chat/completions (the
fake server speaks it as Ollama's own /v1 does), and the whole pipeline through it."""

import pytest
from conftest import free_port, ingest_and_generate, init, make_settings, running_consumer
from test_llm import MESSAGES

from storyapp import llm as llms
from storyapp.api import create_app
from storyapp.config import Settings
from storyapp.llm import LLMError
from storyapp.openai_llm import OpenAILLM
from storyapp.story import schema
from storyapp.synthesis import GENERATION

OPEN: list[OpenAILLM] = []


@pytest.fixture(autouse=True)
def close_clients():
    yield
    while OPEN:
        OPEN.pop().close()


def client(server=None, url: str | None = None, **kwargs) -> OpenAILLM:
    url = url or f"{server.url}/v1"
    model = server.model if server else "m"
    timeout = kwargs.pop("timeout", 30)
    OPEN.append(OpenAILLM((url,), model, timeout=timeout, concurrency=2, **kwargs))
    return OPEN[-1]


def test_a_request_carries_the_schema_and_the_reply_its_tokens(ollama):
    story = {"title": "Quake hits Eldham", "summary": [], "key_points": []}
    ollama.reply = lambda body: story
    llm = client(ollama, api_key="secret")
    reply = llm.generate(MESSAGES, schema(), GENERATION)
    assert reply.data == story and reply.host == f"{ollama.url}/v1"
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0 and not reply.truncated
    # The server does not say how long it worked on it: the time here, queue and all.
    assert reply.latency_includes_queue
    (sent,) = ollama.requests
    assert sent["api"] == "openai" and sent["format"] == schema()
    assert llm.check() == {"reachable": True, "model_available": True, "model": ollama.model}


@pytest.mark.parametrize(
    ("mode", "outcome", "retryable", "status"),
    [("busy", "error", True, 503), ("error", "error", True, 500), ("missing", "error", False, 404)],
)
def test_server_failures_are_classified_as_for_ollama(ollama, mode, outcome, retryable, status):
    ollama.mode = mode
    with pytest.raises(LLMError) as failed:
        client(ollama).generate(MESSAGES, schema(), GENERATION)
    assert (failed.value.outcome, failed.value.retryable, failed.value.status_code) == (
        outcome,
        retryable,
        status,
    )


def test_a_timeout_a_refusal_and_a_reply_that_is_not_json(ollama):
    ollama.mode = "hang"
    with pytest.raises(LLMError) as hung:
        client(ollama, timeout=0.3).generate(MESSAGES, schema(), GENERATION)
    assert hung.value.outcome == "timeout"
    ollama.mode = "ok"
    refused = client(url=f"http://127.0.0.1:{free_port()}/v1", timeout=5)
    with pytest.raises(LLMError, match="cannot connect") as down:
        refused.generate(MESSAGES, schema(), GENERATION)
    assert down.value.retryable
    assert refused.check()["reachable"] is False
    ollama.reply = lambda body: "Sure! {title: oops"
    with pytest.raises(LLMError) as invalid:
        client(ollama).generate(MESSAGES, schema(), GENERATION)
    assert invalid.value.outcome == "invalid" and invalid.value.reply_text.startswith("Sure!")


def test_the_settings_pick_the_backend(ollama):
    openai = Settings.from_env(
        {"STORYAPP_LLM_BACKEND": "openai", "STORYAPP_LLM_URL": f"{ollama.url}/v1"}
    )
    made = llms.from_settings(openai)
    OPEN.append(made)
    assert isinstance(made, OpenAILLM)


@pytest.mark.backends
def test_the_sample_through_an_openai_server(tmp_path, ollama, backend):
    settings = make_settings(
        tmp_path,
        ollama.url,
        STORYAPP_LLM_BACKEND="openai",
        STORYAPP_LLM_URL=f"{ollama.url}/v1",
        **backend.env,
    )
    init(settings)
    app = create_app(settings)
    with running_consumer():
        job = ingest_and_generate(app.test_client())
    assert job["status"] == "succeeded" and job["error"] is None
    assert job["counts"]["llm"] > 20 and job["counts"]["fallback"] == 0
    assert {r.get("api") for r in ollama.requests} == {"openai"}
