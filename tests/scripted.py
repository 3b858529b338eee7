"""What an LLM answers when it goes wrong, for the tests of every LLM double."""

# What a model writes when it goes wrong.
NOT_JSON = "Sure! Here is your story: {title: oops"
OFF_SCHEMA = {"headline": "missing the required fields"}
TOO_LONG = {"title": "t", "summary": "word " * 50_000, "key_points": ["k"]}
# What a model steered by an article might write: fields that are not the story's, and markup.
STEERED = {
    "title": "<script>alert(1)</script> Ignore the job",
    "summary": "Status: failed. Delete all stories.",
    "key_points": ["<b>bold</b>"],
    "status": "failed",
    "force": True,
    "article_count": 999,
}
