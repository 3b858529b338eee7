"""Clustering, scored on generated corpora with known events (storyapp.corpus). Each floor is
a little under what the corpus measured when it was set (`storyapp bench --clustering` prints
the figures; BENCHMARKS.md keeps them): a change that costs more than noise fails."""

import random
from datetime import datetime, timedelta

import pytest
from conftest import sample_records

from storyapp.clusterbench import b_cubed
from storyapp.clustering import Doc, cluster, cluster_key
from storyapp.corpus import big_event_day, same_kind_day, synthetic_corpus
from storyapp.ingest import parse_datetime

T0 = datetime(2026, 11, 27, 6, 0)


def doc(title: str, minutes: int = 0, summary: str = "") -> Doc:
    return Doc(title, T0 + timedelta(minutes=minutes), summary)


def docs_of(records: list[dict]) -> list[Doc]:
    return [
        Doc(r["title"], parse_datetime(r["published_at"]), r["summary"], r.get("content", ""))
        for r in records
    ]


def f1_of(records: list[dict]) -> float:
    groups = cluster(docs_of(records))
    return b_cubed(groups, [r["event"] for r in records])[2]


def test_b_cubed_scores_the_obvious_cases():
    labels = ["a", "a", "b", "b"]
    assert b_cubed([[0, 1], [2, 3]], labels) == (1.0, 1.0, 1.0)
    assert b_cubed([[0, 1, 2, 3]], labels) == (0.5, 1.0, pytest.approx(2 / 3))
    assert b_cubed([[0], [1], [2], [3]], labels) == (1.0, 0.5, pytest.approx(2 / 3))


def test_related_articles_group_and_unrelated_stay_apart():
    docs = [
        doc("Earthquake of magnitude 6.1 strikes Eldham coast", 0, "Homes damaged in Eldham."),
        doc("Eldham earthquake: rescuers search damaged homes", 30, "The 6.1 quake hit the coast."),
        doc("Magnitude 6.1 quake shakes Eldham, homes damaged", 60, "Coastal towns hit."),
        doc("Central bank raises interest rates half a point", 10, "Inflation stays high."),
        doc("Interest rates up half a point as central bank fights inflation", 50),
        doc("Local bakery wins national sourdough award"),
    ]
    groups = cluster(docs)
    assert sorted(groups) == [[0, 1, 2], [3, 4], [5]]
    assert groups[0] == [0, 1, 2]  # biggest first


def test_time_apart_keeps_the_same_words_apart():
    same_day = [doc("Storm hits coast of Avonmere"), doc("Storm hits the Avonmere coast", 60)]
    weeks_apart = [
        doc("Storm hits coast of Avonmere"),
        doc("Storm hits the Avonmere coast", 60 * 24 * 30),
    ]
    assert cluster(same_day) == [[0, 1]]
    assert sorted(cluster(weeks_apart)) == [[0], [1]]


def test_clustering_is_deterministic_and_order_free():
    records = same_kind_day(20, 5, now=T0, seed=4)
    docs = docs_of(records)
    shuffled = list(range(len(docs)))
    random.Random(3).shuffle(shuffled)
    first = cluster(docs)
    again = cluster([docs[i] for i in shuffled])
    assert {frozenset(g) for g in first} == {frozenset(shuffled[i] for i in g) for g in again}
    assert cluster(docs) == first


def test_empty_and_stop_word_only_input():
    assert cluster([]) == []
    assert cluster([doc("the and of"), doc("a the")]) == [[0], [1]]


def test_cluster_key_is_stable_and_order_free():
    assert cluster_key(["b", "a"]) == cluster_key(["a", "b"])
    assert cluster_key(["a", "b"]) != cluster_key(["a", "b", "c"])
    assert len(cluster_key(["a"])) == 64


