"""`storyapp bench`: how fast generation is, end to end, next to what the first version did and
next to the floor the LLM server allows. Everything runs here: a server with a set latency and
a set number of parallel slots that speaks Ollama's /api/chat, or with `backend="openai"`
OpenAI's /v1/chat/completions (the same fake, storyapp/fake_ollama.py, so both are held to one
floor), a synthetic corpus with a known number of
events, the real queue and a real `storyapp worker` process. It prints a Markdown report.
"""

import json
import math
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from storyapp import clustering, db, ingest, jobs, prompt, synthesis, tasks
from storyapp import llm as llms
from storyapp.config import Settings
from storyapp.corpus import SAMPLE, big_event_day, synthetic_corpus
from storyapp.db import database
from storyapp.fake_ollama import FakeOllama
from storyapp.migrations import migrate
from storyapp.models import Job, utcnow
from storyapp.story import ArticleText

ENDED = ("succeeded", "failed", "cancelled")


@dataclass
class Options:
    events: int = 379
    latency: float = 0.45
    jitter: float = 0.05
    slots: tuple[int, ...] = (1, 4, 8, 16)
    sizes: tuple[int, ...] = (1000, 10_000, 50_000)
    baseline: bool = True
    backend: str = "ollama"  # the API the server is spoken to in: ollama or openai


@dataclass
class Run:
    seconds: float
    calls: int
    job: dict


def report(options: Options, out=sys.stdout) -> None:
    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    now = utcnow()
    corpus = synthetic_corpus(options.events, now=now)
    say(
        f"Corpus: {len(corpus)} articles, {options.events} events of 2-5 articles; server "
        f"latency {options.latency} s ± {options.jitter} s; {os.cpu_count()} cores; "
        f"{API[options.backend]}."
    )
    say()
    say("## End to end: POST /stories/generate to the job's end")
    say()
    say("| run | slots | LLM calls | time (s) | floor (s) | time / floor | target (s) |")
    say("|---|---|---|---|---|---|---|")
    if options.baseline:
        with FakeOllama(latency=options.latency, jitter=options.jitter, slots=1) as server:
            seconds, calls = sequential_baseline(corpus, server, options.backend)
        floor = calls * options.latency
        say(
            f"| first version: one call after another | 1 | {calls} | {seconds:.1f} | "
            f"{floor:.1f} | {seconds / floor:.2f} | |"
        )
    warm = incremental = api = None
    for slots in options.slots:
        workers = max(8, slots)
        with Stack(options.latency, options.jitter, slots, workers, options.backend) as stack:
            stack.ingest(corpus)
            measure_api = slots == 8 or (api is None and slots == options.slots[-1])
            with stack.api_probe() if measure_api else nullcontext() as probe:
                run = stack.generate()
            if probe is not None:
                api = probe
            floor = math.ceil(run.calls / slots) * options.latency
            target = 1.15 * floor + 1
            say(
                f"| storyapp | {slots} | {run.calls} | {run.seconds:.1f} | {floor:.1f} | "
                f"{run.seconds / floor:.2f} | {target:.1f} |"
            )
            if slots == 8 or (warm is None and slots == options.slots[-1]):
                rerun_slots = slots
                warm = stack.generate()
                fresh = new_events(corpus, 0.05)
                stack.ingest(fresh)
                incremental = [(stack.generate(), fresh, "of new events")]
                added = follow_ups(corpus, 0.05)
                stack.ingest(added)
                incremental.append((stack.generate(), added, "to existing events"))
    say()
    if warm is not None:
        say(f"## Re-runs ({rerun_slots} slots)")
        say()
        say("| run | time (s) | LLM calls | counts |")
        say("|---|---|---|---|")
        say(f"| warm, nothing changed | {warm.seconds:.2f} | {warm.calls} | {warm.job['counts']} |")
        for run, added, what in incremental:
            events = len({r["event"] for r in added})
            say(
                f"| incremental, {len(added)} articles {what} added (5%, {events} events) | "
                f"{run.seconds:.2f} | {run.calls} | {run.job['counts']} |"
            )
        say()
    with Stack(0.0, 0.0, 16, workers=16, backend=options.backend) as stack:
        stack.ingest(corpus)
        run = stack.generate()
    say("## Queue overhead (zero-latency server, 16 slots, 16 worker threads)")
    say()
    say(
        f"{run.job['total']} clusters in {run.seconds:.2f} s: "
        f"**{run.job['total'] / run.seconds:.0f} clusters/s** (target above 200)."
    )
    say()
    if api is not None:
        say("## API latency while a job runs (in-process WSGI calls, worker in its own process)")
        say()
        say("| request | n | p50 (ms) | p99 (ms) |")
        say("|---|---|---|---|")
        for name, samples in api.items():
            p50, p99 = percentile(samples, 50), percentile(samples, 99)
            say(f"| {name} | {len(samples)} | {p50:.1f} | {p99:.1f} |")
        say()
    prompt_report(out)
    say()
    say("## Planning (each size in a fresh process)")
    say()
    say("| articles | clusters | cluster (s) | plan job (s) | peak RSS (MB) |")
    say("|---|---|---|---|---|")
    for size in options.sizes:
        result = in_fresh_process(measure_planning, size)
        plan = "-" if result["plan_s"] is None else f"{result['plan_s']:.2f}"
        say(
            f"| {size} | {result['clusters']} | {result['cluster_s']:.2f} | {plan} | "
            f"{result['peak_mb']:.0f} |"
        )


