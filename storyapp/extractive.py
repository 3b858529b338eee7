"""The extractive fallback: a story made of the articles' own headlines and sentences, when the
LLM cannot write one, and the one-article story that needs no LLM at all."""

import re
from collections.abc import Sequence

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
    """Title from the most central headline; summary and key points from the most central
    sentences that do not repeat one another, in the order they were written, each citing the
    article it comes from (1-based positions in `articles`)."""
    titles = [a.title for a in articles]
    title = titles[_central_picks(titles, 1)[0]]
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


def _central_picks(texts: Sequence[str], count: int) -> list[int]:
    """Up to `count` indexes of `texts`, most central first (highest TF-IDF similarity to all
    the others), skipping any too close to one already picked: outlets repeat each other."""
    try:
        vectors = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit_transform(texts)
    except ValueError:
        return list(range(min(count, len(texts))))
    similarity = (vectors @ vectors.T).toarray()
    centrality = similarity.sum(axis=1)
    picks: list[int] = []
    for i in sorted(range(len(texts)), key=lambda i: (-centrality[i], i)):
        if all(similarity[i, j] < REPEAT_SIMILARITY for j in picks):
            picks.append(i)
            if len(picks) == count:
                break
    return picks
