"""Synthetic news for the benchmark: a known number of events, each covered by a few articles
that share the event's names and differ in their other words, over a Zipf-like vocabulary of
everyday news words, as real coverage does. Seeded: the same arguments give the same corpus."""

import random
from datetime import datetime, timedelta

CONSONANTS = "bcdfghklmnprstvz"
VOWELS = "aeiou"
# Everyday news vocabulary, shared by all events. Drawn with Zipf-like weights, so a few words
# appear in many articles and most in few, which is what makes similarity matrices sparse or not.
COMMON = (
    "officials announced report week government police residents company statement minister "
    "council city region country market prices workers families hospital school court judge "
    "investigation plans budget talks agreement deal support funding project services public "
    "local national international leaders spokesperson department agency board members group "
    "community security emergency crews damage roads homes power water weather season record "
    "growth shares investors profits sales customers data systems network users technology "
    "research scientists study results patients health care doctors staff union strike pay "
    "election vote campaign party candidates results count parliament law rules policy tax "
    "energy prices fuel costs climate environment river coast storm rain flood fire match team "
    "players coach season league final goal win loss fans stadium festival film music artists "
    "museum exhibition visitors tourism travel airport flights rail trains bus traffic bridge"
).split()


def pseudo_word(rng: random.Random) -> str:
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(3)).capitalize()


def synthetic_corpus(
    events: int,
    *,
    now: datetime,
    seed: int = 7,
    articles_per_event: tuple[int, ...] = (2, 3, 3, 4, 5),
    singles: int = 0,
    hours: float = 22.0,
) -> list[dict]:
    """`events` events of several articles each, plus `singles` one-article events; every
    article published within the last `hours` hours before `now`."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(COMMON))]
    records = []
    sizes = [rng.choice(articles_per_event) for _ in range(events)] + [1] * singles
    for event, size in enumerate(sizes):
        names = [pseudo_word(rng) for _ in range(6)]
        start = now - timedelta(hours=rng.uniform(1.0, hours))
        for n in range(size):
            # Headlines are mostly the event's own names; summaries mix in everyday words.
            title = rng.sample(names, 4) + rng.choices(COMMON, weights, k=3)
            summary = rng.sample(names, 5) + rng.choices(COMMON, weights, k=12)
            body = [
                " ".join(rng.sample(names, 2) + rng.choices(COMMON, weights, k=10)) + "."
                for _ in range(8)
            ]
            records.append(
                {
                    "url": f"https://bench.example/{seed}/{event}/{n}",
                    "title": " ".join(rng.sample(title, len(title))).capitalize(),
                    "summary": " ".join(rng.sample(summary, len(summary))).capitalize() + ".",
                    "content": " ".join(body),
                    "source": f"Source {rng.randrange(12)}",
                    "published_at": (start + timedelta(minutes=40 * n)).isoformat() + "Z",
                    "event": f"event-{event}",
                }
            )
    return records
