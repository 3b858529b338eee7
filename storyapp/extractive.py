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

SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[])")


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
            for sentence in SENTENCE_END.split(" ".join(text.split())):
                if 30 <= len(sentence) <= SENTENCE_MAX:
                    seen.setdefault(sentence.strip(), i + 1)
    return list(seen.items())


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
