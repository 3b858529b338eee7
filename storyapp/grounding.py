"""Checks a story against the articles it cites, before it is stored.

A model writes fluent sentences whether or not the articles say them. Two kinds of check:

- **Sanity** (`sane`): a reply that fills fields with placeholders ("1", "]["), or copies the
  prompt's markup, is no story: it is refused whole, like a reply that breaks the schema.
- **Grounding** (`ground`): each statement is checked against the articles it cites: its
  numbers, its dates and its names (capitalised words and runs of them) must appear in them,
  and where a number's sentence can be found in an article, the statement's direction words
  ("rose", "fell") must not say the opposite of it. A statement that fails is dropped, never
  stored as fact; a timeline entry's date must be one an article states. So is a statement
  that says again what the title or an earlier statement said (small models copy the title
  into the summary and the summary into the key points): the story keeps what it says once,
  and a reply with no summary or key point of its own is refused.

Texts are compared lowercased, with digits' thousands separators removed, so "1,200" matches
"1200". What cannot be seen (a paraphrase, a number written in words) is not held against a
statement: the check is for what is plainly invented or reversed.
"""

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from storyapp.story import ArticleText, Development, StoryText

NUMBER = re.compile(r"\d+(?:\.\d+)?")
WORD = re.compile(r"[^\W\d_][\w'’-]*")
MONTHS = (
    "january february march april may june july august september october november december"
).split()
WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
WEEKDAY = re.compile(r"\b(" + "|".join(WEEKDAYS) + r")\b")
MONTHS_BY_PREFIX = {month[:3]: month for month in MONTHS}
_MONTH = "(?:" + "|".join(MONTHS_BY_PREFIX) + r")[a-z]*"
MONTH_DAY = re.compile(rf"\b({_MONTH})\.?\s+(\d{{1,2}})\b|\b(\d{{1,2}})\s+({_MONTH})\b")
# Words that point a number one way or the other; a statement saying one where its source
# sentence says only the other has reversed a fact.
UP = frozenset(
    "rose rise rises rising risen up increase increased increases increasing gain gained gains "
    "grew grow grows growing higher soared soar soars surged surge surges jumped jump jumps "
    "climbed climb climbs more above boosted boost".split()
)
DOWN = frozenset(
    "fell fall falls falling fallen down decrease decreased decreases decreasing loss lost "
    "lose loses shrank shrink shrinks lower plunged plunge plunges dropped drop drops "
    "slumped slump slumps declined decline declines less below cut cuts".split()
)
# Two statements sharing this share of their words (as sets) say the same thing: "holds" and
# "held" in a sentence of eight words.
SAME_STATEMENT = 0.75
# The prompt's own markup, which a model that copies the prompt writes into its fields.
MARKUP = re.compile(r"</?\s*article\b|\bpublished=|\bnumber=\"|\bsource=\"", re.IGNORECASE)
# Words that begin sentences and headlines without being names.
ORDINARY = frozenset(
    "the a an in on at of for and but or as by to from with after before over under this that "
    "these those it its he she they we i you his her their our there here when while what who "
    "why how where which mr mrs ms dr".split()
)


@dataclass
class Grounding:
    story: StoryText | None  # None when nothing of it stands
    checked: int
    dropped: int
    reasons: list[str]


def sane(story: StoryText) -> None:
    """Raises ValueError, in one line, for a reply that is no story whatever it cites."""
    texts = [s.text for s in story.summary] + [p.text for p in story.key_points]
    texts += [p.view for p in story.perspectives] + [d.event for d in story.timeline]
    for text in [story.title, *texts]:
        if MARKUP.search(text):
            raise ValueError(f"copies the prompt's markup: {text[:60]!r}")
    if not any(len(w) > 2 for w in WORD.findall(story.title)):
        raise ValueError(f"a placeholder, not a title: {story.title[:60]!r}")
    for text in texts:
        if len([w for w in WORD.findall(text) if len(w) > 1]) < 2:
            raise ValueError(f"a placeholder, not a sentence: {text[:60]!r}")


