"""`storyapp bench --clustering [FILE ...]`: how well articles are grouped into events. For each
labeled corpus, B-cubed precision, recall and F1 against its events, clusters against true
events, seconds and peak memory; the labeled JSONL files given, then the built-in corpora.

A labeled file has one JSON object a line: `text`, or `title` with optional `summary` and
`content`; `event` (any value: the true event); optional `published_at` (ISO 8601). Articles
without a time are spread over one day, the same way on every run. Each corpus is clustered in
a fresh process, so its peak memory is its own (imports included).
"""

import json
import multiprocessing
import random
import resource
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from storyapp import clustering
from storyapp.corpus import SAMPLE, big_event_day, same_kind_day, synthetic_corpus
from storyapp.ingest import parse_datetime

BIG_EVENT = "big-storm"


class LabeledFileError(ValueError):
    pass


def b_cubed(groups: Sequence[Sequence[int]], labels: Sequence) -> tuple[float, float, float]:
    """B-cubed precision, recall and F1 (Bagga and Baldwin), averaged over items: for each
    item, the share of its cluster that is of its event, and the share of its event that is in
    its cluster. Unlike NMI, it does not flatter a result split into many small clusters."""
    cluster_of = {i: group for group in groups for i in group}
    event_sizes: dict = defaultdict(int)
    for label in labels:
        event_sizes[label] += 1
    precision = recall = 0.0
    for i, label in enumerate(labels):
        same = sum(1 for j in cluster_of[i] if labels[j] == label)
        precision += same / len(cluster_of[i])
        recall += same / event_sizes[label]
    p, r = precision / len(labels), recall / len(labels)
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


def load_labeled(path: Path) -> tuple[list[dict], list]:
    """Articles (title, summary, content, published_at) and their events from a labeled file."""
    rng = random.Random(path.name)
    day_end = datetime(2026, 1, 2, tzinfo=UTC)
    articles, labels = [], []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or "event" not in record:
                    raise ValueError("an object with an `event` is expected")
                title = record.get("title") or ""
                summary = record.get("summary") or record.get("text") or ""
                if not isinstance(title, str) or not isinstance(summary, str):
                    raise ValueError("`title`, `summary` and `text` are strings")
                if not (title or summary):
                    raise ValueError("`text` or `title` is needed")
                content = record.get("content") or ""
                if not isinstance(content, str):
                    raise ValueError("`content` is a string")
                published = record.get("published_at")
                if published is None:
                    published = day_end - timedelta(hours=rng.uniform(0, 24))
                else:
                    published = parse_datetime(published)
            except ValueError as exc:
                raise LabeledFileError(f"{path}, line {number}: {exc}") from None
            articles.append(
                {"title": title, "summary": summary, "content": content, "published_at": published}
            )
            labels.append(record["event"])
    if not articles:
        raise LabeledFileError(f"{path}: no labeled article")
    return articles, labels


def builtin_corpora(now: datetime) -> dict[str, tuple[list[dict], list]]:
    """The corpora the clustering is held to (clustering.py's docstring), by name."""
    corpora = {}
    if SAMPLE.exists():
        records = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
        corpora["data/sample (164 articles, 40 events)"] = records
        corpora["data/sample, titles only"] = [{**r, "summary": "", "content": ""} for r in records]
    corpora["bench corpus (379 events)"] = synthetic_corpus(379, now=now)
    corpora["same-kind day (60 events of 10 kinds)"] = same_kind_day(now=now)
    corpora["same-kind day, 200 events of 12 kinds"] = same_kind_day(200, 12, now=now, seed=3)
    corpora["same-kind day, titles only"] = same_kind_day(now=now, form="title")
    corpora["same-kind day, lowercased, no punctuation"] = same_kind_day(now=now, form="lower")
    corpora["same-kind day, full articles with boilerplate"] = same_kind_day(now=now, form="full")
    corpora["one 500-article event among 60 small"] = big_event_day(now=now)
    corpora["one 500-article event, lowercased"] = big_event_day(now=now, form="lower")
    return {
        name: (
            [
                {
                    "title": r.get("title", ""),
                    "summary": r.get("summary", ""),
                    "content": r.get("content", ""),
                    "published_at": parse_datetime(r["published_at"]),
                }
                for r in records
            ],
            [r["event"] for r in records],
        )
        for name, records in corpora.items()
    }


def score(articles: list[dict], labels: list) -> dict:
    """Clusters the articles and scores the result; run in a fresh process for its memory."""
    docs = [
        clustering.Doc(a["title"], a["published_at"], a["summary"], a["content"]) for a in articles
    ]
    started = time.perf_counter()
    groups = clustering.cluster(docs)
    seconds = time.perf_counter() - started
    precision, recall, f1 = b_cubed(groups, labels)
    result = {
        "articles": len(docs),
        "events": len(set(labels)),
        "clusters": len(groups),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "seconds": seconds,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if BIG_EVENT in labels:
        size = labels.count(BIG_EVENT)
        held = max(sum(1 for i in g if labels[i] == BIG_EVENT) for g in groups)
        result["big_event"] = f"the 500-article event: {held} of {size} in one cluster"
    return result


def report(files: Sequence[Path], out, builtin: bool = True) -> None:
    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    corpora = {str(path): load_labeled(path) for path in files}
    if builtin:
        corpora.update(builtin_corpora(datetime.now(UTC).replace(tzinfo=None)))
    say("| corpus | articles | events | clusters | B-cubed P | R | F1 | seconds | peak MB |")
    say("|---|---|---|---|---|---|---|---|---|")
    notes = []
    context = multiprocessing.get_context("spawn")
    with context.Pool(1, maxtasksperchild=1) as pool:
        for name, (articles, labels) in corpora.items():
            r = pool.apply(score, (articles, labels))
            say(
                f"| {name} | {r['articles']} | {r['events']} | {r['clusters']} | "
                f"{r['precision']:.3f} | {r['recall']:.3f} | **{r['f1']:.3f}** | "
                f"{r['seconds']:.2f} | {r['peak_mb']:.0f} |"
            )
            if "big_event" in r:
                notes.append(f"{name}: {r['big_event']}.")
    if notes:
        say()
        for note in notes:
            say(f"- {note}")
