from datetime import datetime, timedelta

import pytest

from storyapp.extractive import extractive_story, is_report, lead_story
from storyapp.story import ArticleText

BASE = datetime(2026, 11, 27, 8, 0)


def article(minutes: int, title: str, summary: str = "", content: str = "", source="Wire"):
    return ArticleText(
        title, summary, content, source, BASE + timedelta(minutes=minutes), f"h{minutes}"
    )


def sentences(story) -> list[str]:
    return [s.text for s in story.summary + story.key_points]


OWL = article(
    0,
    "Rare snowy owl at Fenwick Marshes draws hundreds of birdwatchers",
    "A snowy owl has been spotted at Fenwick Marshes nature reserve, drawing birdwatchers "
    "from across the region despite the cold.",
    "By Tom Reeve, Coastal Herald staff\n\n"
    "The bird, a young female, was first reported on Wednesday by volunteer warden Dr. Harriet "
    'Cole. "I thought it was a plastic bag at first. Then it turned its head," she said.\n\n'
    'Snowy owls breed on the Arctic tundra. "We see one a decade, if that.\n\n'
    '"So people are making the trip," said reserve manager Alan Pike.',
)


def test_a_quotation_a_title_and_a_byline_do_not_cut_sentences():
    written = sentences(lead_story(OWL))
    assert written[1:4] == [
        "The bird, a young female, was first reported on Wednesday by volunteer warden Dr. "
        "Harriet Cole.",
        '"I thought it was a plastic bag at first. Then it turned its head," she said.',
        # A quotation left open at a paragraph's end does not swallow the next paragraph.
        "Snowy owls breed on the Arctic tundra.",
    ]
    assert not any("Coastal Herald staff" in s for s in written)


CUP_TIE = [
    article(
        0,
        "Cup preview: Northfield Rovers sweat on Mbeki fitness before Kingsbridge United visit",
        "Northfield Rovers will check on striker Ezra Mbeki before Friday's National Cup tie "
        "against Kingsbridge United.",
    ),
    article(
        600,
        "Mbeki's late header sends Northfield Rovers through against Kingsbridge",
        "Ezra Mbeki's 88th-minute header gave Northfield Rovers a 2-1 win over Kingsbridge "
        "United in the fourth round of the National Cup on Friday night.",
    ),
    article(
        660,
        "Kingsbridge United boss Krol under pressure after cup exit at Northfield",
        "Kingsbridge United manager Tomasz Krol faces questions from the board after his side "
        "lost 2-1 at second-tier Northfield Rovers.",
    ),
    article(
        700,
        "What Northfield Rovers' cup run means for Mbeki and Kingsbridge United",
        "Ezra Mbeki's winner against Kingsbridge United puts Northfield Rovers in the fifth "
        "round of the National Cup for the first time since 2011.",
    ),
]


def test_the_title_reports_what_happened_not_what_was_to_come():
    # The preview and the explainer share the most words with the rest: each was central.
    assert extractive_story(CUP_TIE[:3]).title == CUP_TIE[1].title
    assert extractive_story(CUP_TIE[1:]).title == CUP_TIE[1].title


def test_when_no_headline_reports_the_title_is_the_most_central_of_the_others():
    others = [CUP_TIE[0], CUP_TIE[3]]
    assert extractive_story(others).title in {a.title for a in others}


@pytest.mark.parametrize(
    "headline",
    [
        "Metro Transit board to vote on first fare rise in six years",
        "Government faces rebellion as housing bill heads for final vote",
        "Eastvale power cuts could last until Monday, utility warns",
        "Skylark strike: your rights to refunds and compensation",
        "Storm Brenna batters the south coast: what we know",
        "Housing bill explained: will it make homes cheaper?",
        "Live: Storm Brenna makes landfall",
        "'It hit his shoulder': Whelan fumes at VAR after Harbour City draw",
        "Opinion: the Reserve Bank should have cut rates",
    ],
)
def test_previews_explainers_live_pages_and_voices_do_not_report(headline):
    assert not is_report(headline)


@pytest.mark.parametrize(
    "headline",
    [
        "Metro Transit board approves fare rise to $3.10 from February",
        "Nurses and Ridgeport hospitals agree to resume talks with mediator",
        "Millbrook residents told to boil water after E. coli found in supply",
        "Kestria quake toll climbs to 83 as hopes of finding survivors fade",
        "Sixty-strong rescue team flies to Kestria after deadly earthquake",
        "46,000 homes without power after Storm Brenna; repairs could take days",
        "'The Salt Road' wins Golden Lantern at Portmere Film Festival",
        "Striking nurses leave picket line to help during bridge emergency",
    ],
)
def test_reports_are_reports(headline):
    assert is_report(headline)