def ground(
    story: StoryText,
    articles: Sequence[ArticleText],
    shown: Sequence[int] | None = None,
    repeats_allowed: bool = False,
) -> Grounding:
    """The story with every statement its cited articles do not bear out dropped, and every
    statement that says again what it said unless `repeats_allowed`. A statement that one
    article of those `shown` (the writer read, default all) bears out where its own citations
    do not is cited to that article instead: models cite article 1 for everything. Sources are
    1-based positions in `articles`."""
    texts = [_source_text(a) for a in articles]
    readable = list(shown or range(1, len(articles) + 1))
    checked = dropped = 0
    reasons: list[str] = []
    said = [_statement_words(story.title)]  # what the story has said so far

    def problem(statement, text: str, sources: Sequence[int]) -> str | None:
        cited = [articles[s - 1] for s in sources]
        cited_texts = [texts[s - 1] for s in sources]
        found = unsupported(text, cited, cited_texts)
        if found is None and isinstance(statement, Development):
            found = _undated(statement, cited, cited_texts)
        return found

    def checked_statement(statement, text: str):
        nonlocal checked, dropped
        checked += 1
        words = _statement_words(text)
        repeat = not repeats_allowed and _repeated(words, said)
        why = repeat or problem(statement, text, statement.sources)
        if why and not repeat:
            # The article that shares most of its words first: the likeliest to state it.
            for source in sorted(
                readable, key=lambda s: -len(words & _words(_plain(texts[s - 1])))
            ):
                if problem(statement, text, [source]) is None:
                    statement, why = statement.model_copy(update={"sources": [source]}), None
                    break
        if why is None:
            said.append(words)
            return statement
        dropped += 1
        reasons.append(f"{why}: {text[:80]!r}")
        return None

    def kept(statements, text=lambda s: s.text) -> list:
        return [s for s in (checked_statement(s, text(s)) for s in statements) if s is not None]

    summary = kept(story.summary)
    points = kept(story.key_points)
    views = kept(story.perspectives, lambda p: f"{p.who}: {p.view}")
    timeline = kept(story.timeline, lambda d: d.event)
    quote = story.quote
    if quote is not None:
        checked += 1
        if _plain(quote.text) not in _plain(texts[quote.source - 1]):
            dropped += 1
            reasons.append(f"not a quote from article {quote.source}: {quote.text[:80]!r}")
            quote = None
    if not summary or not points:
        return Grounding(None, checked, dropped, reasons)
    kept = story.model_copy(
        update={
            "summary": summary,
            "key_points": points,
            "perspectives": views,
            "timeline": timeline,
            "quote": quote,
        }
    )
    return Grounding(
        StoryText.model_validate(kept.model_dump(mode="json")), checked, dropped, reasons
    )


def _repeated(words: frozenset[str], said: list[frozenset[str]]) -> str | None:
    for other in said:
        if len(words & other) >= SAME_STATEMENT * len(words | other):
            return "says again what the story said"
    return None


def _statement_words(text: str) -> frozenset[str]:
    return _words(_plain(text)) | _numbers(text)


def unsupported(text: str, cited: Sequence[ArticleText], cited_texts: Sequence[str]) -> str | None:
    """Why the cited articles do not bear the statement out, or None."""
    numbers = frozenset().union(*map(_numbers, cited_texts))
    for number in _numbers(text):
        if number not in numbers:
            return f"the number {number} is in none of its articles"
    words = frozenset().union(*(_words(_plain(t)) for t in cited_texts))
    for name in _names(text):
        if name not in words:
            return f"the name {name!r} is in none of its articles"
    dates = frozenset().union(*map(_month_days, cited_texts))
    for month, day in _month_days(text):
        if (month, day) not in dates:
            return f"the date {month} {day} is in none of its articles"
    weekdays = frozenset().union(*map(_weekdays, cited_texts))
    for weekday in _weekdays(text):
        if weekday not in weekdays:
            return f"{weekday} is in none of its articles"
    return _reversed(text, cited_texts)


