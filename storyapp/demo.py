"""`storyapp demo`: the bundled sample through the real path, queue and consumer included.

With no LLM server configured and none answering at Ollama's default address, and the extra
`storyapp[local]` installed, the stories are written in this process by the small model the
package index carries (local_llm.py): the demo then says first how long that will take, from
the clusters the LLM will get and the model's speed on this box, timed by a warm-up.
"""

import dataclasses
import importlib.util
import json
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import click

from storyapp import ingest, jobs, prompt, synthesis, tasks
from storyapp.config import DEFAULT_MODELS, Settings
from storyapp.corpus import SAMPLE
from storyapp.db import transaction
from storyapp.llmhealth import no_model
from storyapp.models import Article, Story, utcnow
from storyapp.progress import describe_job, watch_job
from storyapp.queue import huey

# The demo's invented articles must not mix with real news under `storyapp serve`: they go to a
# directory of their own, kept so that a second run shows its stories reused. It is inside
# ./data, where the contract says the demo's SQLite files are, beside the real ones.
DEMO_DATA_DIR = "data/demo"
INTERRUPTED = 130


def demo_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment the demo's settings come from: STORYAPP_DATA_DIR is ./data/demo
    unless it is set."""
    return {**env, "STORYAPP_DATA_DIR": env.get("STORYAPP_DATA_DIR") or DEMO_DATA_DIR}


# What a story's reply runs to with the small model, to estimate the demo's time: 150-500
# tokens, 294 on average, over the 50 replies to the sample measured here (the short story).
REPLY_TOKENS = 300
SERVERS = {"ollama": "Ollama", "openai": "The OpenAI-compatible server"}


def no_server_configured(env: Mapping[str, str]) -> bool:
    """Whether the user left the LLM to the defaults: no backend, no server named."""
    names = ("STORYAPP_LLM_BACKEND", "STORYAPP_LLM_URL", "OLLAMA_HOST")
    return not any(env.get(name) for name in names)


def local_model_installed() -> bool:
    """Whether the extra `storyapp[local]` is here: llama.cpp's binding and the small model."""
    from storyapp.local_llm import LocalLLM

    if importlib.util.find_spec("llama_cpp") is None:
        return False
    return LocalLLM(DEFAULT_MODELS["local"], timeout=1).check_host()["model_available"]


