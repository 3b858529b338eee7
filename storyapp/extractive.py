"""The extractive fallback: a story made of the articles' own headlines and sentences, when the
LLM cannot write one, and the one-article story that needs no LLM at all."""

import re
from collections.abc import Sequence

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
    from the most central sentences that do not repeat one another, in the order they were
    written, each citing the article it comes from (1-based positions in `articles`)."""
    title = _title([a.title for a in articles])
    sentences = _sentences(articles)
    if not sentences:
        return lead_story(articles[0])
    texts = [text for text, _ in sentences]
    picks = _central_picks(texts, 7)
    summary = [_cited(sentences[i]) for i in sorted(picks[: SUMMARY_SENTENCES - 1])]
    points = [_cited(sentences[i]) for i in sorted(picks[SUMMARY_SENTENCES - 1 :])] or summary
    return StoryText(title=trim(title, TITLE_MAX), summary=summary, key_points=points)


def lead_story(article: ArticleText) -> StoryText:
    """A one-article story: its own headline, its summary (or lead), its next sentences.
    No model and no vectors: news puts what matters first."""
    sentences = [text for text, _ in _sentences([article])]
    lead = [s for s in sentences if s in article.summary] or sentences[:2] or [article.title]
    points = [s for s in sentences if s not in lead][:4] or [article.title]
    return StoryText(
        title=trim(article.title, TITLE_MAX),
        summary=[Cited(text=trim(s, SENTENCE_MAX), sources=[1]) for s in lead[:SUMMARY_SENTENCES]],
        key_points=[Cited(text=trim(p, SENTENCE_MAX), sources=[1]) for p in points],
    )


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


def _cited(sentence: tuple[str, int]) -> Cited:
    text, position = sentence
    return Cited(text=trim(text, SENTENCE_MAX), sources=[position])


def _sentences(articles: Sequence[ArticleText]) -> list[tuple[str, int]]:
    """Distinct sentences of the articles' summaries and texts, short fragments left out, each
    with the position of the first article (oldest first) that has it."""
    seen: dict[str, int] = {}
    order = sorted(range(len(articles)), key=lambda i: articles[i].published_at)
    for i in order:
        for text in (articles[i].summary, articles[i].content):
            for sentence in _split(text):
                if 30 <= len(sentence) <= SENTENCE_MAX:
                    seen.setdefault(sentence.strip(), i + 1)
    return list(seen.items())


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


def _central_picks(texts: Sequence[str], count: int) -> list[int]:
    """Up to `count` indexes of `texts`, most central first, skipping any too close to one
    already picked: outlets repeat each other."""
    similarity = _similarity(texts)
    picks: list[int] = []
    for i in _ranking(similarity):
        if all(similarity[i, j] < REPEAT_SIMILARITY for j in picks):
            picks.append(i)
            if len(picks) == count:
                break
    return picks
