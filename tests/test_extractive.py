from datetime import datetime, timedelta

from storyapp.extractive import lead_story
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
