"""GET /: one server-rendered page with the top stories, the current job and the figures.

The page is whole without JavaScript; `static/dashboard.js` only moves the progress bar from
the job's event stream and, when the job ends, fetches this page again and swaps its sections
in, so the page is rendered in one place: templates/dashboard.html. No external assets: the
machine may be offline.
"""

from flask import Blueprint, render_template

from storyapp import llmhealth, metrics, queue
from storyapp.models import Job, Story, utcnow

bp = Blueprint("dashboard", __name__)

TOP_STORIES = 20


@bp.get("/")
def page():
    stories = list(Story.listed().limit(TOP_STORIES))  # as GET /stories orders them
    articles, now = Story.articles_of(stories), utcnow()
    # The job to watch: the oldest one still active (the one workers are on), else the last one.
    job = (
        Job.select().where(Job.status.in_(Job.ACTIVE)).order_by(Job.created_at, Job.id).first()
        or Job.select().order_by(Job.created_at.desc(), Job.id).first()
    )
    return render_template(
        "dashboard.html",
        stories=[s.to_dict(articles[s.id], now) | cited(s, articles[s.id]) for s in stories],
        job=job.to_dict() if job else None,
        active=Job.ACTIVE,
        stats=metrics.collect(queued_tasks=queue.pending_count()),
        llm_hosts=llmhealth.workers_view(now),
    )


def cited(story: Story, articles: list) -> dict:
    """The summary's sentences and the key points, each with the articles it cites as links:
    (number among the story's articles, oldest first, url, headline)."""
    number = {a.id: (n, a.url, a.title) for n, a in enumerate(articles, 1)}

    def links(sources: list[int]) -> list[tuple]:
        return [number[i] for i in sources if i in number]

    text = story.text
    return {
        "cited_summary": [(s.text, links(s.sources)) for s in text.summary],
        "cited_points": [(p.text, links(p.sources)) for p in text.key_points],
    }


@bp.app_template_filter()
def seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value // 60:.0f} min {value % 60:.0f} s"


@bp.app_template_filter()
def minute(value: str) -> str:
    """An API timestamp ("2026-11-30T05:45:12Z") to the minute, as a reader scans it."""
    return value[:16].replace("T", " ")


@bp.app_template_filter()
def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


@bp.app_template_filter()
def sources(articles: list[dict]) -> list[dict]:
    """One link per source, to its first article, in the order they reported."""
    first = {}
    for article in articles:
        first.setdefault(article["source"] or "unknown source", article)
    return [{"name": name, "url": a["url"], "title": a["title"]} for name, a in first.items()]
