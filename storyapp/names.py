"""Finds the names in news text: the people, places and organisations that tell one event from
another of the same kind (two earthquakes, two fraud trials on one day).

A word is a name when the text capitalises it where no sentence starts. What counts is the whole
window's usage, not one article's: "Bank" in "Reserve Bank" is a name there, but a window that
also says "the central bank" does not make every "Bank" one. So a single capitalised word is a
name when it is capitalised in most of its mid-sentence uses across the documents; two or more
capitalised words in a row ("Reserve Bank", "Maria Okafor") are a name wherever they stand.
Headlines in Title Case and shouted lines say nothing about case, so in them only words known as
names from elsewhere count; a sentence's first word counts only if it is known as a name too.

Text with no capital letters at all (lowercased feeds, the GoogleNews-TS set) gives no names,
and clustering then relies on words alone: nothing here guesses.
"""

import re
from collections import Counter
from collections.abc import Iterable, Sequence

# Capitalised everywhere in English, and shared by unrelated events of one day.
CALENDAR = frozenset(
    "monday tuesday wednesday thursday friday saturday sunday january february march april "
    "may june july august september october november december".split()
)
# A single word is a name when at least this share of its mid-sentence uses are capitalised.
NAME_SHARE = 0.8

_WORD = re.compile(r"[^\W\d_][\w'’.-]*[^\W_]|[^\W\d_]")
# A sentence ends at ., !, ? or ; before a space, and at a dash or bar between a headline's parts.
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\s+[-–—|]\s+|\n+")


def sentences_of(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _capitalised(word: str) -> bool:
    return word[0].isupper()


def _title_case(words: Sequence[str]) -> bool:
    """A headline in Title Case, or a line in capitals: case says nothing about names in it."""
    long = [w for w in words if len(w) > 3]
    return len(long) >= 3 and sum(map(_capitalised, long)) >= 0.7 * len(long)


def _normal(word: str) -> str:
    word = word.lower().rstrip(".")
    for suffix in ("'s", "’s"):
        word = word.removesuffix(suffix)
    return word


def find_names(texts: Sequence[str]) -> list[set[str]]:
    """Each text's names, lowercased (calendar words left out)."""
    # Text without a capital letter names nothing (and most of a lowercased feed is that).
    parsed = [
        [(words, _title_case(words)) for words in map(_WORD.findall, sentences_of(t))]
        if t != t.lower()
        else []
        for t in texts
    ]
    capital, lower = Counter(), Counter()
    for text in parsed:
        for words, title in text:
            if title:
                continue
            for word in words[1:]:
                (capital if _capitalised(word) else lower)[_normal(word)] += 1

    def known(name: str) -> bool:
        return capital[name] > 0 and capital[name] >= NAME_SHARE * (capital[name] + lower[name])

    return [_names_of(text, known) - CALENDAR for text in parsed]


def _names_of(text: Iterable[tuple[list[str], bool]], known) -> set[str]:
    found: set[str] = set()
    for words, title in text:
        if title:
            found.update(n for n in map(_normal, words) if known(n))
            continue
        run: list[tuple[int, str]] = []
        for position, word in enumerate([*words, ""]):
            if word and _capitalised(word):
                run.append((position, _normal(word)))
                continue
            names = [name for _, name in run]
            if run and run[0][0] == 0 and not known(names[0]):
                names = names[1:]  # "Scientists discover ...": capitalised for the sentence
            if len(names) > 1:
                found.update(names)
            elif names and known(names[0]):
                found.add(names[0])
            run = []
    return {name for name in found if len(name) > 1}