def sequential_baseline(
    corpus: list[dict], server: FakeOllama, backend: str = "ollama"
) -> tuple[float, int]:
    """The first version: cluster, then one blocking LLM call per cluster, in one thread."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(Path(tmp), server.url, slots=1, workers=1, backend=backend)
        fresh_database(settings)
        ingest.store(corpus)
        end = utcnow()
        plans = jobs.cluster_window(end - timedelta(hours=24), end)
        llm = llms.from_settings(settings)
        started = time.perf_counter()
        for plan in plans:
            if len(plan.article_ids) > 1:
                synthesis.synthesize(list(jobs.load_texts(plan.article_ids).values()), llm)
        seconds = time.perf_counter() - started
        llm.close()
        tasks.close()
    return seconds, calls_in(server, backend)


# The APIs the bench can speak to its server, as the report names them.
API = {
    "ollama": "Ollama's /api/chat",
    "openai": "OpenAI's /v1/chat/completions",
}


def calls_in(server: FakeOllama, backend: str, since: int = 0) -> int:
    """The requests the server took in the API of `backend`: a run that spoke another counts
    none."""
    return sum(r.get("api", "ollama") == backend for r in server.requests[since:])


def new_events(corpus: list[dict], fraction: float) -> list[dict]:
    """Articles of events the corpus does not have, about `fraction` of its size, published
    now (as a later fetch brings them)."""
    per_event = len(corpus) / len({r["event"] for r in corpus})
    count = max(1, round(len(corpus) * fraction / per_event))
    now = utcnow()
    return [
        {
            **record,
            "url": record["url"] + "/new",
            "event": "new " + record["event"],
            "published_at": now.isoformat() + "Z",
        }
        for record in synthetic_corpus(count, now=now, seed=8)
    ]


def follow_ups(corpus: list[dict], fraction: float) -> list[dict]:
    """New articles on existing events: a reworded copy of one article of each chosen event."""
    by_event: dict[str, dict] = {}
    for record in corpus:
        by_event.setdefault(record["event"], record)
    count = max(1, round(len(corpus) * fraction))
    chosen = list(by_event.values())[:: max(1, len(by_event) // count)][:count]
    now = utcnow()
    return [
        {
            **record,
            "url": record["url"] + "/follow-up",
            "title": " ".join(reversed(record["title"].split())).capitalize(),
            "summary": " ".join(reversed(record["summary"].split())).capitalize(),
            "published_at": now.isoformat() + "Z",
        }
        for record in chosen
    ]


def bench_env(
    data_dir: Path, server_url: str, slots: int, workers: int, backend: str = "ollama"
) -> dict[str, str]:
    """The settings of one run, as the environment the worker process is started with."""
    return {
        "STORYAPP_DATA_DIR": str(data_dir),
        "STORYAPP_LLM_BACKEND": backend,
        # The fake serves OpenAI's API under /v1, as Ollama and the OpenAI client have it.
        "STORYAPP_LLM_URL": f"{server_url}/v1" if backend == "openai" else server_url,
        "STORYAPP_LLM_CONCURRENCY": str(slots),
        "STORYAPP_WORKERS": str(workers),
        "STORYAPP_SCHEDULE": "off",
    }


def settings_for(
    data_dir: Path, server_url: str, slots: int, workers: int, backend: str = "ollama"
) -> Settings:
    return Settings.from_env(bench_env(data_dir, server_url, slots, workers, backend))


def fresh_database(settings: Settings) -> None:
    """Binds a run's own data directory and makes its tables, as `storyapp init` would."""
    tasks.configure(settings)
    migrate(db.bind(settings.database_url))