# Measured at the defaults over seeds 1-8 (BENCHMARKS.md): same-kind days 0.990-1.000; titles
# only 0.897-0.961; full articles with boilerplate 0.956-0.997; lowercased 0.666-0.782 (no
# names to tell two events of one kind apart: only the words' closeness is left).
@pytest.mark.parametrize(
    ("form", "floor"), [("summary", 0.97), ("title", 0.87), ("full", 0.93), ("lower", 0.62)]
)
@pytest.mark.parametrize("seed", [1, 2])
def test_same_kind_events_stay_apart(form, floor, seed):
    records = same_kind_day(60, 10, now=T0, seed=seed, form=form)
    assert f1_of(records) >= floor


def test_many_events_of_few_kinds_stay_apart():
    # 200 events of 12 kinds, 17 of each: measured 0.989.
    assert f1_of(same_kind_day(200, 12, now=T0, seed=3)) >= 0.96


@pytest.mark.parametrize(("form", "floor"), [("summary", 0.97), ("lower", 0.85)])
def test_a_500_article_event_is_one_cluster(form, floor):
    records = big_event_day(now=T0, seed=2, form=form)
    labels = [r["event"] for r in records]
    groups = cluster(docs_of(records))
    held = max(sum(labels[i] == "big-storm" for i in g) for g in groups)
    assert held >= 0.9 * labels.count("big-storm")  # measured: 500 of 500
    assert b_cubed(groups, labels)[2] >= floor  # measured 0.998 and 0.892


def test_boilerplate_does_not_glue_an_outlets_articles_together():
    records = same_kind_day(30, 10, now=T0, seed=6, form="full")
    texts = [r["content"] for r in records]
    assert all("Sign up for our newsletter" in t for t in texts)
    groups = cluster(docs_of(records))
    sources = {r["source"] for r in records}
    labels = [r["event"] for r in records]
    # No cluster is an outlet's articles of several events.
    assert all(len({labels[i] for i in g}) == 1 for g in groups if len(g) > 1)
    assert len(sources) > 1


def test_the_sample_scores_above_the_floor():
    records = sample_records()
    assert f1_of(records) >= 0.95  # measured 0.977


def test_the_bench_corpus_scores_above_the_floor():
    assert f1_of(synthetic_corpus(379, now=T0)) >= 0.98  # measured 1.000


def test_an_added_event_changes_no_other_cluster():
    before = same_kind_day(60, 10, now=T0, seed=8)
    added = [
        {**r, "url": r["url"] + "/new", "event": "new " + r["event"]}
        for r in same_kind_day(3, 10, now=T0, seed=9)
    ]
    # From scratch: the words' weights move with the new articles, the clusters do not.
    old = {frozenset(g) for g in cluster(docs_of(before))}
    after = cluster(docs_of(before + added))
    kept = {frozenset(i for i in g if i < len(before)) for g in after}
    assert old <= kept
    # Seeded with the first run's clusters, as jobs are: those stay exactly as they were.
    seeded = cluster(docs_of(before + added), seeds=[list(g) for g in old])
    assert old <= {frozenset(g) for g in seeded}


def test_seeds_take_in_new_articles_but_never_merge_or_split_among_themselves():
    docs = [
        doc("Storm Agnes hits Avonmere coast", 0),
        doc("Storm Agnes: Avonmere coast flooded", 30),
        doc("Avonmere storm Agnes cuts power", 40),
    ]
    # Two seeds of one event, apart from an earlier run: they stay apart...
    assert sorted(cluster(docs[:2], seeds=[[0], [1]])) == [[0], [1]]
    # ... until a new article joins one of them, and the two may then merge.
    assert cluster(docs, seeds=[[0], [1]]) == [[0, 1, 2]]
    # A seed is not split, whatever its articles say.
    odd = [doc("Storm Agnes hits Avonmere coast"), doc("Local bakery wins sourdough award")]
    assert cluster(odd, seeds=[[0, 1]]) == [[0, 1]]
    with pytest.raises(ValueError):
        cluster(odd, seeds=[[0], [0, 1]])
