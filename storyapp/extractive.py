"""The extractive fallback: a story made of the articles' own headlines and sentences, when the
LLM cannot write one, and the one-article story that needs no LLM at all."""

import dataclasses
import itertools
import re
from collections import defaultdict
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
    from the most central sentences that neither repeat nor contradict one another and read on
    their own, in the order they were written, each citing the article it comes from (1-based
    positions in `articles`). Whatever the articles hold, a valid story."""
    articles = [_cleaned(a) for a in articles]
    headline = _title([a.title for a in articles])
    sentences = _sentences(articles)
    pool = _Pool(sentences)
    summary = pool.picks(SUMMARY_SENTENCES - 1, taken=[])
    if not summary:
        return _headline_story(*(headline or (UNTITLED, 1)))
    summary, points = sorted(summary), sorted(pool.picks(4, taken=summary))
    if not points and len(summary) > 1 and _reads(sentences[summary[-1]], []):
        # Key points that copy the summary say nothing new: its last sentence moves there.
        summary, points = summary[:-1], summary[-1:]
    title = headline[0] if headline else sentences[summary[0]].text
    return StoryText(
        title=trim(title, TITLE_MAX),
        summary=[_cited(sentences[i]) for i in summary],
        key_points=[_cited(sentences[i]) for i in points or summary],
    )


def lead_story(article: ArticleText) -> StoryText:
    """A one-article story: its own headline, its summary (or lead), its next sentences that
    do not retell the lead (the text's first sentence often does). No model: news puts what
    matters first."""
    article = _cleaned(article)
    sentences = _sentences([article])
    summary = " ".join(article.summary.split())
    everything = range(len(sentences))
    lead = _in_turn(sentences, [i for i in everything if sentences[i].text in summary])
    lead = (lead or _in_turn(sentences, everything)[:2])[:SUMMARY_SENTENCES]
    pool = _Pool(sentences)
    points: list[int] = []
    for i in everything:
        if len(points) == 4:
            break
        if i not in lead and pool.fits(i, [*lead, *points]) and _reads(sentences[i], points[-1:]):
            points.append(i)
    title = " ".join(article.title.split()) or (sentences[lead[0]].text if lead else UNTITLED)
    if not lead:
        return _headline_story(title, 1)
    return StoryText(
        title=trim(title, TITLE_MAX),
        summary=[_cited(sentences[i]) for i in lead],
        key_points=[_cited(sentences[i]) for i in points]
        or [Cited(text=trim(title, SENTENCE_MAX), sources=[1])],
    )


# The title of a story whose articles have neither a headline nor a sentence to tell.
UNTITLED = "Untitled story"


def _headline_story(headline: str, position: int) -> StoryText:
    """A story that can only say what a headline says: its articles have no sentence to tell."""
    told = [Cited(text=trim(headline, SENTENCE_MAX), sources=[position])]
    return StoryText(title=trim(headline, TITLE_MAX), summary=told, key_points=told)


def _cleaned(article: ArticleText) -> ArticleText:
    """`article` without what no story can store: a NUL or a lone surrogate, both legal in
    JSON and in Python strings, refused by the story's check (no database keeps them)."""

    def clean(text: str) -> str:
        return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")

    return dataclasses.replace(
        article,
        title=clean(article.title),
        summary=clean(article.summary),
        content=clean(article.content),
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


class _Pool:
    """A cluster's sentences, and what choosing among them needs: how alike and how central
    they are, the figures each gives, which ones a later article corrects and which ones say
    something is not known that another sentence states."""

    def __init__(self, sentences: Sequence[_Sentence]):
        self.sentences = sentences
        self.similarity = _similarity([s.text for s in sentences])
        self.figures = [_figures(s.text) for s in sentences]
        corrected = _corrected(sentences, self.figures)
        answered = _answered(sentences, self.figures)
        ranking = _ranking(self.similarity)
        # A figure a later article corrects is news no longer, yet the two may not be the same
        # thing after all: such a sentence comes last, not never. An answered "not known" is
        # simply wrong.
        left_out = corrected | answered
        self.ranking = [i for i in ranking if i not in left_out] + [
            i for i in ranking if i in corrected - answered
        ]

    def picks(self, count: int, taken: Sequence[int]) -> list[int]:
        """Up to `count` sentences, one at a time the most central of those that neither
        repeat nor contradict one in the story (`taken`, or picked here) and read on their
        own, or lean on the sentence before them picked here: in the story's order that one
        comes right before."""
        picked: list[int] = []
        for _ in range(count):
            story = [*taken, *picked]
            fits = (
                i
                for i in self.ranking
                if i not in picked and self.fits(i, story) and _reads(self.sentences[i], picked)
            )
            pick = next(fits, None)
            if pick is None:
                break
            picked.append(pick)
        return picked

    def fits(self, i: int, story: Sequence[int]) -> bool:
        """Whether sentence `i` says something the story does not, and nothing against it."""
        given = [f for j in story for f in self.figures[j]]
        return (
            all(self.similarity[i, j] < REPEAT_SIMILARITY for j in story)
            and not _restates(self.figures[i], given)
            and not any(_contradict(self.figures[i], self.figures[j]) for j in story)
        )


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


def _title(titles: Sequence[str]) -> tuple[str, int] | None:
    """The most central headline that reports what happened, and its article's position; the
    most central of all when every one previews, explains or comments; none if all are blank."""
    lines = [" ".join(t.split()) for t in titles]
    ranking = [i for i in _ranking(_similarity(lines)) if lines[i]]
    best = next((i for i in ranking if is_report(lines[i])), ranking[0] if ranking else None)
    return None if best is None else (lines[best], best + 1)


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


# Figures: a number, its scale and what it counts. "1.2 million patients", "74%", "$8.6 billion
# takeover". Words in them: "MVX-3", "Nova X2" are names, not figures.
TOKEN = re.compile(r"\$?\d[\d,]*(?:\.\d+)?%?|[^\W\d_][\w'’-]*")
# How many words either side of a figure tell what it counts: "widespread power cuts to more
# than 30,000 homes" and "46,000 homes and businesses were without power" share "power".
NEAR = 6
SCALE = {"hundred": 1e2, "thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}
# News spells small numbers out: "at least six MPs are expected to vote against" / "four MPs
# voted against".
WORD_NUMBERS = {
    word: float(n)
    for n, word in enumerate(
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split(),
        start=1,
    )
}
# Words before a figure that say it is rounded: "about 1,200", "more than 30,000", "up to 140".
ROUNDED = frozenset(
    "about around nearly almost roughly some approximately over than least up under".split()
)
# Words that say nothing of what a figure counts (a scale is part of the number).
FUNCTION_WORDS = frozenset(
    """a an the of to in on at by for from with and or but as is are was were be been being
    has have had do does did will would could should may might can that this these those it
    its their his her they he she we our you your i me my who whom whose which what when where
    why how whether than then there here not no nor so if about after before over under into
    onto up down out off per while during since until also just more most less least many much
    against
    some any each every all both other such only very own same too said says say according
    around nearly almost roughly approximately estimated am pm percent cent hundred thousand
    million billion trillion""".split()
) | set(WORD_NUMBERS)


@dataclass(frozen=True)
class _Figure:
    value: float
    unit: str  # what it counts, as a word stem ("patient"), or "percent" and of what
    rounded: bool
    context: frozenset[str]  # the plain words around it: what it is a figure of


def _figures(text: str) -> list[_Figure]:
    """The figures `text` gives, each with the unit it counts; a bare number (a year, a
    score, a time) says too little to be compared and is left out."""
    tokens = TOKEN.findall(text)
    found = (
        _figure(tokens, k)
        for k, token in enumerate(tokens)
        if token.lstrip("$")[:1].isdigit() or token.lower() in WORD_NUMBERS
    )
    return [f for f in found if f is not None]


def _figure(tokens: Sequence[str], k: int) -> _Figure | None:
    """The figure whose number is `tokens[k]`, if it counts something."""
    try:
        value = WORD_NUMBERS.get(tokens[k].lower()) or float(
            tokens[k].strip("$%,").replace(",", "")
        )
    except ValueError:
        return None
    end = k + 1
    if end < len(tokens) and tokens[end].lower() in SCALE:
        value *= SCALE[tokens[end].lower()]
        end += 1
    unit, end = _unit(tokens, end, tokens[k].endswith("%"))
    if unit is None:
        return None
    around = [*tokens[max(0, k - NEAR) : k], *tokens[end : end + NEAR]]
    return _Figure(
        value,
        unit,
        rounded=any(t.lower() in ROUNDED for t in tokens[max(0, k - 2) : k]),
        context=frozenset(_stem(t) for t in around if _plain(t)),
    )


def _unit(tokens: Sequence[str], end: int, percent: bool) -> tuple[str | None, int]:
    """What the figure before `tokens[end]` counts, and where its words end."""
    words = [t.lower() for t in tokens[end : end + 2]]
    if words[:1] == ["percent"]:
        return _share(tokens, end + 1)
    if words == ["per", "cent"]:
        return _share(tokens, end + 2)
    return _share(tokens, end) if percent else _count(tokens, end)


def _share(tokens: Sequence[str], end: int) -> tuple[str, int]:
    """A share is of something: "percent of the vote" is not "percent of shares"."""
    of = 0
    if end < len(tokens) and tokens[end].lower() == "of":
        of = 2 if end + 1 < len(tokens) and tokens[end + 1].lower() in ("the", "a") else 1
    if end + of < len(tokens) and _plain(tokens[end + of]):
        return f"percent {_stem(tokens[end + of])}", end + of + 1
    return "percent", end


def _count(tokens: Sequence[str], end: int) -> tuple[str | None, int]:
    """A count is of its noun, past a name or an adjective: "62,000 Eastvale customers", "37
    private clinics"; of the first of two words unless the second is the plural one
    ("children aged 5")."""
    names = 0
    while names < 2 and end + names < len(tokens) and tokens[end + names][:1].isupper():
        names += 1
    run = list(itertools.takewhile(_plain, tokens[end + names : end + names + 2]))
    if not run:
        return None, end
    noun = run[1] if len(run) == 2 and run[1].endswith("s") else run[0]
    return _stem(noun), end + names + len(run)


def _plain(token: str) -> bool:
    """A lowercase word that means something: not a name, a number or a function word."""
    return token[:1].islower() and token.lower() not in FUNCTION_WORDS


def _stem(word: str) -> str:
    word = word.lower().replace("’", "'").removesuffix("'s").rstrip("'")
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 3 else word


def _agree(a: _Figure, b: _Figure) -> bool:
    """Whether two figures can be the same number: equal, or a rounded one within a tenth."""
    tolerance = 0.1 if a.rounded or b.rounded else 1e-9
    return abs(a.value - b.value) <= tolerance * max(abs(a.value), abs(b.value))


def _contradict(these: Sequence[_Figure], those: Sequence[_Figure]) -> bool:
    """Whether two sentences give different figures for the same thing: the same unit, told
    with a word in common ("47 people were killed" / "killed 61 people")."""
    return any(
        a.unit == b.unit and a.context & b.context and not _agree(a, b)
        for a in these
        for b in those
    )


def _restates(figures: Sequence[_Figure], given: Sequence[_Figure]) -> bool:
    """Whether every figure a sentence gives is one the story gives already: outlets retell
    the same lede around the same number ("1.2 million patients" three times)."""
    return bool(figures) and all(
        any(f.unit == g.unit and _agree(f, g) for g in given) for f in figures
    )


def _corrected(sentences: Sequence[_Sentence], figures: Sequence[list[_Figure]]) -> set[int]:
    """The sentences that give a figure another article, as new or newer, gives otherwise
    ("at least 47 killed", then "killed 61"): `sentences` run oldest article first."""
    by_unit: dict[str, list[tuple[int, _Figure]]] = defaultdict(list)
    for i, found in enumerate(figures):
        for figure in found:
            by_unit[figure.unit].append((i, figure))
    corrected = set()
    for mentions in by_unit.values():
        for (i, a), (j, b) in itertools.combinations(mentions, 2):
            if sentences[i].position != sentences[j].position and _contradict([a], [b]):
                corrected.add(min(i, j))
    return corrected


# A sentence that says something is not known: "did not say how many patients were affected",
# "it was not clear whether anyone was hurt". What follows says what is not known.
UNKNOWN = re.compile(
    r"""\b(?:(?:did|does|do|would|could|has|have|had)(?:\s+not|n[’']t)|declined\s+to
    |refused\s+to)\s+(?:yet\s+)?(?:say|said|disclosed?|reveal(?:ed)?|confirm(?:ed)?|specif(?:y|ied)
    |give|given|know|known|identif(?:y|ied))\b
    | \b(?:is|was|are|were|remains|remained)\s+(?:still\s+)?(?:not\s+(?:yet\s+)?
    (?:immediately\s+)?(?:clear|known)|unclear|unknown)\b""",
    re.IGNORECASE | re.VERBOSE,
)


def _answered(sentences: Sequence[_Sentence], figures: Sequence[list[_Figure]]) -> set[int]:
    """The sentences that say something is not known which another sentence states: a figure
    for "how many patients", or every plain word of what was not known."""
    answered = set()
    for i, sentence in enumerate(sentences):
        unknown = UNKNOWN.search(sentence.text)
        if unknown is None:
            continue
        what = re.split(r"[,;:.]", sentence.text[unknown.end() :])[0]
        words = {_stem(t) for t in TOKEN.findall(what) if _plain(t)}
        counted = bool(re.match(r"\s*how (?:many|much)\b", what, re.IGNORECASE))
        if words and any(
            j != i
            and not UNKNOWN.search(other.text)
            and _states(other.text, figures[j], words, counted)
            for j, other in enumerate(sentences)
        ):
            answered.add(i)
    return answered


def _states(text: str, figures: Sequence[_Figure], words: set[str], counted: bool) -> bool:
    """Whether `text` states what `words` say is not known: how many, when that is asked."""
    if counted:
        return any(f.unit in words for f in figures)
    return words <= {_stem(t) for t in TOKEN.findall(text) if _plain(t)}