def _undated(
    entry: Development, cited: Sequence[ArticleText], cited_texts: Sequence[str]
) -> str | None:
    """A timeline date must be one the articles state: written out, or the day an article was
    published, or a weekday an article names in the week before it was published."""
    day = entry.date
    source = " ".join(cited_texts)
    if day.isoformat() in source or (MONTHS[day.month - 1], str(day.day)) in _month_days(source):
        return None
    for article, text in zip(cited, cited_texts, strict=True):
        published = article.published_at.date()
        if day == published:
            return None
        if timedelta(0) < published - day <= timedelta(days=6) and WEEKDAYS[
            day.weekday()
        ] in _weekdays(text):
            return None
    return f"the date {day.isoformat()} is stated by none of its articles"


def _reversed(text: str, cited_texts: Sequence[str]) -> str | None:
    """A statement whose direction words say the opposite of the sentence its number comes
    from: where each has one quantity ("24 percent", not the 2 of "Selene-2") and one
    direction, so that it is clear what went which way."""
    way = _direction(text)
    quantities = _quantities(text)
    if way is None or len(quantities) != 1:
        return None
    (number,) = quantities
    for source in cited_texts:
        for sentence in re.split(r"(?<=[.!?])\s+", source):
            theirs = _direction(sentence)
            if _quantities(sentence) == {number} and theirs is not None and theirs != way:
                return f"says {number} went {way}; the article it comes from says {theirs}"
    return None


def _direction(text: str) -> str | None:
    words = set(_plain(text).split())
    up, down = bool(words & UP), bool(words & DOWN)
    return None if up == down else "up" if up else "down"


def _quantities(text: str) -> set[str]:
    # Numbers standing as amounts, not parts of names ("MVX-3", "Selene-2", "A4").
    return set(re.findall(r"(?<![\w-])\$?(\d+(?:\.\d+)?)(?![\w-])", _plain(text)))


def _source_text(article: ArticleText) -> str:
    return "\n".join(t for t in (article.title, article.summary, article.content) if t)


# The articles' texts are read once per story for every statement that cites them: what is
# derived from a text is kept for the next statement.
@functools.lru_cache(maxsize=512)
def _words(plain: str) -> frozenset[str]:
    """Every word a name can be found as: whole ("smith-jones", "o'brien"), without its
    possessive ("smith's", "players'"), and each part between hyphens and apostrophes."""
    words = set(WORD.findall(plain))
    words |= {_unpossessive(w) for w in words if "'" in w}  # most words have none to strip
    words |= set(re.findall(r"[^\W_]+", plain))
    return frozenset(words)


def _unpossessive(word: str) -> str:
    return word[:-2] if word.endswith("'s") else word[:-1] if word.endswith("'") else word


@functools.lru_cache(maxsize=512)
def _plain(text: str) -> str:
    return " ".join(re.sub(r"(?<=\d)[,](?=\d{3}\b)", "", text).lower().replace("’", "'").split())


@functools.lru_cache(maxsize=512)
def _numbers(text: str) -> frozenset[str]:
    # "1,200" and "1200" are one number (_plain); "4.25" stays a number of its own.
    return frozenset(NUMBER.findall(_plain(text)))


def _names(text: str) -> set[str]:
    """Capitalised words of the statement, lowercased: those not opening a sentence, and an
    opening one unless it is an ordinary word ("The", "After")."""
    names = set()
    for sentence in re.split(r"(?<=[.!?:;])\s+", text):
        words = WORD.findall(sentence)
        for position, word in enumerate(words):
            low = re.sub(r"['’]s?$", "", word.lower())
            if not word[0].isupper() or low in ORDINARY or low in MONTHS or low in WEEKDAYS:
                continue
            if position == 0 and len(words) > 1 and not words[1][0].isupper():
                continue  # a sentence's first word: a name only when a name follows
            names.add(low)
    return {n for n in names if len(n) > 1}


@functools.lru_cache(maxsize=512)
def _month_days(text: str) -> frozenset[tuple[str, str]]:
    """("november", "27") for "Nov. 27", "November 27" or "27 November"."""
    found = set()
    for match in MONTH_DAY.finditer(text.lower()):
        month = match.group(1) or match.group(4)
        found.add((MONTHS_BY_PREFIX[month[:3]], match.group(2) or match.group(3)))
    return frozenset(found)


@functools.lru_cache(maxsize=512)
def _weekdays(text: str) -> frozenset[str]:
    low = text.lower()
    return frozenset(WEEKDAY.findall(low))