def estimate(llm) -> str:
    """How long the in-process model will take on the last 24 hours' clusters: the prompts
    the clusters the LLM gets will send, at the speed a warm-up measures on this box."""
    end = utcnow()
    plans = [
        p for p in jobs.cluster_window(end - timedelta(hours=24), end) if len(p.article_ids) > 1
    ]
    # Stories the LLM wrote already are reused; the fallback's are written again.
    written = {
        s.cluster_key
        for s in Story.select(Story.cluster_key).where(
            Story.cluster_key.in_([p.key for p in plans]),
            Story.merged_into.is_null(),
            Story.generator != "fallback",
        )
    }
    requests = [
        prompt.build(list(jobs.load_texts(p.article_ids).values()), brief=llm.brief)
        for p in plans
        if p.key not in written
    ]
    if not requests:
        return "Every cluster has its LLM story already: nothing for the model to write."
    speed = llm.speed(requests[0].messages, requests[0].schema, synthesis.GENERATION)
    # The other prompts' tokens, from their length: the tokens a character of the first.
    chars = [sum(len(m["content"]) for m in r.messages) for r in requests]
    reads = [speed.prompt_tokens / chars[0] * c / speed.read_tps for c in chars]
    # Each request ends at the timeout at the latest. A reply the checks refuse is asked for
    # once more (synthesis.INVALID_ATTEMPTS): a small model's often are, so the likely time
    # runs from one request a story to two; a reply that loops to the cap is refused too.
    cap, timeout = synthesis.GENERATION.reply_tokens, llm.timeout
    once = sum(min(read + REPLY_TOKENS / speed.write_tps, timeout) for read in reads)
    attempts = synthesis.INVALID_ATTEMPTS
    worst = sum(attempts * min(read + cap / speed.write_tps, timeout) for read in reads)
    return (
        f"Expect {_duration(once)} to {_duration(attempts * once)} (up to {_duration(worst)} "
        "if the model loops): "
        f"{len(requests)} stories for the model, one at a time. This box reads a prompt at "
        f"{speed.read_tps:.0f} tokens/s and writes {speed.write_tps:.1f} tokens/s (timed just "
        f"now); a story runs to ~{REPLY_TOKENS} tokens, and a request stops at "
        f"{timeout:g} s (STORYAPP_LLM_TIMEOUT)."
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def load_sample(path: Path = SAMPLE) -> tuple[ingest.IngestResult, int]:
    """Stores the sample with its times moved so the newest article is a minute old; a sample
    article stored before gets its time moved too, so the demo works on any day."""
    records = ingest.parse_text(path.read_text(encoding="utf-8"))
    # An article without a time is stored as published now.
    dated = [r for r in records if isinstance(r, dict) and r.get("published_at")]
    newest = max((ingest.parse_datetime(r["published_at"]) for r in dated), default=utcnow())
    shift = utcnow() - timedelta(minutes=1) - newest
    for record in dated:
        record["published_at"] = (ingest.parse_datetime(record["published_at"]) + shift).isoformat()
    result = ingest.store(records)
    with transaction():
        for record in dated:
            Article.update(published_at=ingest.parse_datetime(record["published_at"])).where(
                Article.url == record["url"]
            ).execute()
    return result, len(records)


def run_demo(
    settings: Settings,
    out=sys.stdout,
    sample: Path = SAMPLE,
    env: Mapping[str, str] = os.environ,
) -> int:
    if not sample.exists():
        click.echo(f"storyapp: error: the sample is missing: {sample}", err=True)
        return 1
    # The one line below says why stories fall back; the worker's per-cluster warnings
    # would repeat it forty times.
    logging.getLogger("storyapp").setLevel(logging.ERROR)
    try:
        result, count = load_sample(sample)
    except (UnicodeDecodeError, ValueError) as exc:  # a file of the user's that is no sample
        click.echo(f"storyapp: error: {sample}: {exc}", err=True)
        return 1

    def echo(line: str = "") -> None:
        click.echo(line, file=out)

    echo(f"Data in {settings.data_dir} (STORYAPP_DATA_DIR chooses another directory)")
    echo(f"Loaded {count} sample articles ({result.created} new) into {settings.database_url}")
    health = tasks.llm().check()
    hosts = ", ".join(settings.llm_urls)
    if not health["reachable"] and no_server_configured(env) and local_model_installed():
        settings = dataclasses.replace(
            settings, llm_backend="local", llm_urls=(), model=DEFAULT_MODELS["local"]
        )
        tasks.configure(settings)
        health = tasks.llm().check()
        echo(
            f"No LLM server is configured and none answers at {hosts}: the stories are "
            f"written in this process by {settings.model} (llama.cpp), one at a time."
        )
    if settings.llm_backend == "local" and health["model_available"]:
        echo(estimate(tasks.llm()))
    elif settings.llm_backend == "local":
        echo(
            f"The model cannot be loaded here ({'; '.join(health.get('errors', []))}): every "
            "story will be written by the extractive fallback."
        )
    elif not health["reachable"]:
        echo(
            f"{SERVERS[settings.llm_backend]} is not reachable at {hosts}: every story will be "
            "written by the extractive fallback."
        )
    elif not health["model_available"]:
        echo(
            f"{SERVERS[settings.llm_backend]} at {hosts} "
            f"{no_model(settings.llm_backend, settings.model)}: every story will be written by "
            "the extractive fallback."
        )
    job, created = tasks.start_job(24.0, False)
    consumer = huey.create_consumer(
        # A model in this process writes one story at a time: more threads would only wait.
        workers=1 if settings.llm_backend == "local" else settings.workers,
        worker_type="thread",
        periodic=False,
        initial_delay=0.02,
        backoff=1.1,
        max_delay=0.2,
    )
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    consumer.start()
    # Huey's handlers only set flags that its run() loop reads, and the demo watches the job
    # instead: Ctrl-C and SIGTERM act as in any program again.
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    final = None
    try:
        final = watch_job(job["id"], poll_s=0.1)
    except KeyboardInterrupt:
        # Clusters not yet started are skipped; one in flight is rolled back when it ends,
        # as its job has (jobs.run_cluster): nothing is left running.
        jobs.cancel_job(job["id"])
        click.echo(f"storyapp: demo stopped: job {job['id']} cancelled", err=True)
        return INTERRUPTED
    finally:
        # After Ctrl-C without waiting for the clusters in flight: what they write is dropped.
        consumer.stop(graceful=final is not None)
    print_stories(final, echo)
    return 0 if final["status"] == "succeeded" else 1


def print_stories(job: dict, echo) -> None:
    # As GET /stories lists them: the most important first.
    stories = list(Story.listed().where(Story.updated_at >= utcnow() - timedelta(hours=24)))
    articles = Story.articles_of(stories)
    echo()
    for story in stories:
        sources = sorted({a.source for a in articles[story.id] if a.source})
        echo(f"## {story.text.title}")
        echo(f"   {story.article_count} article(s), {story.generator}; {', '.join(sources)}")
        for line in textwrap.wrap(story.text.public()["summary"], 96):
            echo(f"   {line}")
        echo()
    echo(describe_job(job))
    echo(f"{len(stories)} stories. Figures: {json.dumps(job['counts'])}")
