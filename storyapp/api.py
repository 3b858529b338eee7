"""The Flask JSON API (CONTRACT.md): answers at once, hands generation to the queue."""

import hmac
import json
import logging
import math
import re
from datetime import datetime, timedelta

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from peewee import InterfaceError, OperationalError, SqliteDatabase, fn
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from storyapp import (
    dashboard,
    events,
    feeds,
    heartbeat,
    ingest,
    jobs,
    llmhealth,
    metrics,
    queue,
    reader,
    syndication,
    tasks,
)
from storyapp.config import Settings
from storyapp.db import database
from storyapp.models import MAX_ID, Article, Feed, Job, LLMCall, Story, StoryVersion, utcnow
from storyapp.recovery import Orphans, jobs_as_seen
from storyapp.story import CATEGORIES

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
JOB_ID = re.compile(r"[0-9a-f]{32}")  # models.new_job_id


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def create_app(settings: Settings | None = None) -> Flask:
    """The app, with the database and the queue bound to `settings`. It migrates nothing:
    what starts the web process does (`storyapp serve`, wsgi.py)."""
    settings = settings or Settings.from_env()
    tasks.configure(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["STORYAPP"] = settings
    app.json.sort_keys = False
    app.extensions["storyapp.streams"] = events.StreamSlots(events.MAX_STREAMS)
    app.url_map.converters["id"] = IdConverter
    app.register_blueprint(bp)
    app.register_blueprint(dashboard.bp)
    # No connection is opened before a request: the first query opens it, so /health can
    # still answer (503) when the database cannot be reached.
    app.before_request(_check_token)
    app.after_request(_remember_token)
    app.teardown_request(_close_connection)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(OperationalError, _database_unavailable)
    app.register_error_handler(InterfaceError, _database_unavailable)
    app.register_error_handler(Exception, _unexpected_error)
    return app


class IdConverter(IntegerConverter):
    """A row id in a path: one too large for any engine is a 404, not an overflow in the
    driver (a 500 on SQLite)."""

    def __init__(self, url_map, *args, **kwargs):
        super().__init__(url_map, max=MAX_ID)


def _close_connection(exc):
    if not database.is_closed():
        database.close()


# A browser cannot send an Authorization header on a link or a form, nor a feed reader on its
# polls: reading also takes the token as `?token=`, which sets this cookie for the pages after.
TOKEN_PARAM = "token"
TOKEN_COOKIE = "storyapp_token"
READING = ("GET", "HEAD")
OPEN_TO_ALL = ("/health",)  # a load balancer's check carries no token


def _check_token():
    settings = current_app.config["STORYAPP"]
    if request.method == "OPTIONS":
        return None
    if request.method in READING:
        if settings.read_token is None or request.path in OPEN_TO_ALL:
            return None
        # The API token is the stronger one: it reads too.
        accepted = [settings.read_token, settings.api_token]
        given = _bearer() or request.args.get(TOKEN_PARAM) or request.cookies.get(TOKEN_COOKIE)
        if not _matches(given, accepted):
            raise ApiError(
                401,
                "unauthorized",
                "this server needs the read token: Authorization: Bearer <token>, "
                f"or ?{TOKEN_PARAM}=<token> in a browser or a feed reader",
            )
        if request.args.get(TOKEN_PARAM) is not None:
            g.token_for_cookie = given
        return None
    # Every change (POST, and DELETE of a feed) needs the API token, in the header only: a
    # cookie would be sent along by any page that makes the browser post here.
    if settings.api_token is not None and not _matches(_bearer(), [settings.api_token]):
        raise ApiError(401, "unauthorized", "this server needs Authorization: Bearer <token>")
    return None


def _bearer() -> str | None:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return given if scheme.lower() == "bearer" else None


def _matches(given: str | None, tokens: list[str | None]) -> bool:
    if given is None:
        return False
    # compare_digest takes as long whatever prefix matches: the token cannot be guessed by
    # timing. Each token is compared, so neither is told apart by time either.
    found = [
        hmac.compare_digest(given.encode(errors="surrogatepass"), t.encode(errors="surrogatepass"))
        for t in tokens
        if t is not None
    ]
    return any(found)


def _remember_token(response: Response) -> Response:
    token = g.pop("token_for_cookie", None)
    if token is not None:
        response.set_cookie(
            TOKEN_COOKIE, token, httponly=True, samesite="Lax", secure=request.is_secure
        )
    if current_app.config["STORYAPP"].read_token is not None:
        # A page opened with ?token= must not hand it to the sites its links lead to.
        response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _api_error(error: ApiError):
    body = {"error": {"code": error.code, "message": error.message, **error.extra}}
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
    if error.status == 429:
        headers["Retry-After"] = "5"
    return jsonify(body), error.status, headers


def _http_error(error: HTTPException):
    code = {
        404: "not_found",
        405: "method_not_allowed",
        413: "body_too_large",
    }.get(error.code, (error.name or "error").lower().replace(" ", "_"))
    message = error.description or error.name
    if error.code == 413:
        limit = request.max_content_length or MAX_BODY_BYTES
        size = f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit} bytes"
        message = f"the body is larger than {size}"
    # Keep the exception's own headers (a 405's Allow), not its HTML content type.
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    return jsonify({"error": {"code": code, "message": message}}), error.code, headers


