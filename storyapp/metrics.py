"""The figures that tell whether generation is healthy, for GET /stats (JSON) and GET /metrics
(Prometheus text), computed from the database on each request.

The web process and the consumer are separate processes, possibly on separate machines: only the
database sees every job, cluster and LLM call, so the figures come from there and not from
counters in one process's memory.

/stats: apart from jobs by status and the queue, the figures cover a sliding window (`WINDOW`,
the last 24 hours: rows created since then), so one bad hour shows instead of vanishing into
all-time totals, and every query reads a bounded, indexed slice of its table. Percentiles are
taken from at most the newest `SAMPLE_ROWS` rows of the window, nearest-rank.

/metrics: the state as gauges (jobs by status, the queue, the live workers) and the counters
and histograms counters.py keeps, which only go up: Prometheus makes its own windows."""

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import fn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from storyapp import counters, heartbeat
from storyapp.models import Job, JobCluster, LLMCall, Story, isoformat, utcnow

PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_LATEST
WINDOW = timedelta(hours=24)
SAMPLE_ROWS = 10_000
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
CALL_OUTCOMES = ("ok", "timeout", "error", "invalid")
CLUSTER_OUTCOMES = ("llm", "cached", "fallback", "reused", "single", "failed")
TIMED_OUTCOMES = counters.TIMED_OUTCOMES


def collect(queued_tasks: int | None = None, now: datetime | None = None) -> dict:
    """Every figure, as plain data. `queued_tasks` comes from the queue, which this module does
    not know (None: unknown)."""
    now = now or utcnow()
    since = now - WINDOW
    calls = _llm_calls(since)
    return {
        "window_hours": WINDOW.total_seconds() / 3600,
        "jobs": _jobs_by_status(),
        "queue": {"tasks": queued_tasks, "clusters_pending": _clusters_pending()},
        "generation": _generation(since, calls["per_story_s"]),
        "clusters": _clusters(since),
        "grounding": _grounding(since),
        "llm": calls["llm"],
        "workers": _workers(now),
        "web_process": heartbeat.process_figures(),
    }


