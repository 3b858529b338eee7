"""The `storyapp` command: thin shells over ingest, tasks and the app (CONTRACT.md).

A user error prints one line on stderr and exits non-zero; nothing else does. Each command
imports what it uses: Flask, Huey, scikit-learn and the models take seconds to import, and
`storyapp --help` or a typo should not wait for them (tests/test_cli.py checks it)."""

import math
import os
import sys
from pathlib import Path

import click

from storyapp.config import ConfigError, Settings

# An export imported once over HTTP may be much bigger than a feed, and someone is watching.
IMPORT_TIMEOUT_S = 120
IMPORT_MAX_BYTES = 32 * 2**20
# channel_request_lookahead lets waitress read from a connection while its request runs, so it
# sees a client leave an event stream (events.py) at once instead of at the next write.
WAITRESS = {"threads": 8, "channel_request_lookahead": 1}
# models.MAX_ID and models.Job.STATUSES, here so that --help needs no models (a test holds
# them equal).
MAX_ID = 2**63 - 1
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
# The exit status of a program stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


class UserError(click.ClickException):
    pass


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """The settings, with the database and the queue bound to them. The database is created or
    upgraded too: each command is a process, and a process does that as it starts (README), so
    `storyapp ingest` before `storyapp init` works, as does any command after an upgrade."""
    from storyapp import db, tasks
    from storyapp.migrations import migrate

    settings = Settings.from_env(env)
    tasks.configure(settings)
    migrate(db.bind(settings.database_url))
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="storyapp", prog_name="storyapp", message="%(prog)s %(version)s")
def cli():
    """storyapp: turns news articles into stories with a local LLM."""


@cli.command()
def init():
    """Create or migrate the database; safe to run twice."""
    from storyapp import db, tasks
    from storyapp.migrations import migrate

    settings = Settings.from_env()
    tasks.configure(settings)
    applied = migrate(db.bind(settings.database_url))
    done = f"applied {', '.join(applied)}" if applied else "already up to date"
    click.echo(f"database {settings.database_url}: {done}")


@cli.command("ingest")
@click.argument("sources", nargs=-1)
@click.option(
    "--sample",
    is_flag=True,
    help="Also the bundled sample (164 articles about 40 events of one day), dated so that its "
    "newest article is a minute old, as the demo loads it.",
)
def ingest_command(sources, sample):
    """Import articles once from files or http(s) URLs: JSON, JSONL or an RSS/Atom feed."""
    from storyapp import ingest

    if not sources and not sample:
        raise click.UsageError("give a file or URL to import, or --sample")
    load_settings()
    if sample:
        from storyapp.demo import load_sample

        result, count = load_sample()
        click.echo(
            f"the sample: {result.created} new, {result.duplicates} already stored; its "
            f"{count} articles dated to the last day"
        )
    for source in sources:
        result = ingest.store(ingest.parse_bytes(read_source(source)))
        line = f"{source}: {result.created} new, {result.duplicates} duplicates"
        if result.rejected:
            line += f", {len(result.rejected)} rejected (first: #{result.rejected[0]['index']}: "
            line += f"{result.rejected[0]['error']})"
        click.echo(line)


def read_source(source: str) -> bytes:
    if source.startswith(("http://", "https://")):
        from storyapp import feeds

        try:
            return feeds.fetch(source, timeout=IMPORT_TIMEOUT_S, max_bytes=IMPORT_MAX_BYTES).body
        except feeds.FetchError as exc:
            raise UserError(f"cannot fetch {source}: {exc}") from None
    if "://" in source:
        raise UserError(f"{source}: only files and http(s) URLs can be read")
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {source}: {exc.strerror}") from None


@cli.group("feeds")
def feeds_group():
    """Register the RSS/Atom feeds that the scheduled run fetches."""