# What SQLite says when the file cannot be reached or written, rather than of the SQL (its
# OperationalError covers both); PostgreSQL's OperationalError is the connection's alone.
SQLITE_UNAVAILABLE = ("unable to open", "locked", "disk i/o", "readonly")


def _database_unavailable(error: Exception):
    # Unreachable, refused, gone, or locked for longer than the busy timeout: not the
    # client's fault, and worth trying again.
    unreachable = any(words in str(error).lower() for words in SQLITE_UNAVAILABLE)
    if isinstance(database.obj, SqliteDatabase) and not unreachable:
        return _unexpected_error(error)
    log.warning("database unavailable on %s %s", request.method, request.path, exc_info=error)
    message = "the database cannot be reached; try again shortly"
    return (
        jsonify({"error": {"code": "database_unavailable", "message": message}}),
        503,
        {"Retry-After": "5"},
    )


def _unexpected_error(error: Exception):
    log.exception("unexpected error on %s %s", request.method, request.path)
    body = {"error": {"code": "internal_error", "message": "the server hit an unexpected error"}}
    return jsonify(body), 500


# --- input ---------------------------------------------------------------------------------


def json_body(default=None):
    raw = request.get_data(cache=False)
    if not raw.strip() and default is not None:
        return default
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "send JSON with Content-Type: application/json"
        )
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "the body is not valid UTF-8") from None
    except ValueError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "the body nests too deeply") from None


def number_in_range(value, name: str, low: float, high: float) -> float:
    # An int is checked as is: math.isfinite() overflows on one too big for a float.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise ApiError(422, "invalid_value", f"{name} must be a number from {low:g} to {high:g}")
    if not low <= value <= high:
        raise ApiError(
            422, "invalid_value", f"{name} must be from {low:g} to {high:g}, got {str(value)[:20]}"
        )
    return float(value)


def query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    # Plain digits only: int() would also take "1_0", " 1" and other scripts' digits; and
    # few, so int() does not refuse it (it does past 4300 digits).
    if not re.fullmatch(r"-?[0-9]{1,18}", raw):
        raise ApiError(422, "invalid_value", f"{name} must be a whole number from {low} to {high}")
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(422, "invalid_value", f"{name} must be from {low} to {high}")
    return value


def page() -> tuple[int, int]:
    return query_int("limit", 50, 1, 500), query_int("offset", 0, 0, 10**9)


def since_hours() -> datetime:
    return utcnow() - timedelta(hours=query_int("hours", 24, 1, 720))


# --- articles ------------------------------------------------------------------------------


@bp.post("/articles")
def post_articles():
    try:
        records = ingest.records_from(json_body())
        result = ingest.store(records)
    except ingest.InputError as exc:
        raise ApiError(422, "invalid_articles", str(exc), **exc.details) from None
    return jsonify(result.to_dict()), 201


@bp.get("/articles")
def list_articles():
    limit, offset = page()
    query = Article.select().where(Article.published_at >= since_hours())
    rows = (
        query.order_by(Article.published_at.desc(), Article.id.desc()).limit(limit).offset(offset)
    )
    return {"articles": [a.to_dict() for a in rows], "total": query.count()}


# --- jobs ----------------------------------------------------------------------------------


