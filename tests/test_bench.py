"""The benchmark's machinery on a tiny corpus: it runs and counts right (figures, not timings,
are what BENCHMARKS.md is for)."""

import io

import pytest

from storyapp.bench import API, Options, follow_ups, new_events, report
from storyapp.corpus import synthetic_corpus
from storyapp.models import utcnow


def test_corpus_is_seeded_and_has_the_events_asked_for():
    now = utcnow()
    corpus = synthetic_corpus(10, now=now, singles=3)
    assert corpus == synthetic_corpus(10, now=now, singles=3)
    assert len({r["event"] for r in corpus}) == 13
    assert len({r["url"] for r in corpus}) == len(corpus)
    added = follow_ups(corpus, 0.1)
    assert len(added) == round(len(corpus) * 0.1)
    assert {r["event"] for r in added} <= {r["event"] for r in corpus}
    fresh = new_events(corpus, 0.1)
    assert not {r["event"] for r in fresh} & {r["event"] for r in corpus}
    assert not {r["url"] for r in fresh} & {r["url"] for r in corpus}


@pytest.mark.parametrize("backend", ["ollama", "openai"])
def test_bench_report_on_a_tiny_corpus(backend):
    out = io.StringIO()
    report(
        Options(
            events=16,
            latency=0.01,
            jitter=0.0,
            slots=(2,),
            sizes=(300,),
            baseline=True,
            backend=backend,
        ),
        out=out,
    )
    text = out.getvalue()
    rows = {
        line.split("|")[1].strip(): line.split("|")
        for line in text.splitlines()
        if line.startswith("| ")
    }
    assert API[backend] in text.splitlines()[0]
    # Calls are counted in the API asked for: a run that spoke the other would count none.
    assert rows["first version: one call after another"][3].strip() == "16"
    assert rows["storyapp"][3].strip() == "16"  # one LLM call per event
    assert rows["warm, nothing changed"][3].strip() == "0"
    # "incremental, 3 articles of new events added (5%, 1 events)": one call per new event,
    # and none for the stories that were there.
    name, fresh = next((n, r) for n, r in rows.items() if "new events" in n)
    assert int(fresh[3]) == int(name.split("%, ")[1].split()[0])
    # "incremental, 3 articles to existing events added (5%, 3 events)": each article joins
    # another event, one call each.
    name, follow = next((n, r) for n, r in rows.items() if "existing events" in n)
    assert int(follow[3]) == int(name.split()[1])
    assert "clusters/s" in text and "GET /jobs/<id>" in text
    assert rows["300"][2].strip() != ""  # planning figures for 300 articles
    prompts = [line for line in text.splitlines() if line.startswith("| data/sample |")]
    assert [line.split("|")[2].strip() for line in prompts] == ["first version", "now"]
