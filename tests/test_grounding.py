"""Every statement is checked against the articles it cites before it is stored, a statement
that says again what the story said is dropped, and a reply that is no story is refused whole;
a reply cut off by the token cap is not sent again as it was."""

import pytest
from scripted import ScriptedLLM
from test_synthesis import FLOOD, GOOD, no_sleep, text

from storyapp import grounding, prompt, story, synthesis
from storyapp.llm import LLMError
from storyapp.story import ArticleText
from storyapp.synthesis import synthesize


def cited(text: str, *sources: int) -> dict:
    return {"text": text, "sources": list(sources)}


def reply(*summary: dict, points: list[dict] | None = None, **more) -> dict:
    default = GOOD["key_points"]
    return {
        "title": "River Vale floods",
        "summary": list(summary),
        "key_points": points or default,
        **more,
    }


@pytest.mark.parametrize(
    ("sentence", "why"),
    [
        ("The river burst its banks in 2027.", "2027"),  # an invented year
        ("The River Vale burst its banks on Tuesday.", "tuesday"),  # an invented weekday
        ("The River Vale burst its banks on March 3.", "march 3"),  # an invented date
        ("Mayor Ellen Price said the Vale burst its banks.", "name"),  # an invented name
        ("About 1,500 residents of Lowbridge were moved.", "1500"),  # a number changed
    ],
)
def test_an_invented_date_name_or_number_is_dropped(sentence, why):
    story_ = story.parse(reply(cited(sentence, 1), cited(FLOOD[0].summary, 1)))
    checked = grounding.ground(story_, FLOOD)
    assert (checked.checked, checked.dropped) == (3, 1)
    assert why in checked.reasons[0].lower()
    assert [s.text for s in checked.story.summary] == [FLOOD[0].summary]


def test_what_the_cited_articles_say_stands():
    sentences = [
        "The River Vale burst its banks on Friday after two days of record rain.",
        "About 1,200 residents of Lowbridge were moved to the town hall overnight.",
        "Insurers expect claims to run into millions.",
    ]
    checked = grounding.ground(
        story.parse(
            reply(cited(sentences[0], 1), cited(sentences[1], 1, 2), cited(sentences[2], 3))
        ),
        FLOOD,
    )
    assert (checked.checked, checked.dropped, checked.reasons) == (4, 0, [])


def test_a_name_is_found_inside_hyphenated_and_possessive_words():
    article = text(
        1,
        "Vale-Lowbridge road shut",
        "The Vale-Lowbridge road and Ms O'Hara's office were shut; the Councillors' vote waits.",
        "",
    )
    sentences = [
        "Lowbridge's road was shut.",  # part of a hyphenated word, with a possessive
        "O'Hara's office and the Vale were shut.",
        "The Councillors will vote later.",  # "councillors'" in the article
    ]
    checked = grounding.ground(
        story.parse(
            reply(cited(sentences[0], 1), cited(sentences[1], 1), points=[cited(sentences[2], 1)])
        ),
        [article],
    )
    assert (checked.dropped, checked.reasons) == (0, [])


def test_a_sentence_is_held_to_one_article_the_writer_read_not_to_the_cluster():
    # True of article 1, but cited to article 3: article 1 is cited instead.
    miscited = story.parse(
        reply(
            cited("The mayor said the water would peak on Saturday.", 3),
            cited(FLOOD[0].summary, 1),
        )
    )
    checked = grounding.ground(miscited, FLOOD)
    assert (checked.checked, checked.dropped) == (3, 0)
    assert [s.sources for s in checked.story.summary] == [[1], [1]]
    # Had the writer not been shown article 1, nothing it read bears the sentence out.
    checked = grounding.ground(miscited, FLOOD, shown=[2, 3])
    assert checked.dropped == 1 and "saturday" in checked.reasons[0]
    # A sentence true only of two articles together is not cited to one of them.
    both = "The mayor said the water would peak on Saturday; forecasters expect rain on Sunday."
    checked = grounding.ground(
        story.parse(reply(cited(both, 3), cited(FLOOD[0].summary, 1))), FLOOD
    )
    assert checked.dropped == 1


def test_a_reversed_direction_is_dropped():
    shares = [
        ArticleText(
            "Harlow Mutual soars",
            "Harlow Mutual shares soared 24 percent.",
            "",
            "Wire",
            FLOOD[0].published_at,
            "h",
        ),
        ArticleText(
            "Harlow Mutual bid",
            "A bid lifted Harlow Mutual.",
            "",
            "Post",
            FLOOD[0].published_at,
            "i",
        ),
    ]
    checked = grounding.ground(
        story.parse(
            {
                "title": "Harlow Mutual shares move",
                "summary": [
                    cited("Harlow Mutual shares fell 24 percent.", 1),
                    cited("A bid lifted Harlow Mutual.", 2),
                ],
                "key_points": [cited("Harlow Mutual shares rose 24 percent.", 1)],
            }
        ),
        shares,
    )
    assert checked.dropped == 1 and "went down" in checked.reasons[0]
    assert [p.text for p in checked.story.key_points] == ["Harlow Mutual shares rose 24 percent."]