@bp.post("/stories/generate")
def generate():
    body = json_body(default={})
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_value", "the body must be a JSON object")
    unknown = set(body) - {"time_window_hours", "force"}
    if unknown:
        raise ApiError(422, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    hours = number_in_range(body.get("time_window_hours", 24), "time_window_hours", 1, 720)
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise ApiError(422, "invalid_value", "force must be true or false")
    try:
        job, created = tasks.start_job(hours, force)
    except Exception:
        log.exception("could not queue a job")
        raise ApiError(503, "queue_unavailable", "the job queue cannot take jobs now") from None
    answer = {"job_id": job["id"], "status": job["status"], "status_url": f"/jobs/{job['id']}"}
    if not created:
        return {**answer, "deduplicated": True}, 200
    return answer, 202


def get_job_or_404(job_id: str) -> Job:
    # Not every string reaches the query: PostgreSQL refuses one holding NUL (a 500), and an
    # id that cannot be a job's is not one.
    job = Job.get_or_none(Job.id == job_id) if JOB_ID.fullmatch(job_id) else None
    if job is None:
        raise ApiError(404, "not_found", f"no job with id {job_id!r}")
    return job


# Reading writes nothing: a job no worker is left to finish is shown failed (Orphans), and is
# recorded so by the next worker to start or the next request for a job.


@bp.get("/jobs/<job_id>")
def get_job(job_id):
    return Orphans.as_of().seen(get_job_or_404(job_id)).to_dict()


@bp.get("/jobs/<job_id>/events")
def job_events(job_id):
    get_job_or_404(job_id)
    streams = current_app.extensions["storyapp.streams"]
    if not streams.take():
        raise ApiError(
            429,
            "too_many_streams",
            f"{streams.limit} event streams are open already: poll GET /jobs/{job_id} instead",
        )
    stream = events.job_events(job_id, request.environ.get("waitress.client_disconnected"))
    response = Response(stream, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # a proxy in front must not hold events back
    # Released when the server closes the response, even one whose stream never started.
    response.call_on_close(streams.release)
    return response


@bp.get("/jobs")
def list_jobs():
    limit = query_int("limit", 50, 1, 500)
    status = request.args.get("status")
    if status and status not in Job.STATUSES:
        raise ApiError(422, "invalid_value", f"status must be one of {', '.join(Job.STATUSES)}")
    return {"jobs": jobs_as_seen(status, limit)}


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id):
    get_job_or_404(job_id)
    jobs.cancel_job(job_id)
    return get_job_or_404(job_id).to_dict(), 202


# --- stories -------------------------------------------------------------------------------


# A search or an outlet's name longer than this is no search a reader typed.
FILTER_MAX_CHARS = 200


def query_text(name: str) -> str | None:
    """A free-text query parameter; absent or blank is no filter."""
    value = request.args.get(name, "").strip()
    if len(value) > FILTER_MAX_CHARS:
        raise ApiError(
            422, "invalid_value", f"{name} must be at most {FILTER_MAX_CHARS} characters"
        )
    if any(ord(c) < 32 for c in value):  # PostgreSQL stores no NUL; no name holds a control
        raise ApiError(422, "invalid_value", f"{name} must not hold control characters")
    return value or None


def story_filters() -> dict:
    """The filters of a story listing (GET /stories, its page and the feeds), as
    Story.filtered takes them."""
    category = query_text("category")
    if category is not None and category not in CATEGORIES:
        raise ApiError(422, "invalid_value", f"category must be one of {', '.join(CATEGORIES)}")
    return {"category": category, "source": query_text("source"), "text": query_text("q")}


def listed_stories(default_order: str = "importance") -> tuple:
    """The stories a listing asks for: (query of them all, their page as a list, limit,
    offset, the start of the window)."""
    limit, offset = page()
    order = request.args.get("sort", default_order)
    if order not in Story.ORDERS:
        raise ApiError(422, "invalid_value", f"sort must be one of {', '.join(Story.ORDERS)}")
    since = since_hours()
    query = Story.filtered(Story.listed(order).where(Story.updated_at >= since), **story_filters())
    return query, list(query.limit(limit).offset(offset)), limit, offset, since


@bp.get("/stories")
def list_stories():
    query, stories, limit, offset, since = listed_stories()
    articles, now = Story.articles_of(stories), utcnow()
    listed = [s.to_dict(articles[s.id], now) for s in stories]
    total = query.count()
    if reader.wants_html():
        return reader.negotiated(reader.list_page(listed, total, limit, offset, since))
    return reader.negotiated({"stories": listed, "total": total})


def get_story_or_404(story_id: int) -> Story:
    story = Story.get_or_none(Story.id == story_id)
    if story is None:
        raise ApiError(404, "not_found", f"no story with id {story_id}")
    return story


@bp.get("/stories/<id:story_id>")
def get_story(story_id):
    story = get_story_or_404(story_id)
    if reader.wants_html():
        return reader.negotiated(reader.story_page(story))
    calls = LLMCall.of_versions(story.id, [story.version])[story.version]
    return reader.negotiated({**story.to_dict(), "calls": [call.link() for call in calls]})


@bp.get("/stories/<id:story_id>/versions")
def list_story_versions(story_id):
    story = get_story_or_404(story_id)
    limit, offset = page()
    query = StoryVersion.select().where(StoryVersion.story == story.id)
    rows = list(query.order_by(StoryVersion.version.desc()).limit(limit).offset(offset))
    calls = LLMCall.of_versions(story.id, [version.version for version in rows])
    return {
        "story_id": story.id,
        "versions": [
            {**version.to_dict(), "calls": [call.link() for call in calls[version.version]]}
            for version in rows
        ],
        "total": query.count(),
    }


@bp.get("/calls/<id:call_id>")
def get_call(call_id):
    call = LLMCall.get_or_none(LLMCall.id == call_id)
    if call is None:
        raise ApiError(404, "not_found", f"no LLM call with id {call_id}")
    return call.to_dict()


# --- feeds out -----------------------------------------------------------------------------
# The stories of GET /stories, with its filters, newest update first unless `sort` says
# otherwise: a reader shows items by date anyway, and a page of the most recent is what it polls.


def feed_stories() -> list[dict]:
    _, stories, *_ = listed_stories(default_order="recent")
    articles, now = Story.articles_of(stories), utcnow()
    return [s.to_dict(articles[s.id], now) for s in stories]


def feed_response(body: bytes | str, content_type: str) -> Response:
    # Readers poll: one sending back the ETag of what it has gets a 304 with no body.
    response = Response(body, content_type=content_type)
    response.add_etag()
    return response.make_conditional(request)


@bp.get("/feed.xml")
def rss_feed():
    body = syndication.rss(feed_stories(), syndication.Site.of_request())
    return feed_response(body, syndication.RSS_TYPE)


@bp.get("/feed.atom")
def atom_feed():
    body = syndication.atom(feed_stories(), syndication.Site.of_request())
    return feed_response(body, syndication.ATOM_TYPE)


@bp.get("/feed.json")
def json_feed():
    body = syndication.json_feed(feed_stories(), syndication.Site.of_request())
    return feed_response(json.dumps(body, ensure_ascii=False), syndication.JSON_TYPE)


# --- feeds ---------------------------------------------------------------------------------


@bp.post("/feeds")
def post_feed():
    body = json_body()
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_value", 'the body must be a JSON object: {"url": "https://…"}')
    unknown = set(body) - {"url"}
    if unknown:
        raise ApiError(422, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    try:
        feed, created = feeds.add(body.get("url"))
    except feeds.NotAFeed as exc:
        raise ApiError(422, "not_a_feed", f"no RSS/Atom feed at that URL: {exc}") from None
    except ValueError as exc:
        raise ApiError(422, "invalid_value", str(exc)) from None
    return feed.to_dict(), 201 if created else 200


@bp.get("/feeds")
def list_feeds():
    return {"feeds": [feed.to_dict() for feed in Feed.select().order_by(Feed.id)]}


@bp.delete("/feeds/<id:feed_id>")
def delete_feed(feed_id):
    if not feeds.remove(feed_id):
        raise ApiError(404, "not_found", f"no feed with id {feed_id}")
    return "", 204


# --- figures -------------------------------------------------------------------------------


@bp.get("/stats")
def stats():
    return metrics.collect(queued_tasks=queue.pending_count())


@bp.get("/metrics")
def prometheus_metrics():
    text = metrics.prometheus_text(metrics.collect(queued_tasks=queue.pending_count()))
    return Response(text, content_type=metrics.PROMETHEUS_CONTENT_TYPE)


# --- health --------------------------------------------------------------------------------


@bp.get("/health")
def health():
    report = {"status": "ok"}
    try:
        database.execute_sql("SELECT 1")
        report["database"] = {"ok": True, "articles": Article.select(fn.COUNT(Article.id)).scalar()}
    except Exception as exc:
        report.update(status="down", database={"ok": False, "error": str(exc)})
        return report, 503
    try:
        report["queue"] = {"ok": True, "pending_tasks": queue.huey.pending_count()}
    except Exception as exc:
        report.update(status="degraded", queue={"ok": False, "error": str(exc)})
    # As the workers see it, who make the calls (and may be configured otherwise): the web
    # process does not ask the LLM itself. No live worker's report: unknown, and degraded, as
    # nothing says a story can be written.
    report["llm"] = llmhealth.workers_view()
    if not report["llm"]["known"]:
        # No worker has reported: the web process's own check keeps the contract's booleans,
        # said to be its own (its settings may not be the workers'); still degraded below.
        own = tasks.llm().check()
        report["llm"].update(
            reachable=own["reachable"],
            model_available=own["model_available"],
            note=report["llm"]["note"]
            + "; reachable and model_available are the web process's own check",
        )
    if not llmhealth.healthy(report["llm"]):
        report["status"] = "degraded"
    report["workers"] = {"alive": heartbeat.alive().count()}
    return report
