"""Groups articles into clusters about one event each.

TF-IDF over title and summary (sublinear tf, English stop words, single words), cosine
similarity damped by the time between two articles, then average-linkage agglomeration over the
sparse graph of pairs above a floor. Only those pairs are ever held, so memory grows with the
number of similar pairs, not with n squared. Pairs below the floor count as similarity 0 in the
averages, which is what keeps one loosely related article from chaining two events together.
"""

import hashlib
import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

# Measured on data/sample (tests/test_clustering.py): B-cubed F1 0.990 at 0.10, at least 0.96
# from 0.05 to 0.13. Bigrams scored worse on it (0.89 at their best threshold with this
# floor): different outlets word the same event differently, and pairs of words rarely repeat.
MERGE_THRESHOLD = 0.10
# Pairs below this are dropped before agglomeration; it bounds memory, not the result.
EDGE_FLOOR = 0.04
# Similarity halves for every DECAY_HOURS between two articles.
DECAY_HOURS = 36.0
# Each article keeps its links to this many most similar others (see similar_pairs).
NEIGHBOURS = 20
# Similarities computed at once, at most: 20 million float32s, 80 MB.
BLOCK_CELLS = 20_000_000


@dataclass(frozen=True)
class Doc:
    text: str
    published_at: datetime


def cluster_key(content_hashes: Sequence[str]) -> str:
    """Same articles, same key, whatever order they come in."""
    return hashlib.sha256("\n".join(sorted(content_hashes)).encode()).hexdigest()


def cluster(docs: Sequence[Doc], threshold: float = MERGE_THRESHOLD) -> list[list[int]]:
    """Indexes into `docs`, grouped; the biggest cluster first, ties by first index."""
    n = len(docs)
    if n == 0:
        return []
    edges = similar_pairs(docs)
    groups = average_linkage(n, edges, threshold)
    return sorted((sorted(g) for g in groups), key=lambda g: (-len(g), g[0]))


def similar_pairs(docs: Sequence[Doc]) -> dict[tuple[int, int], float]:
    """{(i, j): similarity} for i < j, time-damped, above EDGE_FLOOR, and among the NEIGHBOURS
    most similar articles of i or of j. Without that cap, everyday words link most pairs of a
    large window weakly: 5 million pairs for 10,000 articles, where 20 each keep the result."""
    n = len(docs)
    neighbours = min(NEIGHBOURS, n - 1)
    if neighbours < 1:
        return {}
    try:
        vectors = TfidfVectorizer(
            sublinear_tf=True, stop_words="english", dtype=np.float32
        ).fit_transform([d.text for d in docs])
    except ValueError:
        return {}  # nothing but stop words: no article resembles another
    hours = np.array([d.published_at.timestamp() / 3600 for d in docs])
    hours = (hours - hours.min()).astype(np.float32)
    transposed = vectors.T.tocsc()
    pairs: dict[tuple[int, int], float] = {}
    # Everyday words make the products nearly dense: work on dense blocks of bounded size.
    rows_per_block = max(1, BLOCK_CELLS // n)
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        sims = (vectors[start:stop] @ transposed).toarray()
        sims *= np.exp2(-np.abs(hours[start:stop, None] - hours[None, :]) / DECAY_HOURS)
        sims[np.arange(stop - start), np.arange(start, stop)] = 0.0  # not its own neighbour
        best = np.argpartition(-sims, neighbours - 1, axis=1)[:, :neighbours]
        best_sims = np.take_along_axis(sims, best, axis=1).ravel()
        rows = np.repeat(np.arange(start, stop), neighbours)
        cols = best.ravel()
        keep = best_sims >= EDGE_FLOOR
        low = np.minimum(rows[keep], cols[keep]).tolist()
        high = np.maximum(rows[keep], cols[keep]).tolist()
        pairs.update(zip(zip(low, high, strict=True), best_sims[keep].tolist(), strict=True))
    return pairs


def average_linkage(
    n: int, edges: dict[tuple[int, int], float], threshold: float
) -> list[list[int]]:
    """Merges the pair of clusters with the highest average similarity until none is above
    `threshold`. Clusters are keyed by their smallest member, so the result is deterministic."""
    members = {i: [i] for i in range(n)}
    # links[a][b] = sum of pair similarities between clusters a and b
    links: dict[int, dict[int, float]] = {i: {} for i in range(n)}
    for (i, j), sim in edges.items():
        links[i][j] = sim
        links[j][i] = sim
    heap = [(-sim, i, j) for (i, j), sim in edges.items() if sim >= threshold]
    heapq.heapify(heap)
    while heap:
        neg_avg, a, b = heapq.heappop(heap)
        if a not in members or b not in members:
            continue  # one side was merged away since this entry was pushed
        current = links[a].get(b, 0.0) / (len(members[a]) * len(members[b]))
        if not math.isclose(-neg_avg, current):
            continue  # stale entry; the up-to-date one is in the heap too
        a, b = min(a, b), max(a, b)
        members[a].extend(members.pop(b))
        for other, total in links.pop(b).items():
            if other == a:
                continue
            del links[other][b]
            links[a][other] = links[a].get(other, 0.0) + total
            links[other][a] = links[a][other]
        del links[a][b]
        for other, total in links[a].items():
            avg = total / (len(members[a]) * len(members[other]))
            if avg >= threshold:
                heapq.heappush(heap, (-avg, min(a, other), max(a, other)))
    return list(members.values())
