"""The extractive fallback: a story made of the articles' own headlines and sentences, when the
LLM cannot write one, and the one-article story that needs no LLM at all."""

import re
from collections.abc import Sequence

from sklearn.feature_extraction.text import TfidfVectorizer

from storyapp.story import KEY_POINT_MAX, SUMMARY_MAX, TITLE_MAX, ArticleText, StoryText, trim

SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[])")


def extractive_story(articles: Sequence[ArticleText]) -> StoryText:
    """Title from the most central headline; summary and key points from the most central
    sentences that do not repeat one another, in the order they were written."""
    titles = [a.title for a in articles]
    title = titles[_central_picks(titles, 1)[0]]
    sentences = _sentences(sorted(articles, key=lambda a: a.published_at))
    if not sentences:
        return lead_story(articles[0])
    picks = _central_picks(sentences, 7)
    summary_ids = sorted(picks[:3])
    summary = trim(" ".join(sentences[i] for i in summary_ids), SUMMARY_MAX)
    points = [sentences[i] for i in sorted(picks[3:])] or [sentences[i] for i in summary_ids]
    return StoryText(title=trim(title, TITLE_MAX), summary=summary, key_points=points)


def lead_story(article: ArticleText) -> StoryText:
    """A one-article story: its own headline, its summary (or lead), its next sentences.
    No model and no vectors: news puts what matters first."""
    sentences = _sentences([article])
    summary = article.summary or " ".join(sentences[:2]) or article.title
    points = [s for s in sentences if s not in summary][:4] or [article.title]
    return StoryText(
        title=trim(article.title, TITLE_MAX),
        summary=trim(summary, SUMMARY_MAX),
        key_points=[trim(p, KEY_POINT_MAX) for p in points],
    )


def _sentences(articles: Sequence[ArticleText]) -> list[str]:
    """Distinct sentences of the articles' summaries and texts, short fragments left out."""
    seen: dict[str, None] = {}
    for article in articles:
        for text in (article.summary, article.content):
            for sentence in SENTENCE_END.split(" ".join(text.split())):
                if 30 <= len(sentence) <= KEY_POINT_MAX:
                    seen.setdefault(sentence.strip())
    return list(seen)


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
