"""The extractive fallback: a story made of the articles' own headlines and sentences, when the
LLM cannot write one, and the one-article story that needs no LLM at all."""

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from storyapp.story import (
    SENTENCE_MAX,
    SUMMARY_SENTENCES,
    TITLE_MAX,
    ArticleText,
    Cited,
    StoryText,
    trim,
)

# A sentence ends at a full stop (or ! or ?), after any closing quote or bracket, which it keeps.
SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)\]]))\s+(?=[A-Z0-9\"'“‘(\[])")


def extractive_story(articles: Sequence[ArticleText]) -> StoryText:
    """Title from the most central headline that reports what happened; summary and key points
    from the most central sentences that do not repeat one another and read on their own, in
    the order they were written, each citing the article it comes from (1-based positions in
    `articles`)."""
    title = _title([a.title for a in articles])
    sentences = _sentences(articles)
    if not sentences:
        return lead_story(articles[0])
    similarity = _similarity([s.text for s in sentences])
    summary = _picks(sentences, similarity, SUMMARY_SENTENCES - 1, taken=[])
    points = _picks(sentences, similarity, 4, taken=summary)
    return StoryText(
        title=trim(title, TITLE_MAX),
        summary=[_cited(sentences[i]) for i in sorted(summary)],
        key_points=[_cited(sentences[i]) for i in sorted(points or summary)],
    )


def lead_story(article: ArticleText) -> StoryText:
    """A one-article story: its own headline, its summary (or lead), its next sentences.
    No model and no vectors: news puts what matters first."""
    sentences = _sentences([article])
    summary = " ".join(article.summary.split())
    everything = range(len(sentences))
    lead = [i for i in everything if sentences[i].text in summary] or list(everything)[:2]
    lead = _in_turn(sentences, lead)[:SUMMARY_SENTENCES]
    points = _in_turn(sentences, [i for i in everything if i not in lead])[:4]
    return StoryText(
        title=trim(article.title, TITLE_MAX),
        summary=[_cited(sentences[i]) for i in lead] or [Cited(text=article.title, sources=[1])],
        key_points=[_cited(sentences[i]) for i in points]
        or [Cited(text=article.title, sources=[1])],
    )


@dataclass(frozen=True)
class _Sentence:
    text: str
    position: int  # of its article, 1-based, in the articles the story is written from
    previous: int | None  # the sentence just before it in its article's text, if one is kept


# A sentence that opens with one of these leans on the one before it ("He said ...", "But
# ..."): alone, it does not say who or what. "This year", "That night" say when, not who.
LEANS_BACK = re.compile(
    r"""^(?:he|she|it|its|they|them|their|his|her|him|this|that|these|those|such
    |but|and|however|also|then|meanwhile|instead|still|so|yet)\b
    (?!\s+(?:year|week|month|morning|afternoon|evening|night|season|time)\b)""",
    re.IGNORECASE | re.VERBOSE,
)


def _picks(
    sentences: Sequence[_Sentence], similarity, count: int, taken: Sequence[int]
) -> list[int]:
    """Up to `count` sentences, one at a time the most central of those that do not repeat
    one taken already (in `taken` or picked here) and read on their own, or lean on the
    sentence before them, picked here already: in the story's order it comes right before."""
    ranking = _ranking(similarity)
    picked: list[int] = []
    for _ in range(count):
        fits = (
            i
            for i in ranking
            if i not in picked
            and all(similarity[i, j] < REPEAT_SIMILARITY for j in [*taken, *picked])
            and _reads(sentences[i], picked)
        )
        pick = next(fits, None)
        if pick is None:
            break
        picked.append(pick)
    return picked


def _reads(sentence: _Sentence, around: Sequence[int]) -> bool:
    """Whether `sentence` reads on its own, or after the sentence it leans on, in `around`."""
    return not LEANS_BACK.match(sentence.text) or sentence.previous in around


def _in_turn(sentences: Sequence[_Sentence], indexes: Sequence[int]) -> list[int]:
    """`indexes`, in order, less the sentences that lean on one not kept right before them."""
    kept: list[int] = []
    for i in indexes:
        if _reads(sentences[i], kept[-1:]):
            kept.append(i)
    return kept


def _title(titles: Sequence[str]) -> str:
    """The most central headline that reports what happened; the most central of all when
    every one previews, explains or comments."""
    ranking = _ranking(_similarity(titles))
    return next((titles[i] for i in ranking if is_report(titles[i])), titles[ranking[0]])


# What is to come, in a headline's lead clause (before any ";"): a preview, a forecast, a plan.
# "46,000 without power; repairs could take days" reports; "cuts could last until Monday" not.
PREVIEW = re.compile(
    r"""\bpreview\b | \bahead\ of\b | \b(?:set|poised|expected|likely|slated|scheduled)\ to\b
    | \bhead(?:s|ing)?\ for\b | \b(?:will|could|might|would)\b | (?-i:\bmay\b)""",
    re.IGNORECASE | re.VERBOSE,
)
# "Board to vote on fares", "Haldane to shut 18 stores": headline English for what is to come,
# its subject a name or a short noun phrase. Not when the words before "to" hold a verb
# ("nurses agree to resume talks", "residents told to boil water"), nor when "to" leads to a
# number, a name or a noun ("toll rises to 83", "team flies to Kestria", "to the capital").
TO_VERB = re.compile(r"^((?:[\w’'-]+ ){1,3})to ([a-z]+)\b")
VERB_BEFORE_TO = frozenset(
    "agree agrees vote votes move moves vow vows pledge pledges decide decides refuse refuses "
    "fail fails threaten threatens offer offers seek seeks promise promises try tries want "
    "wants aim aims hope hopes ask asks urge urges order orders allow allows force forces "
    "need needs plan plans tell tells told made is are was were has have had be been going "
    "able back return returns rise rises fall falls climb climbs jump jumps drop drops turn "
    "turns point points lead leads come comes go goes get gets up down close next due "
    "according".split()
)
NOT_A_VERB = frozenset(
    "the a an his her their its our my this that these those one two three four five six "
    "seven eight nine ten power death prison jail court work life date".split()
)
# What explains, advises, asks, comments or quotes rather than reports, anywhere in a headline.
NOT_A_REPORT = re.compile(
    r"""
    (?:^|[:;]\s*)(?:what|how|why|who|where|which)\b | \?
    | \b(?:explained|explainer|q&a|what\ we\ know|full\ list|guide|hands-on)\b
    | \byou(?:r|rs|rself)?\b
    | \blive(?:\ updates|\ blog|\ coverage)?:|\blive\ (?:updates|blog|coverage)\b
    | \bas\ it\ happened\b | ^(?:opinion|comment|analysis|editorial|letters?|view)\b
    | \b(?:should|must)\b | ^['"‘“][^'"’”]+['"’”]:
    """,
    re.IGNORECASE | re.VERBOSE,
)


def is_report(headline: str) -> bool:
    """Whether `headline` reads as a report of what happened: not a preview, an explainer, a
    live page, an opinion or a voice."""
    lead = headline.split(";")[0]
    if NOT_A_REPORT.search(headline) or PREVIEW.search(lead):
        return False
    future = TO_VERB.match(lead)
    return not (
        future
        and future[2] not in NOT_A_VERB
        and not any(w in VERB_BEFORE_TO or w.endswith("ed") for w in future[1].lower().split())
    )


def _cited(sentence: _Sentence) -> Cited:
    return Cited(text=trim(sentence.text, SENTENCE_MAX), sources=[sentence.position])


def _sentences(articles: Sequence[ArticleText]) -> list[_Sentence]:
    """Distinct sentences of the articles' summaries and texts, oldest article first, short
    fragments left out; a sentence two articles share is the first one's."""
    seen: set[str] = set()
    sentences: list[_Sentence] = []
    for i in sorted(range(len(articles)), key=lambda i: articles[i].published_at):
        for text in (articles[i].summary, articles[i].content):
            previous = None
            for piece in _split(text):
                if 30 <= len(piece) <= SENTENCE_MAX and piece not in seen:
                    seen.add(piece)
                    sentences.append(_Sentence(piece, i + 1, previous))
                    previous = len(sentences) - 1
                else:
                    previous = None
    return sentences


# "Dr. Nwosu", "St. Brigid's": a full stop that ends a title, not a sentence.
TITLE_STOP = re.compile(r"\b(?:Dr|Mr|Mrs|Ms|Mx|Prof|St|Sgt|Capt|Gen|Col|Lt|Gov|Sen|Rep|No)\.$")


def _split(text: str) -> list[str]:
    """The sentences of `text`. A line with no full stop among lines that have one is a
    byline, a heading or a caption, not a sentence; a feed that strips all punctuation still
    has its text."""
    pieces = [piece for line in text.splitlines() for piece in _line_sentences(line)]
    return [piece for piece in pieces if ENDED.search(piece)] or pieces


ENDED = re.compile(r"[.!?][\"'”’)\]]?$")


def _line_sentences(line: str) -> list[str]:
    """The sentences of one paragraph. A quotation of two sentences stays whole, or the story
    would carry its halves: '"I thought it was a bag.' and 'Then it turned its head," she said.'
    News style leaves a quotation open at a paragraph's end, so this stops at the line."""
    sentences: list[str] = []
    for piece in SENTENCE_END.split(" ".join(line.split())):
        # A stray quote mark must not glue the rest into one overlong sentence.
        if sentences and _unfinished(sentences[-1]) and len(sentences[-1]) < SENTENCE_MAX:
            sentences[-1] += " " + piece
        elif piece:
            sentences.append(piece)
    return sentences


def _unfinished(sentence: str) -> bool:
    """Whether a quotation opened in `sentence` is still open, or it ends on a title."""
    open_quote = sentence.count('"') % 2 or sentence.count("“") > sentence.count("”")
    return bool(open_quote or TITLE_STOP.search(sentence))


# Two sentences this similar (TF-IDF cosine) mostly say the same thing: keep the more central
# one. Paraphrases across outlets ("two killed, 11 injured" / "two died, 11 hurt") score ~0.25.
REPEAT_SIMILARITY = 0.25


def _similarity(texts: Sequence[str]) -> np.ndarray:
    """TF-IDF cosine similarity of every pair of `texts` (none, when they have no words)."""
    try:
        vectors = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit_transform(texts)
    except ValueError:
        return np.zeros((len(texts), len(texts)))
    return (vectors @ vectors.T).toarray()


def _ranking(similarity: np.ndarray) -> list[int]:
    """Indexes, most central first (highest similarity to all the others), ties in order."""
    centrality = similarity.sum(axis=1)
    return sorted(range(len(similarity)), key=lambda i: (-centrality[i], i))