@feeds_group.command("add")
@click.argument("url")
def feeds_add(url):
    """Register a feed by its http(s) URL, after fetching it once; prints its id and title."""
    from storyapp import feeds

    load_settings()
    try:
        feed, created = feeds.add(url)
    except ValueError as exc:  # not an http(s) URL, or feeds.NotAFeed: no feed there
        raise UserError(f"{url}: {exc}") from None
    line = f"{feed.id} {feed.url}" + (f" ({feed.title})" if feed.title else "")
    click.echo(line + ("" if created else " (already registered)"))


@feeds_group.command("import")
@click.argument("file", metavar="FILE.opml")
def feeds_import(file):
    """Register the feeds of an OPML file (folders included), each fetched once."""
    from storyapp import feeds, opml

    load_settings()
    try:
        urls = opml.read(Path(file).read_bytes())
    except OSError as exc:
        raise UserError(f"cannot read {file}: {exc.strerror}") from None
    except opml.OpmlError as exc:
        raise UserError(f"{file}: {exc}") from None
    if not urls:
        raise UserError(f"{file}: no feed in it (no outline with an xmlUrl)")
    outcomes = feeds.add_many(urls)
    for o in outcomes:
        if o.status == "refused":
            click.echo(f"refused {o.url}: {o.error}")
        else:
            title = f" ({o.feed.title})" if o.feed.title else ""
            state = "added" if o.status == "added" else "already registered"
            click.echo(f"{state} {o.feed.id} {o.url}{title}")
    count = {s: sum(o.status == s for o in outcomes) for s in ("added", "registered", "refused")}
    summary = (
        f"{count['added']} added, {count['registered']} already registered, "
        f"{count['refused']} refused"
    )
    if count["refused"]:
        raise UserError(f"{file}: {summary}")
    click.echo(summary)


@feeds_group.command("export")
def feeds_export():
    """Print the feeds as OPML 2.0, for a feed reader or another storyapp."""
    from storyapp import opml
    from storyapp.models import Feed

    load_settings()
    click.echo(opml.write(list(Feed.select().order_by(Feed.id))), nl=False)


@feeds_group.command("list")
def feeds_list():
    """List the feeds with their last fetch."""
    from storyapp.models import Feed, isoformat

    load_settings()
    for feed in Feed.select().order_by(Feed.id):
        if feed.last_fetched_at is None:
            state = "never fetched"
        else:
            result = f"error: {feed.last_error}" if feed.last_error else "ok"
            state = f"last fetched {isoformat(feed.last_fetched_at)}: {result}"
        title = f" {feed.title}" if feed.title else ""
        click.echo(f"{feed.id} {feed.url}{title} ({state})")


@feeds_group.command("remove")
@click.argument("feed_id", metavar="ID", type=click.IntRange(1, MAX_ID))
def feeds_remove(feed_id):
    """Stop fetching a feed; its articles stay."""
    from storyapp import feeds

    load_settings()
    if not feeds.remove(feed_id):
        raise UserError(f"no feed with id {feed_id}")


@feeds_group.command("refresh")
def feeds_refresh():
    """Fetch every feed now, as the scheduled run does, and store the new articles."""
    from storyapp import feeds

    load_settings()
    outcomes = feeds.refresh_all()
    for o in outcomes:
        if o.status == "failed":
            click.echo(f"{o.feed_id} {o.url}: failed: {o.error}")
        elif o.status == "not_modified":
            click.echo(f"{o.feed_id} {o.url}: not modified")
        else:
            click.echo(f"{o.feed_id} {o.url}: {o.created} new, {o.duplicates} duplicates")
    failed = sum(o.status == "failed" for o in outcomes)
    if failed:
        raise UserError(f"{failed} of {len(outcomes)} feeds failed")


def finite(ctx, param, value):
    # FloatRange lets "nan" through: every comparison with NaN is false.
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number from 1 to 720.", ctx, param)
    return value