def percentiles(values: list[float]) -> dict[str, float] | None:
    """Nearest rank: p95 is the smallest value with at least 95% of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return {
        name: round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)
        for name, q in QUANTILES.items()
    }


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _jobs_by_status() -> dict[str, int]:
    counts = dict.fromkeys(Job.STATUSES, 0)
    for status, count in Job.select(Job.status, fn.COUNT(Job.id)).group_by(Job.status).tuples():
        counts[status] = count
    return counts


def _clusters_pending() -> int:
    return (
        JobCluster.select()
        .join(Job)
        .where(JobCluster.status == "pending", Job.status == "running")
        .count()
    )


def _generation(since: datetime, per_story_s: list[float]) -> dict:
    ended = list(
        Job.select(Job.started_at, Job.finished_at)
        .where(
            Job.created_at >= since,
            Job.started_at.is_null(False),
            Job.finished_at.is_null(False),
        )
        .order_by(Job.finished_at.desc(), Job.id)
        .limit(SAMPLE_ROWS)
        .tuples()
    )
    durations = [(finished - started).total_seconds() for started, finished in ended]
    return {
        "jobs_ended": len(durations),
        "last_duration_s": round(durations[0], 3) if durations else None,
        "duration_s": percentiles(durations),
        "stories_timed": len(per_story_s),
        "per_story_s": percentiles(per_story_s),
    }


def _clusters(since: datetime) -> dict:
    fields = [getattr(Job, name) for name in CLUSTER_OUTCOMES]
    sums = (
        Job.select(*[fn.COALESCE(fn.SUM(f), 0) for f in fields])
        .where(Job.created_at >= since)
        .tuples()
        .first()
    )
    counts = dict(zip(CLUSTER_OUTCOMES, (int(s) for s in sums), strict=True))
    return {
        "by_outcome": counts,
        # Of the clusters that needed a written story, the share the cache gave at no cost.
        "cache_hit_rate": _ratio(
            counts["cached"], counts["cached"] + counts["llm"] + counts["fallback"]
        ),
        # Of the clusters sent to the LLM, the share it did not write.
        "fallback_rate": _ratio(counts["fallback"], counts["llm"] + counts["fallback"]),
    }


def _grounding(since: datetime) -> dict:
    """How much of what was written held up against its articles (grounding.py): statements
    checked and dropped in the stories written in the window (their latest version each)."""
    checked = dropped = 0
    query = Story.select(Story.content).where(Story.updated_at >= since).limit(SAMPLE_ROWS)
    for (content,) in query.tuples():
        figures = content.get("grounding", {})
        checked += figures.get("checked", 0)
        dropped += figures.get("dropped", 0)
    return {"checked": checked, "dropped": dropped, "dropped_rate": _ratio(dropped, checked)}


def _llm_calls(since: datetime) -> dict:
    in_window = LLMCall.created_at >= since
    servers: dict[tuple[str, str], dict] = {}

    def server(model: str, host: str) -> dict:
        if (model, host) not in servers:
            servers[model, host] = {
                "model": model,
                "host": host,
                "calls": dict.fromkeys(CALL_OUTCOMES, 0),
                "tokens": {"prompt": 0, "completion": 0},
                # Time the server spent on our requests: with tokens, what generation costs.
                "busy_s": 0.0,
                "latency_s": None,
                "calls_timed": 0,
            }
        return servers[model, host]

    for model, host, outcome, count, busy_ms, prompt, completion in (
        LLMCall.select(
            LLMCall.model,
            LLMCall.host,
            LLMCall.outcome,
            fn.COUNT(LLMCall.id),
            fn.SUM(LLMCall.latency_ms),
            fn.COALESCE(fn.SUM(LLMCall.prompt_tokens), 0),
            fn.COALESCE(fn.SUM(LLMCall.completion_tokens), 0),
        )
        .where(in_window)
        .group_by(LLMCall.model, LLMCall.host, LLMCall.outcome)
        .tuples()
    ):
        entry = server(model, host)
        entry["calls"][outcome] = count
        entry["busy_s"] = round(entry["busy_s"] + busy_ms / 1000, 3)
        entry["tokens"]["prompt"] += int(prompt)
        entry["tokens"]["completion"] += int(completion)

    latencies = defaultdict(list)
    per_story = defaultdict(float)
    for model, host, outcome, latency_ms, job_id, cluster_key in (
        LLMCall.select(
            LLMCall.model,
            LLMCall.host,
            LLMCall.outcome,
            LLMCall.latency_ms,
            LLMCall.job,
            LLMCall.cluster_key,
        )
        .where(in_window)
        .order_by(LLMCall.id.desc())
        .limit(SAMPLE_ROWS)
        .tuples()
    ):
        if outcome in TIMED_OUTCOMES:
            latencies[model, host].append(latency_ms / 1000)
        # A story's LLM time is every attempt it took, errors and retries included.
        per_story[job_id, cluster_key] += latency_ms / 1000
    for key, values in latencies.items():
        server(*key).update(latency_s=percentiles(values), calls_timed=len(values))

    calls = dict.fromkeys(CALL_OUTCOMES, 0)
    tokens = {"prompt": 0, "completion": 0}
    for entry in servers.values():
        for outcome, count in entry["calls"].items():
            calls[outcome] = calls.get(outcome, 0) + count
        for kind in tokens:
            tokens[kind] += entry["tokens"][kind]
    return {
        "llm": {
            "calls": calls,
            "timeout_rate": _ratio(calls["timeout"], sum(calls.values())),
            "tokens": tokens,
            "servers": sorted(servers.values(), key=lambda s: (s["model"], s["host"])),
        },
        "per_story_s": list(per_story.values()),
    }


def _workers(now: datetime) -> dict:
    """The live consumers, with the figures each sent with its heartbeat: a process can read
    only its own CPU and memory, so each worker writes its own."""
    processes = [
        {
            "id": w.id,
            "host": w.host,
            "pid": w.pid,
            "started_at": isoformat(w.started_at),
            "heartbeat_at": isoformat(w.heartbeat_at),
            "cpu_s": w.cpu_s,
            "resident_memory_bytes": w.resident_memory_bytes,
        }
        for w in heartbeat.alive(now)
    ]
    return {"alive": len(processes), "processes": processes}


# --- Prometheus ----------------------------------------------------------------------------


def prometheus_text(stats: dict) -> bytes:
    """The state of `stats` as gauges, and the counters and histograms of counters.py; the
    windowed figures of `stats` stay in /stats: Prometheus makes its own windows with rate()
    and histogram_quantile()."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Figures(stats, counters.read()))
    return generate_latest(registry)


@dataclass(frozen=True)
class CounterDoc:
    help: str
    labels: tuple[str, ...]
    known: tuple[str, ...]  # the values of the last label, known in advance


COUNTER_DOCS = {
    counters.CLUSTERS: CounterDoc("Clusters settled, by outcome.", ("outcome",), CLUSTER_OUTCOMES),
    counters.JOBS_ENDED: CounterDoc("Jobs ended, by status.", ("status",), Job.ENDED),
    counters.LLM_CALLS: CounterDoc(
        "LLM calls, by model, host and outcome.", ("model", "host", "outcome"), CALL_OUTCOMES
    ),
    counters.LLM_TOKENS: CounterDoc(
        "Tokens sent (prompt) and received (completion), by model and host.",
        ("model", "host", "kind"),
        ("prompt", "completion"),
    ),
    counters.STATEMENTS: CounterDoc(
        "Statements of the stories written, checked against the articles they cite, and of "
        "those the ones dropped: not borne out, or saying again what the story said.",
        ("result",),
        ("checked", "dropped"),
    ),
}
HISTOGRAM_DOCS = {
    counters.LLM_DURATION: "LLM call latency, by model and host (errors are counted, not timed).",
    counters.JOB_DURATION: "Duration of the jobs that ran to their end.",
}