class Stack:
    """A fake LLM server, a fresh data directory, the API in process and a worker process."""

    def __init__(
        self, latency: float, jitter: float, slots: int, workers: int, backend: str = "ollama"
    ):
        self.server = FakeOllama(latency=latency, jitter=jitter, slots=max(slots, 1))
        self.slots, self.workers, self.backend = slots, workers, backend
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)

    def __enter__(self) -> "Stack":
        from storyapp.api import create_app

        self.server.start()
        run_env = bench_env(self.dir, self.server.url, self.slots, self.workers, self.backend)
        self.settings = Settings.from_env(run_env)
        fresh_database(self.settings)
        self.app = create_app(self.settings)
        self.client = self.app.test_client()
        env = {**os.environ, **run_env}
        self.log = open(self.dir / "worker.log", "w+")  # noqa: SIM115 (closed in __exit__)
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "storyapp.cli", "worker"],
            env=env,
            cwd=self.dir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while "Huey consumer started" not in (self.dir / "worker.log").read_text():
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start: {self.dir / 'worker.log'}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.worker.terminate()
        self.worker.wait(timeout=30)
        self.log.close()
        self.server.stop()
        tasks.close()
        self._tmp.cleanup()

    def ingest(self, records: list[dict]) -> None:
        response = self.client.post("/articles", json={"articles": records})
        assert response.status_code == 201, response.get_json()

    def generate(self) -> Run:
        calls_before = self.server.chat_count
        started = time.perf_counter()
        response = self.client.post("/stories/generate", json={"time_window_hours": 24})
        job_id = response.get_json()["job_id"]
        while (status := Job.select(Job.status).where(Job.id == job_id).scalar()) not in ENDED:
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        job = Job.get_by_id(job_id).to_dict()
        if status != "succeeded":
            raise RuntimeError(f"job {job_id} ended {status}: {job['error']}")
        return Run(seconds, calls_in(self.server, self.backend, calls_before), job)

    @contextmanager
    def api_probe(self):
        """Calls GET /jobs/<id> and POST /stories/generate (an equal job: deduplicated)
        every 10 ms while the block runs; yields {request: [ms, ...]}."""
        samples: dict[str, list[float]] = {"GET /jobs/<id>": [], "POST /stories/generate": []}
        stop = threading.Event()

        def probe():
            # Each request's teardown closes this thread's connection; queries reopen it.
            while not stop.is_set():
                job_id = Job.select(Job.id).order_by(Job.created_at.desc()).scalar()
                if job_id is None:
                    stop.wait(0.01)
                    continue
                for name, call in (
                    ("GET /jobs/<id>", lambda: self.client.get(f"/jobs/{job_id}")),  # noqa: B023
                    (
                        "POST /stories/generate",
                        lambda: self.client.post("/stories/generate", json={}),
                    ),
                ):
                    started = time.perf_counter()
                    call()
                    samples[name].append((time.perf_counter() - started) * 1000)
                stop.wait(0.01)
            database.close()

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        try:
            yield samples
        finally:
            stop.set()
            thread.join()


def percentile(samples: list[float], p: float) -> float:
    if len(samples) < 2:
        return samples[0] if samples else float("nan")
    return statistics.quantiles(samples, n=100, method="inclusive")[int(p) - 1]


def measure_planning(size: int) -> dict:
    """Clusters `size` articles, then plans a job over them from the database."""
    now = utcnow()
    corpus = synthetic_corpus(size // 3 + 1, now=now)[:size]
    docs = [
        clustering.Doc(r["title"], ingest.parse_datetime(r["published_at"]), r["summary"])
        for r in corpus
    ]
    started = time.perf_counter()
    groups = clustering.cluster(docs)
    cluster_s = time.perf_counter() - started
    plan_s = None
    if size <= PLAN_MAX:
        plan_s = plan_from_database(corpus)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"clusters": len(groups), "cluster_s": cluster_s, "plan_s": plan_s, "peak_mb": peak_mb}


