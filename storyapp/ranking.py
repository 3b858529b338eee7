"""How important a story is: how broadly and how much it is reported, and how recently.

    weight     = outlets + log2(articles)
    importance = weight × 2^(−hours since its latest article / HALF_LIFE_H)

Breadth counts most: ten outlets reporting an event say more than one outlet's ten updates,
so each outlet adds one and the articles only their logarithm (a live blog of 32 posts adds 5).
Recency halves a story's weight every HALF_LIFE_H hours after its latest article: yesterday's
storm, at a quarter of its weight, sinks under today's smaller news, and a new report lifts a
story again.

Exponential decay takes the same share from every story in an hour, so it never changes the
order of two stories: only the clock's reading of their importance. The order is then a
number fixed when a story is written, `rank` = log2(weight) + (latest article, in hours) /
HALF_LIFE_H, which both engines sort by the same index with no date arithmetic; the importance
shown is 2^(rank − now in hours / HALF_LIFE_H), the same formula read at `now`.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from storyapp.story import ArticleText

HALF_LIFE_H = 12.0
EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class Reach:
    """What a story's ranking rests on, fixed while its articles stay the same."""

    sources: int  # distinct outlets
    first_seen: datetime
    last_seen: datetime
    rank: float


def reach(articles: Sequence[ArticleText], now: datetime) -> Reach:
    published = [a.published_at for a in articles]
    sources = outlets(a.source for a in articles)
    first_seen, last_seen = min(published), max(published)
    # An article dated ahead of the clock counts as news of now, not of its date: it must not
    # pin its story to the top for days.
    return Reach(
        sources, first_seen, last_seen, rank_of(sources, len(articles), min(last_seen, now))
    )


def outlets(names) -> int:
    # "Coast Wire" and "coast  wire" are one outlet; an article without one names none.
    return len({" ".join(name.split()).casefold() for name in names} - {""})


def rank_of(sources: int, articles: int, last_seen: datetime) -> float:
    # A story whose articles name no outlet still came from one.
    weight = max(sources, 1) + math.log2(max(articles, 1))
    return math.log2(weight) + _hours(last_seen) / HALF_LIFE_H


def importance(rank: float, now: datetime) -> float:
    """The story's weight as of `now`, from the rank stored with it."""
    return round(2 ** (rank - _hours(now) / HALF_LIFE_H), 3)


def _hours(moment: datetime) -> float:
    return (moment - EPOCH).total_seconds() / 3600
