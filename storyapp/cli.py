"""The `storyapp` command: thin shells over ingest, tasks and the app (CONTRACT.md).

A user error prints one line on stderr and exits non-zero; nothing else does."""

import math
import sys
from pathlib import Path

import click
from peewee import InterfaceError, OperationalError, PeeweeException

from storyapp import db, feeds, ingest, supervisor, tasks
from storyapp.config import ConfigError, Settings
from storyapp.logs import setup_logging
from storyapp.migrations import migrate
from storyapp.models import MAX_ID, Feed, isoformat
from storyapp.progress import describe_job, watch_job
from storyapp.queue import huey

# An export imported once over HTTP may be much bigger than a feed, and someone is watching.
IMPORT_TIMEOUT_S = 120
IMPORT_MAX_BYTES = 32 * 2**20
# channel_request_lookahead lets waitress read from a connection while its request runs, so it
# sees a client leave an event stream (events.py) at once instead of at the next write.
WAITRESS = {"threads": 8, "channel_request_lookahead": 1}


class UserError(click.ClickException):
    pass


def load_settings() -> Settings:
    """The settings, with the database and the queue bound to them. The database is created or
    upgraded too: each command is a process, and a process does that as it starts (README), so
    `storyapp ingest` before `storyapp init` works, as does any command after an upgrade."""
    settings = Settings.from_env()
    tasks.configure(settings)
    migrate(db.bind(settings.database_url))
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """storyapp: turns news articles into stories with a local LLM."""


@cli.command()
def init():
    """Create or migrate the database; safe to run twice."""
    settings = Settings.from_env()
    tasks.configure(settings)
    applied = migrate(db.bind(settings.database_url))
    done = f"applied {', '.join(applied)}" if applied else "already up to date"
    click.echo(f"database {settings.database_url}: {done}")


@cli.command("ingest")
@click.argument("sources", nargs=-1, required=True)
def ingest_command(sources):
    """Import articles once from files or http(s) URLs: JSON, JSONL or an RSS/Atom feed."""
    load_settings()
    for source in sources:
        result = ingest.store(ingest.parse_bytes(read_source(source)))
        line = f"{source}: {result.created} new, {result.duplicates} duplicates"
        if result.rejected:
            line += f", {len(result.rejected)} rejected (first: #{result.rejected[0]['index']}: "
            line += f"{result.rejected[0]['error']})"
        click.echo(line)


def read_source(source: str) -> bytes:
    if source.startswith(("http://", "https://")):
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
    from storyapp import opml

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

    load_settings()
    click.echo(opml.write(list(Feed.select().order_by(Feed.id))), nl=False)


@feeds_group.command("list")
def feeds_list():
    """List the feeds with their last fetch."""
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
    load_settings()
    if not feeds.remove(feed_id):
        raise UserError(f"no feed with id {feed_id}")


@feeds_group.command("refresh")
def feeds_refresh():
    """Fetch every feed now, as the scheduled run does, and store the new articles."""
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


@cli.command()
@click.option(
    "--hours",
    default=24.0,
    type=click.FloatRange(1, 720),
    callback=finite,
    show_default=True,
    help="Time window: articles published in the last HOURS hours.",
)
@click.option("--wait", is_flag=True, help="Show a progress bar until the job ends.")
@click.option("--force", is_flag=True, help="Ignore the cache and unchanged stories.")
def generate(hours, wait, force):
    """Queue a generation job and print its id."""
    load_settings()
    try:
        job, created = tasks.start_job(hours, force)
    except PeeweeException:
        raise  # the database's: one line in main()
    except Exception as exc:  # the queue cannot take it (Redis down); the job ended failed
        raise UserError(f"cannot queue the job: {exc}") from None
    click.echo(job["id"] if created else f"{job['id']} (an equal job is already {job['status']})")
    if wait:
        final = watch_job(job["id"])
        click.echo(describe_job(final))
        if final["status"] != "succeeded":
            sys.exit(1)


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
    so the newest is a minute old) and turn them into stories, end to end."""
    from storyapp.corpus import SAMPLE
    from storyapp.demo import run_demo

    sys.exit(run_demo(load_settings(), sample=articles or SAMPLE))


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
    except (ConfigError, ingest.InputError) as exc:
        click.echo(f"storyapp: error: {exc}", err=True)
        sys.exit(1)
    except (OperationalError, InterfaceError) as exc:  # unreachable, refused, locked
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(f"storyapp: error: database: {first_line}", err=True)
        sys.exit(1)
    except OSError as exc:  # the data directory cannot be made, a file cannot be read
        click.echo(f"storyapp: error: {exc}", err=True)
        sys.exit(1)
    except click.Abort:
        click.echo("storyapp: aborted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