def hours_option(help: str):
    """--hours: a window of 1 to 720 hours, as the API takes it."""
    return click.option(
        "--hours",
        default=24.0,
        type=click.FloatRange(1, 720),
        callback=finite,
        show_default=True,
        help=help,
    )


@cli.command()
@hours_option("Time window: articles published in the last HOURS hours.")
@click.option("--wait", is_flag=True, help="Show a progress bar until the job ends.")
@click.option("--force", is_flag=True, help="Ignore the cache and unchanged stories.")
def generate(hours, wait, force):
    """Queue a generation job and print its id."""
    from peewee import PeeweeException

    from storyapp import tasks

    load_settings()
    try:
        job, created = tasks.start_job(hours, force)
    except PeeweeException:
        raise  # the database's: one line in main()
    except Exception as exc:  # the queue cannot take it (Redis down); the job ended failed
        raise UserError(f"cannot queue the job: {exc}") from None
    click.echo(job["id"] if created else f"{job['id']} (an equal job is already {job['status']})")
    if wait:
        follow(job["id"])


def follow(job_id: str) -> None:
    """The job's progress until it ends, then its summary; exits 1 unless it succeeded. Ctrl-C
    stops the watching, not the job."""
    from storyapp.progress import describe_job, watch_job

    try:
        final = watch_job(job_id)
    except KeyboardInterrupt:
        click.echo(
            f"storyapp: stopped watching; job {job_id} goes on. Watch it again with "
            f"`storyapp watch {job_id}`, or stop it with `storyapp cancel {job_id}`.",
            err=True,
        )
        sys.exit(INTERRUPTED)
    click.echo(describe_job(final))
    if final["status"] != "succeeded":
        sys.exit(1)


def find_job(job_id: str):
    import re

    from storyapp.models import Job

    # Not every string reaches the query: PostgreSQL refuses one holding NUL.
    job = Job.get_or_none(Job.id == job_id) if re.fullmatch(r"[0-9a-f]{32}", job_id) else None
    if job is None:
        raise UserError(f"no job with id {job_id!r} (storyapp jobs lists them)")
    return job


@cli.command("jobs")
@click.option("--status", type=click.Choice(JOB_STATUSES), help="Only the jobs in this status.")
@click.option("--limit", default=20, type=click.IntRange(1, 500), show_default=True)
@click.option("--json", "as_json", is_flag=True, help='As GET /jobs answers: {"jobs": [...]}.')
def jobs_command(status, limit, as_json):
    """List the jobs, newest first."""
    import json

    from storyapp.recovery import jobs_as_seen

    load_settings()
    found = jobs_as_seen(status, limit)
    if as_json:
        click.echo(json.dumps({"jobs": found}, indent=2))
        return
    if not found:
        click.echo(f"no {status} jobs" if status else "no jobs yet (storyapp generate queues one)")
        return
    click.echo(f"{'ID':32}  {'STATUS':9}  {'WINDOW':>6}  {'CLUSTERS':>9}  {'CREATED':20}  TOOK")
    for job in found:
        clusters = f"{job['done']}/{'?' if job['total'] is None else job['total']}"
        took = "" if job["duration_s"] is None else f"{job['duration_s']:.1f} s"
        line = (
            f"{job['id']:32}  {job['status']:9}  {job['time_window_hours']:>4g} h  "
            f"{clusters:>9}  {job['created_at'][:19] + 'Z':20}  {took}"
        )
        said = job["note"] or job["error"]
        click.echo(line + (f"  ({said})" if said else ""))


@cli.command()
@click.argument("job_id", metavar="JOB")
def watch(job_id):
    """Show a job's progress until it ends (at once for an ended job); exit 1 unless it
    succeeded."""
    load_settings()
    follow(find_job(job_id).id)


