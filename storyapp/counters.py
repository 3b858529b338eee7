"""Prometheus counters and histograms, kept in the database (models.Counter) and added to in
the same transaction as the work they count.

Why the database rather than prometheus_client's multiprocess mode: the consumers that do the
work run on several machines and restart; multiprocess mode keeps each process's counts in
files on its own host, read only by a web process on that same host, and its directory must be
wiped at each deployment. Every worker writes to the database already, and a count added in
the transaction that settles a cluster is made exactly once: a settle rolled back (a task
delivered twice, a job cancelled) counts nothing. The rows survive restarts and retention,
which deletes call rows but not their counts, so `rate()` and `histogram_quantile()` work.

A histogram keeps one row per bucket with the observations that fell in it (not at or below
it), so an observation adds to one row; metrics.py sums them into Prometheus's cumulative
buckets.
"""

import json
import math
from collections import defaultdict

from storyapp.models import Counter

# LLM calls take from under a second (a GPU, a short story) to the 120 s default timeout and
# beyond (a CPU, a long reply); the bounds follow that range.
LLM_SECONDS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
# A job: seconds for a few clusters to hours for a backlog on one slow server.
JOB_SECONDS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
# An "error" call (refused connection, HTTP error) says nothing about how fast the model is:
# it is counted, not timed. A timeout is timed: it is the slow tail.
TIMED_OUTCOMES = ("ok", "invalid", "timeout")

CLUSTERS = "storyapp_clusters_total"
JOBS_ENDED = "storyapp_jobs_ended_total"
JOB_DURATION = "storyapp_job_duration_seconds"
LLM_CALLS = "storyapp_llm_calls_total"
LLM_TOKENS = "storyapp_llm_tokens_total"
LLM_DURATION = "storyapp_llm_call_duration_seconds"
STATEMENTS = "storyapp_grounding_statements_total"
HISTOGRAMS = {LLM_DURATION: LLM_SECONDS, JOB_DURATION: JOB_SECONDS}


class Counts:
    """Increments gathered for one transaction; `save()` adds them in one statement."""

    def __init__(self):
        self.increments: dict[tuple[str, str], float] = defaultdict(float)

    def add(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self.increments[name, labels_key(labels)] += amount

    def observe(self, name: str, value: float, **labels: str) -> None:
        bound = next((b for b in HISTOGRAMS[name] if value <= b), math.inf)
        self.add(f"{name}_bucket", le=repr(bound), **labels)
        self.add(f"{name}_sum", value, **labels)
        self.add(f"{name}_count", **labels)

    def llm_calls(self, model: str, calls) -> None:
        """The calls one cluster made (synthesis.CallRecord)."""
        for call in calls:
            server = {"model": model, "host": call.host}
            self.add(LLM_CALLS, outcome=call.outcome, **server)
            self.add(LLM_TOKENS, call.prompt_tokens or 0, kind="prompt", **server)
            self.add(LLM_TOKENS, call.completion_tokens or 0, kind="completion", **server)
            if call.outcome in TIMED_OUTCOMES:
                self.observe(LLM_DURATION, call.latency_ms / 1000, **server)

    def grounding(self, checked: int, dropped: int) -> None:
        self.add(STATEMENTS, checked, result="checked")
        self.add(STATEMENTS, dropped, result="dropped")

    def save(self) -> None:
        Counter.add(self.increments)


def labels_key(labels: dict[str, str]) -> str:
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def read() -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every series by name: [(labels, value)]."""
    found = defaultdict(list)
    for name, labels, value in Counter.select(Counter.name, Counter.labels, Counter.value).tuples():
        found[name].append((json.loads(labels), value))
    return found