def test_timeline_dates_must_be_stated_and_quotes_verbatim():
    friday = FLOOD[0].published_at.date()  # the articles were published on a Friday
    parsed = story.parse(
        reply(
            cited(FLOOD[0].summary, 1),
            timeline=[
                {
                    "date": friday.isoformat(),
                    "event": "The River Vale burst its banks.",
                    "sources": [1],
                },
                {"date": "2026-12-25", "event": "The River Vale burst its banks.", "sources": [1]},
            ],
            quote={"text": "The water will peak on Saturday", "speaker": "The mayor", "source": 1},
        )
    )
    checked = grounding.ground(parsed, FLOOD)
    assert [d.date for d in checked.story.timeline] == [friday]
    assert checked.story.quote is None  # paraphrased, not quoted
    assert checked.dropped == 2


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (reply(cited(FLOOD[0].summary, 1), points=[cited("1", 1), cited("2", 1)]), "placeholder"),
        (reply(cited('published="2026-11-27 08:01"', 1)), "markup"),
        ({**reply(cited(FLOOD[0].summary, 1)), "title": "]["}, "title"),
    ],
)
def test_a_reply_that_is_no_story_is_refused(bad, why):
    with pytest.raises(ValueError, match=why):
        grounding.sane(story.parse(bad))


def test_a_statement_that_says_again_what_the_story_said_is_dropped():
    said = reply(
        cited("River Vale floods", 1),  # the title
        cited(FLOOD[0].summary, 1),
        # The same, but for a word: a small model's way of repeating itself.
        cited("The River Vale burst its banks on Friday after two days of heavy rain.", 1),
        points=[
            cited(FLOOD[0].summary, 1),
            cited("Insurers expect claims to run into millions.", 3),
        ],
    )
    checked = grounding.ground(story.parse(said), FLOOD)
    assert [s.text for s in checked.story.summary] == [FLOOD[0].summary]
    assert [p.text for p in checked.story.key_points] == [
        "Insurers expect claims to run into millions."
    ]
    assert (checked.checked, checked.dropped) == (5, 3)
    assert all("says again" in reason for reason in checked.reasons)
    # Statements about one event share words without saying the same thing.
    differ = reply(
        cited("The River Vale burst its banks on Friday after two days of record rain.", 1),
        points=[cited("The River Vale flooded streets near the old mill.", 2)],
    )
    assert grounding.ground(story.parse(differ), FLOOD).dropped == 0


def test_a_reply_that_only_repeats_its_title_is_refused():
    # What Gemma 3 270M wrote for one event of the sample, names changed: the title three times.
    title = "Lowbridge evacuates 1,200 as River Vale rises"
    echo = {**reply(cited(title, 2), points=[cited(title, 2)]), "title": title}
    llm = ScriptedLLM().enqueue(echo, echo)
    result = synthesize(FLOOD, llm, sleep=no_sleep)
    assert result.generator == "fallback" and len(llm.history) == 2
    assert "says again what the story said" in result.error


def test_a_reply_that_invents_is_retried_then_the_fallback_writes_the_story():
    invented = reply(cited("The FDA approved the River Vale plan in 2027.", 1))
    llm = ScriptedLLM().enqueue(invented, invented)
    result = synthesize(FLOOD, llm, sleep=no_sleep)
    assert result.generator == "fallback" and len(llm.history) == 2
    assert "2027" in result.error
    assert result.dropped == 0 and result.checked > 0  # the fallback's own sentences


def test_the_supported_part_of_a_reply_is_stored_with_its_figures():
    half = reply(cited(FLOOD[0].summary, 1), cited("It was the worst flood since 1903.", 1))
    result = synthesize(FLOOD, ScriptedLLM().enqueue(half), sleep=no_sleep)
    assert result.generator == "llm" and (result.checked, result.dropped) == (3, 1)
    assert [s.text for s in result.story.summary] == [FLOOD[0].summary]


def test_a_reply_cut_off_by_the_token_cap_is_not_sent_again_unchanged():
    cut = LLMError(
        'reply is not JSON: \'{"title": "Riv\'', outcome="invalid", retryable=True, truncated=True
    )
    llm = ScriptedLLM().enqueue(cut, GOOD)
    result = synthesize(FLOOD, llm, sleep=no_sleep)
    assert result.generator == "llm"
    first, second = llm.history
    assert first.schema == prompt.build(FLOOD).schema
    assert second.schema == story.schema(True, 3) and second.messages != first.messages
    # The short request cut off too: that was the last try.
    llm = ScriptedLLM().enqueue(cut, cut, GOOD)
    assert synthesize(FLOOD, llm, sleep=no_sleep).generator == "fallback"
    assert len(llm.history) == 2


def test_the_reply_cap_holds_the_longest_valid_story():
    longest = {
        "title": "t" * story.TITLE_MAX,
        "summary": [cited("s" * story.SENTENCE_MAX, 1, 2)] * story.SUMMARY_SENTENCES,
        "key_points": [cited("k" * story.SENTENCE_MAX, 1, 2)] * story.KEY_POINTS_MAX,
    }
    # About four characters a token, as the cap counts them.
    assert len(str(longest)) / 4 < synthesis.GENERATION.reply_tokens
    assert (
        synthesis.GENERATION.context_tokens
        > synthesis.GENERATION.reply_tokens + prompt.PROMPT_BUDGET_CHARS / 4
    )