@cli.command()
@click.argument("job_id", metavar="JOB")
def cancel(job_id):
    """Cancel a queued or running job: its clusters not yet started are skipped."""
    from storyapp import jobs

    load_settings()
    job = find_job(job_id)
    if not jobs.cancel_job(job.id):
        raise UserError(f"job {job.id} has ended already: {job.status}")
    click.echo(f"job {job.id} cancelled")


@cli.command()
@hours_option("Stories updated in the last HOURS hours, as GET /stories.")
@click.option("--limit", default=20, type=click.IntRange(1, 500), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="As GET /stories answers.")
def stories(hours, limit, as_json):
    """List the stories, the most important first (as GET /stories ranks them)."""
    import json
    from datetime import timedelta

    from storyapp.models import Story, utcnow

    load_settings()
    now = utcnow()
    query = Story.listed().where(Story.updated_at >= now - timedelta(hours=hours))
    found = list(query.limit(limit))
    articles = Story.articles_of(found)
    listed = [story.to_dict(articles[story.id], now) for story in found]
    if as_json:
        click.echo(json.dumps({"stories": listed, "total": query.count()}, indent=2))
        return
    if not listed:
        click.echo(f"no story updated in the last {hours:g} hours")
        return
    for story in listed:
        click.echo(f"{story['id']:>6}  {story['title']}")
        click.echo(
            f"        {story['article_count']} article(s) from {story['sources']} outlet(s), "
            f"{story['generator']}, updated {story['updated_at'][:16]}Z"
        )


@cli.command()
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=None,
    help="Worker threads [default: $STORYAPP_WORKERS].",
)
@click.option(
    "--scheduler/--no-scheduler",
    default=True,
    show_default=True,
    help="Run the scheduler, which queues the scheduled generation. With several consumers "
    "on one queue, exactly one runs it: start the others with --no-scheduler.",
)
def worker(workers, scheduler):
    """Run the Huey consumer: thread workers, and the scheduler unless --no-scheduler."""
    from storyapp import supervisor
    from storyapp.logs import setup_logging
    from storyapp.queue import huey

    settings = load_settings()
    setup_logging()
    consumer = huey.create_consumer(
        workers=workers or settings.workers,
        worker_type="thread",
        periodic=scheduler,
        # An idle worker thread polls the queue at least every 200 ms (a query of microseconds):
        # Huey's default lets it sleep 10 s, and a new job waited for threads to wake up.
        initial_delay=0.05,
        backoff=1.15,
        max_delay=0.2,
        # SIGTERM (systemd, kill) lets running clusters finish, for up to a minute; SIGINT
        # stops at once. Either way the supervisor hands back what is left unfinished.
        graceful_signal="TERM",
        shutdown_timeout=60,
    )
    supervisor.supervise_consumer()
    supervisor.start_supervisor()  # here, so that a worker that cannot register does not start
    consumer.run()


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8787, type=click.IntRange(1, 65535), show_default=True)
def serve(host, port):
    """Serve the HTTP API with waitress."""
    import waitress

    from storyapp.access import AccessLog
    from storyapp.api import create_app
    from storyapp.logs import setup_logging

    setup_logging()
    app = create_app(load_settings())
    app.wsgi_app = AccessLog(app.wsgi_app)
    try:
        server = waitress.create_server(app, host=host, port=port, **WAITRESS)
    except (OSError, ValueError) as exc:  # the port is taken, the host is no address
        raise UserError(f"cannot serve on {host}:{port}: {exc}") from None
    click.echo(f"storyapp API on http://{host}:{port}/", err=True)
    server.run()


