"""`storyapp demo`: the bundled sample through the real path, queue and consumer included."""

import json
import logging
import signal
import sys
import textwrap
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import click

from storyapp import ingest, jobs, tasks
from storyapp.config import Settings
from storyapp.corpus import SAMPLE
from storyapp.db import transaction
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


def load_sample(path: Path = SAMPLE) -> tuple[ingest.IngestResult, int]:
    """Stores the sample with its times moved so the newest article is a minute old; a sample
    article stored before gets its time moved too, so the demo works on any day."""
    records = ingest.parse_text(path.read_text(encoding="utf-8"))
    newest = max(ingest.parse_datetime(r["published_at"]) for r in records)
    shift = utcnow() - timedelta(minutes=1) - newest
    for record in records:
        record["published_at"] = (ingest.parse_datetime(record["published_at"]) + shift).isoformat()
    result = ingest.store(records)
    with transaction():
        for record in records:
            Article.update(published_at=ingest.parse_datetime(record["published_at"])).where(
                Article.url == record["url"]
            ).execute()
    return result, len(records)


def run_demo(settings: Settings, out=sys.stdout) -> int:
    if not SAMPLE.exists():
        click.echo(f"storyapp: error: the sample is missing: {SAMPLE}", err=True)
        return 1
    # The one line below says why stories fall back; the worker's per-cluster warnings
    # would repeat it forty times.
    logging.getLogger("storyapp").setLevel(logging.ERROR)
    result, count = load_sample()

    def echo(line: str = "") -> None:
        click.echo(line, file=out)

    echo(f"Data in {settings.data_dir} (STORYAPP_DATA_DIR chooses another directory)")
    echo(f"Loaded {count} sample articles ({result.created} new) into {settings.database_url}")
    health = tasks.llm().check()
    hosts = ", ".join(settings.llm_urls)
    if not health["reachable"]:
        echo(
            f"Ollama is not reachable at {hosts}: every story will be written by the "
            "extractive fallback."
        )
    elif not health["model_available"]:
        echo(
            f"Ollama at {hosts} has no model {settings.model} (ollama pull {settings.model}): "
            "every story will be written by the extractive fallback."
        )
    job, created = tasks.start_job(24.0, False)
    consumer = huey.create_consumer(
        workers=settings.workers,
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