# Planning from the database clusters again; past this size the clustering figure says it all.
PLAN_MAX = 10_000


def plan_from_database(corpus: list[dict]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        fresh_database(settings_for(Path(tmp), "http://127.0.0.1:9", slots=4, workers=8))
        ingest.store(corpus)
        job, _ = jobs.request_job(24, False)
        started = time.perf_counter()
        jobs.plan_job(job.id)
        plan_s = time.perf_counter() - started
        database.close()
    return plan_s


def in_fresh_process(function, *args):
    # Spawned, not forked: the peak memory is this measurement's alone.
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(function, args)


def prompt_report(out) -> None:
    """Prompt tokens per story and how much of each event the prompt shows, next to the
    first version's prompt (the twelve oldest articles of a cluster, whole), at about four
    characters a token: on the sample, and on the generated 500-article event."""

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    sample = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    say("## Prompts: tokens a story, and how much of its event the prompt shows")
    say()
    say("| corpus | prompt | stories | tokens (mean/max) | reply cap | latest shown | outlets |")
    say("|---|---|---|---|---|---|---|")
    for corpus, records, largest in (
        ("data/sample", sample, False),
        ("the 500-article event (in its day)", big_event_day(now=utcnow()), True),
    ):
        before, after = _prompts(records, largest)
        for name, rows, cap in (
            ("first version", before, 700),
            ("now", after, synthesis.GENERATION.reply_tokens),
        ):
            tokens = [r["chars"] / 4 for r in rows]
            latest = sum(r["latest"] for r in rows)
            outlets = sum(r["outlets"] for r in rows) / max(1, sum(r["all_outlets"] for r in rows))
            say(
                f"| {corpus} | {name} | {len(rows)} | {statistics.mean(tokens):.0f} / "
                f"{max(tokens):.0f} | {cap} | {latest} of {len(rows)} | {outlets:.0%} |"
            )


def _prompts(records: list[dict], largest: bool) -> tuple[list[dict], list[dict]]:
    """Each story of two or more articles (or only the largest), as the first version's
    prompt and today's show it."""
    texts = [
        ArticleText(
            r["title"],
            r.get("summary", ""),
            r.get("content", ""),
            r.get("source", ""),
            ingest.parse_datetime(r["published_at"]),
            r["url"],
        )
        for r in records
    ]
    docs = [clustering.Doc(t.title, t.published_at, t.summary, t.content) for t in texts]
    groups = [g for g in clustering.cluster(docs) if len(g) > 1]
    before, after = [], []
    for group in groups[:1] if largest else groups:
        articles = [texts[i] for i in group]
        first = _first_version_prompt(articles)
        request = prompt.build(articles)
        shown = [articles[i] for i in request.shown]
        before.append(_coverage(articles, first, _chars(_first_messages(first))))
        after.append(_coverage(articles, shown, _chars(request.messages)))
    return before, after


def _chars(messages: list[dict]) -> int:
    return sum(len(m["content"]) for m in messages)


def _first_version_prompt(articles: list) -> list:
    return sorted(articles, key=lambda a: (a.published_at, a.content_hash))[
        : prompt.PROMPT_MAX_ARTICLES
    ]


def _first_messages(chosen: list) -> list[dict]:
    # The first version's prompt: each article whole (title, summary, content), in a budget.
    per_article = max(prompt.ARTICLE_MIN_CHARS, prompt.PROMPT_BUDGET_CHARS // len(chosen))
    blocks = [
        (f"{a.title}\n{a.summary}\n\n{a.content}" if a.content else a.summary)[:per_article]
        for a in chosen
    ]
    return [
        {"role": "system", "content": prompt.SYSTEM_PROMPT},
        {"role": "user", "content": "\n\n".join(blocks)},
    ]


def _coverage(articles: list, shown: list, chars: int) -> dict:
    latest = max(articles, key=lambda a: a.published_at)
    return {
        "chars": chars,
        "latest": latest in shown,
        "outlets": len({a.source for a in shown}),
        "all_outlets": len({a.source for a in articles}),
    }