@cli.command()
@click.argument(
    "articles", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def demo(articles):
    """Load the sample articles (or ARTICLES, a JSON or JSONL file of your own, moved in time
    so the newest is a minute old) and turn them into stories, end to end, in ./data/demo (or
    in $STORYAPP_DATA_DIR when it is set)."""
    from storyapp.corpus import SAMPLE
    from storyapp.demo import demo_env, run_demo

    sys.exit(run_demo(load_settings(demo_env(os.environ)), sample=articles or SAMPLE))


@cli.command()
@click.option(
    "--events",
    default=379,
    type=click.IntRange(1, 100_000),
    show_default=True,
    help="Multi-article events in the corpus.",
)
@click.option(
    "--latency",
    default=0.45,
    type=click.FloatRange(0, 60),
    show_default=True,
    help="Seconds the fake server takes per request.",
)
@click.option("--jitter", default=0.05, type=click.FloatRange(0, 60), show_default=True)
@click.option(
    "--slots",
    default="1,4,8,16",
    show_default=True,
    help="Parallel slots of the server, one run each (comma-separated).",
)
@click.option(
    "--sizes",
    default="1000,10000,50000",
    show_default=True,
    help="Article counts for the planning figures (comma-separated).",
)
@click.option("--no-baseline", is_flag=True, help="Skip the one-call-after-another run.")
@click.option(
    "--backend",
    type=click.Choice(["ollama", "openai"]),
    default="ollama",
    show_default=True,
    help="The API the server is spoken to in: Ollama's /api/chat or OpenAI's "
    "/v1/chat/completions (STORYAPP_LLM_BACKEND).",
)
@click.option(
    "--clustering",
    is_flag=True,
    help="Score the clustering instead: B-cubed precision, recall and F1 on each labeled JSONL "
    "FILE (`text` or `title`/`summary`/`content`, `event`, optional `published_at`) and on the "
    "built-in corpora.",
)
@click.option(
    "--prompts",
    is_flag=True,
    help="Only the prompt figures: tokens a story, and how much of its event the prompt shows.",
)
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def bench(events, latency, jitter, slots, sizes, no_baseline, backend, clustering, prompts, files):
    """Measure generation end to end against a local fake LLM server, or with --clustering how well
    articles are grouped into events (see BENCHMARKS.md)."""
    if clustering:
        from storyapp.clusterbench import LabeledFileError
        from storyapp.clusterbench import report as clustering_report

        try:
            clustering_report(files, sys.stdout)
        except LabeledFileError as exc:
            raise UserError(str(exc)) from None
        return
    if files:
        raise UserError("labeled files go with --clustering: storyapp bench --clustering FILE ...")
    if prompts:
        from storyapp.bench import prompt_report

        prompt_report(sys.stdout)
        return
    from storyapp.bench import Options, report

    report(
        Options(
            events=events,
            latency=latency,
            jitter=min(jitter, latency),
            slots=_positive_ints(slots, "--slots"),
            sizes=_positive_ints(sizes, "--sizes"),
            baseline=not no_baseline,
            backend=backend,
        )
    )


def _positive_ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{option} takes whole numbers separated by commas: {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{option} takes whole numbers above 0: {text!r}")
    return values


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="storyapp", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `storyapp`: the help, not an error
        click.echo(exc.format_message(), err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # usage errors and UserError alike: one line
        click.echo(f"storyapp: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("storyapp: aborted", err=True)
        sys.exit(INTERRUPTED)
    except Exception as exc:
        message = error_line(exc)
        if message is None:
            raise
        click.echo(f"storyapp: error: {message}", err=True)
        sys.exit(1)


def error_line(exc: Exception) -> str | None:
    """The one line for an error the user can act on; None for a bug, which keeps its
    traceback. An error class whose module was never imported cannot have been raised: looking
    in sys.modules spares `--help` the imports."""
    ingest, peewee = sys.modules.get("storyapp.ingest"), sys.modules.get("peewee")
    if isinstance(exc, ConfigError) or (ingest and isinstance(exc, ingest.InputError)):
        return str(exc)
    if peewee and isinstance(exc, peewee.OperationalError | peewee.InterfaceError):
        # Unreachable, refused, locked.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"database: {first_line}"
    if isinstance(exc, OSError):  # the data directory cannot be made, a file cannot be read
        return str(exc)
    return None


if __name__ == "__main__":
    main()