class _Figures:
    """A collector over one `collect()` result (the current state, as gauges) and the stored
    counters."""

    def __init__(self, stats: dict, series: dict[str, list[tuple[dict, float]]]):
        self.stats = stats
        self.series = series

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield _gauge(
            "storyapp_jobs",
            "Jobs in the database by status (retention deletes ended ones).",
            [((status,), n) for status, n in s["jobs"].items()],
            ["status"],
        )
        if s["queue"]["tasks"] is not None:
            yield _gauge(
                "storyapp_queue_tasks", "Tasks waiting in the queue.", [((), s["queue"]["tasks"])]
            )
        yield _gauge(
            "storyapp_clusters_pending",
            "Clusters of running jobs not settled yet.",
            [((), s["queue"]["clusters_pending"])],
        )
        if s["generation"]["last_duration_s"] is not None:
            yield _gauge(
                "storyapp_last_job_duration_seconds",
                "Duration of the job that ended last.",
                [((), s["generation"]["last_duration_s"])],
            )
        for name, doc in COUNTER_DOCS.items():
            yield self._counter(name, doc)
        for name, doc in HISTOGRAM_DOCS.items():
            yield self._histogram(name, doc)
        workers = s["workers"]
        yield _gauge(
            "storyapp_workers_alive",
            f"Worker processes with a heartbeat in the last {heartbeat.DEAD_AFTER_S:g} s.",
            [((), workers["alive"])],
        )
        # Summed per host: a worker's own id names its process, and each restart would start
        # new series.
        for name, key, doc in (
            ("storyapp_worker_cpu_seconds", "cpu_s", "CPU time"),
            ("storyapp_worker_resident_memory_bytes", "resident_memory_bytes", "Resident memory"),
        ):
            per_host = defaultdict(float)
            for w in workers["processes"]:
                if w[key] is not None:
                    per_host[w["host"]] += w[key]
            yield _gauge(
                name,
                f"{doc} of the live worker processes of each host, as of their last heartbeats.",
                [((host,), value) for host, value in sorted(per_host.items())],
                ["host"],
            )
        yield from ProcessCollector(registry=None).collect()

    def _counter(self, name: str, doc: CounterDoc) -> Metric:
        others = doc.labels[:-1]
        found = {tuple(labels[n] for n in doc.labels): value for labels, value in self.series[name]}
        # Every known value of the last label is there at 0 beside the others of its series
        # (the same model and host, say; from the start when there is no other label): rate()
        # and an alert on, say, timeouts need a sample before the first increment.
        seen = {key[:-1] for key in found} if others else {()}
        for prefix in seen:
            for value in doc.known:
                found.setdefault((*prefix, value), 0.0)
        family = CounterMetricFamily(name.removesuffix("_total"), doc.help, labels=doc.labels)
        for key, value in sorted(found.items()):
            family.add_metric(list(key), value)
        return family

    def _histogram(self, name: str, doc: str) -> Metric:
        def by_series(suffix: str) -> dict[tuple, list[tuple[dict, float]]]:
            grouped = defaultdict(list)
            for labels, value in self.series[f"{name}{suffix}"]:
                rest = {k: v for k, v in labels.items() if k != "le"}
                grouped[tuple(sorted(rest.items()))].append((labels, value))
            return grouped

        buckets, sums = by_series("_bucket"), by_series("_sum")
        names = sorted({label for key in buckets for label, _ in key})
        family = HistogramMetricFamily(name, doc, labels=names)
        bounds = [*counters.HISTOGRAMS[name], math.inf]
        for key, rows in sorted(buckets.items()):
            in_bucket = defaultdict(float)
            for labels, value in rows:
                in_bucket[float(labels["le"])] += value
            cumulative, total = [], 0.0
            for bound in bounds:
                total += in_bucket[bound]
                cumulative.append((floatToGoString(bound), total))
            labels = dict(key)
            family.add_metric(
                [labels[n] for n in names],
                cumulative,
                sum_value=sum(value for _, value in sums.get(key, [])),
            )
        return family


def _gauge(name: str, doc: str, samples: list, labels: list[str] | None = None):
    family = GaugeMetricFamily(name, doc, labels=labels or [])
    for label_values, value in samples:
        family.add_metric(list(label_values), value)
    return family
