import functools
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import article, free_port, running_consumer, shifted_sample
from feedserver import atom
from workers import wait_until

from storyapp import cli, jobs, models, progress
from storyapp.cli import main
from storyapp.db import database
from storyapp.models import Article, Job, Story
from storyapp.progress import progress_postfix, watch_job

RSS = b"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Harbour &amp; Coast Wire</title>
<link>https://wire.example/</link><description>Local news</description>
<item><title>Storm &lt;b&gt;floods&lt;/b&gt; the harbour</title><link>https://wire.example/storm</link>
<description>Winds and rain.</description><pubDate>Tue, 02 Jan 2024 15:04:05 +0200</pubDate></item>
<item><title>Ferry service resumes</title><link>https://wire.example/ferry</link></item>
</channel></rss>
"""

OTHER_SETTINGS = (
    "STORYAPP_DATABASE_URL",
    "STORYAPP_QUEUE_URL",
    "STORYAPP_MODEL",
    "STORYAPP_LLM_CONCURRENCY",
    "STORYAPP_LLM_TIMEOUT",
    "STORYAPP_WORKERS",
    "STORYAPP_API_TOKEN",
    "STORYAPP_QUEUE_NAME",
    "STORYAPP_LLM_CONCURRENCY_SCOPE",
)


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name in OTHER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STORYAPP_DATA_DIR", str(tmp_path / "data"))
    # No LLM is needed by these commands; a closed port proves none is contacted.
    monkeypatch.setenv("OLLAMA_HOST", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("STORYAPP_SCHEDULE", "off")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    if database.obj is not None:  # a usage error ends before anything binds it
        database.close()


@pytest.fixture
def run(env, capsys):
    """Runs the CLI in-process: (exit status, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    assert code != 0
    assert "Traceback" not in err
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert err.startswith("storyapp: error: "), err
    for fragment in fragments:
        assert fragment in err
    return err


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


# --- init ---------------------------------------------------------------------------------------


def test_init_twice(run, env):
    code, out, err = run("init")
    assert code == 0, err
    assert "applied m001_initial" in out
    assert (env / "data" / "storyapp.db").exists()
    code, out, err = run("init")
    assert code == 0, err
    assert "already up to date" in out
    assert "applied" not in out


def test_bad_config_is_one_line(run, monkeypatch):
    monkeypatch.setenv("STORYAPP_LLM_CONCURRENCY", "abc")
    for command in (["init"], ["generate"], ["ingest", "whatever.json"]):
        code, out, err = run(*command)
        assert_one_line_error(code, err, "STORYAPP_LLM_CONCURRENCY")
        assert out == ""


def test_an_unreachable_database_is_one_line(run, monkeypatch):
    port = free_port()
    monkeypatch.setenv("STORYAPP_DATABASE_URL", f"postgresql://u:secret@127.0.0.1:{port}/x")
    for command in (["init"], ["generate"]):
        code, out, err = run(*command)
        assert_one_line_error(code, err, "database: connection failed")
        assert "secret" not in err and out == ""


def test_an_unreachable_queue_is_one_line(run, monkeypatch):
    monkeypatch.setenv("STORYAPP_QUEUE_URL", f"redis://127.0.0.1:{free_port()}/0")
    code, out, err = run("generate")
    assert_one_line_error(code, err, "cannot queue the job: ")
    assert Job.get().status == "failed"  # and the job it could not queue says why
    assert "could not queue" in Job.get().error


def test_bad_schedule_is_one_line(run, monkeypatch):
    monkeypatch.setenv("STORYAPP_SCHEDULE", "every hour")
    code, _, err = run("generate")
    assert_one_line_error(code, err, "STORYAPP_SCHEDULE")


# --- ingest ---------------------------------------------------------------------------------------


def test_ingest_jsonl_and_json_files(run, env):
    jsonl = write_jsonl(
        env / "a.jsonl", [article(1, "One"), article(2, "Two"), article(1, "One again")]
    )
    code, out, err = run("ingest", str(jsonl))
    assert code == 0, err
    assert out == f"{jsonl}: 2 new, 1 duplicates\n"

    document = env / "b.json"
    document.write_text(
        json.dumps({"articles": [article(2, "Two"), {"title": "no url"}, article(3, "Three")]})
    )
    code, out, err = run("ingest", str(document))
    assert code == 0, err
    assert out.startswith(f"{document}: 1 new, 1 duplicates, 1 rejected (first: #1: url")
    assert sorted(a.url for a in Article.select()) == [
        f"https://news.example/{n}" for n in (1, 2, 3)
    ]


def test_ingest_takes_the_fields_news_exports_carry_and_refuses_bad_ones(run, env):
    extras = {"author": "Ann Reporter", "image": "https://news.example/1.jpg", "language": "en"}
    good = {**article(1, "One"), **extras, "categories": ["Weather"]}
    bad = {**article(2, "Two"), "author": {"name": "Bo"}}
    jsonl = write_jsonl(env / "export.jsonl", [good, bad])
    code, out, err = run("ingest", str(jsonl))
    assert code == 0, err
    assert out.startswith(f"{jsonl}: 1 new, 0 duplicates, 1 rejected (first: #1: author must be")
    assert out.endswith("characters)\n")
    code, _, err = run("ingest", str(write_jsonl(env / "bad.jsonl", [bad])))
    assert_one_line_error(code, err, "every article was invalid; first: author must be a string")


def test_ingest_several_sources_in_one_call(run, env):
    first = write_jsonl(env / "1.jsonl", [article(1, "One")])
    second = env / "2.json"
    second.write_text(json.dumps([article(1, "One"), article(2, "Two")]))
    code, out, _ = run("ingest", str(first), str(second))
    assert code == 0
    assert out.splitlines() == [f"{first}: 1 new, 0 duplicates", f"{second}: 1 new, 1 duplicates"]


def test_ingest_rss_file(run, env):
    feed = env / "feed.xml"
    feed.write_bytes(RSS)
    code, out, err = run("ingest", str(feed))
    assert code == 0, err
    assert out == f"{feed}: 2 new, 0 duplicates\n"
    storm = Article.get(Article.url == "https://wire.example/storm")
    assert storm.title == "Storm floods the harbour"
    assert storm.source == "Harbour & Coast Wire"


def test_ingest_missing_file(run, env):
    code, out, err = run("ingest", str(env / "missing.jsonl"))
    assert_one_line_error(code, err, "cannot read", "missing.jsonl", "No such file")
    assert out == ""


def test_ingest_a_directory(run, env):
    code, _, err = run("ingest", str(env))
    assert_one_line_error(code, err, "cannot read")


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("this is not json\n", "not JSON"),
        ("", "empty"),
        ('[{"title": "no url"}]', "every article was invalid"),
        ("[]", "no articles"),
        ("[" * 100_000 + "]" * 100_000, "nests too deeply"),
    ],
)
def test_ingest_unusable_file_is_one_line(run, env, content, fragment):
    path = env / "bad.json"
    path.write_text(content)
    code, _, err = run("ingest", str(path))
    assert_one_line_error(code, err, fragment)
    assert Article.select().count() == 0


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://news.example/feed.xml"])
def test_ingest_refuses_other_url_schemes(run, url):
    code, _, err = run("ingest", url)
    assert_one_line_error(code, err, url, "only files and http(s) URLs")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def http_dir(tmp_path):
    """A tiny HTTP server over a directory: (directory, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_ingest_http_url(run, http_dir):
    root, base = http_dir
    (root / "export.json").write_text(json.dumps([article(1, "One"), article(2, "Two")]))
    (root / "feed.xml").write_bytes(RSS)
    code, out, err = run("ingest", f"{base}/export.json", f"{base}/feed.xml")
    assert code == 0, err
    assert out.splitlines() == [
        f"{base}/export.json: 2 new, 0 duplicates",
        f"{base}/feed.xml: 2 new, 0 duplicates",
    ]
    assert Article.select().count() == 4


def test_ingest_http_errors_are_one_line(run, http_dir):
    _, base = http_dir
    code, _, err = run("ingest", f"{base}/missing.json")
    assert_one_line_error(code, err, "cannot fetch", "404")
    code, _, err = run("ingest", f"http://127.0.0.1:{free_port()}/closed.json")
    assert_one_line_error(code, err, "cannot fetch")


def test_ingest_needs_a_source(run):
    code, _, err = run("ingest")
    assert_one_line_error(code, err, "give a file or URL to import, or --sample")


def test_the_readme_steps_work_with_the_bundled_sample(run, env):
    # The sample is dated days ago: as it is, a 24-hour window holds none of it.
    code, out, err = run("ingest", "--sample")
    assert code == 0, err
    assert out == "the sample: 164 new, 0 already stored; its 164 articles dated to the last day\n"
    with running_consumer():
        code, out, err = run("generate", "--wait")
    assert code == 0, err
    final = Job.get_by_id(out.split()[0]).to_dict()
    assert final["total"] >= 30 and final["note"] is None


# --- feeds ----------------------------------------------------------------------------------------


def test_feeds_add_list_remove(run, feed_server):
    feed_server.publish("/wire.rss", RSS)
    feed_server.publish("/other.atom", atom("Valley News", []), "application/atom+xml")
    wire, other = feed_server.url("/wire.rss"), feed_server.url("/other.atom")
    code, out, err = run("feeds", "add", wire)
    assert (code, out) == (0, f"1 {wire} (Harbour & Coast Wire)\n"), err
    code, out, _ = run("feeds", "add", wire)
    assert (code, out) == (0, f"1 {wire} (Harbour & Coast Wire) (already registered)\n")
    run("feeds", "add", other)
    code, out, _ = run("feeds", "list")
    assert out.splitlines() == [
        f"1 {wire} Harbour & Coast Wire (never fetched)",
        f"2 {other} Valley News (never fetched)",
    ]
    assert run("feeds", "remove", "1")[:2] == (0, "")
    assert run("feeds", "list")[1] == f"2 {other} Valley News (never fetched)\n"
    code, _, err = run("feeds", "remove", "1")
    assert_one_line_error(code, err, "no feed with id 1")


def test_feeds_add_refuses_what_is_not_a_feed(run, feed_server):
    page = b"<html><head><title>Wire</title></head></html>"
    feed_server.publish("/index.html", page, "text/html")
    for path, reason in (("/gone.rss", "HTTP 404"), ("/index.html", "an HTML page")):
        code, out, err = run("feeds", "add", feed_server.url(path))
        assert_one_line_error(code, err, feed_server.url(path), reason)
        assert out == ""
    assert run("feeds", "list")[1] == ""


OPML = """<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0"><head><title>My reader</title></head><body>
  <outline text="News">
    <outline text="Harbour" type="rss" xmlUrl="{wire}"/>
    <outline text="Deeper"><outline text="Valley" type="rss" xmlUrl="{other}"/></outline>
  </outline>
  <outline text="Harbour again" type="rss" xmlUrl=" {wire} "/>
  <outline text="Gone" type="rss" xmlUrl="{gone}"/>
  <outline text="A page" type="rss" xmlUrl="{page}"/>
  <outline text="Local" type="rss" xmlUrl="file:///etc/passwd"/>
  <outline text="A folder with no feed"/>
</body></opml>
"""


def test_feeds_import_and_export_opml(run, feed_server, env, monkeypatch):
    feed_server.publish("/wire.rss", RSS)
    feed_server.publish("/other.atom", atom("Valley News", []), "application/atom+xml")
    feed_server.publish("/page.html", b"<!doctype html><html><p>Hi</p></html>", "text/html")
    wire, other, gone, page = (
        feed_server.url(p) for p in ("/wire.rss", "/other.atom", "/gone.rss", "/page.html")
    )
    run("feeds", "add", other)  # registered already: skipped, not fetched again
    opml_file = env / "reader.opml"
    opml_file.write_text(OPML.format(wire=wire, other=other, gone=gone, page=page))

    code, out, err = run("feeds", "import", str(opml_file))
    assert out.splitlines() == [
        f"added 2 {wire} (Harbour & Coast Wire)",
        f"already registered 1 {other} (Valley News)",
        f"refused {gone}: HTTP 404 Not Found",
        f"refused {page}: not an RSS/Atom feed: an HTML page",
        "refused file:///etc/passwd: url must be an absolute http or https URL",
    ]
    assert_one_line_error(code, err, "1 added, 1 already registered, 3 refused")
    assert len(feed_server.headers_sent_to("/wire.rss")) == 1
    assert len(feed_server.headers_sent_to("/other.atom")) == 1

    code, out, err = run("feeds", "import", str(opml_file))  # again: nothing new, only refusals
    assert "0 added, 2 already registered, 3 refused" in err

    code, exported, _ = run("feeds", "export")
    assert code == 0
    root = ET.fromstring(exported)
    assert (root.tag, root.get("version")) == ("opml", "2.0")
    outlines = [o.attrib for o in root.find("body").iter("outline")]
    assert outlines == [
        {
            "type": "rss",
            "text": "Valley News",
            "title": "Valley News",
            "xmlUrl": other,
        },
        {
            "type": "rss",
            "text": "Harbour & Coast Wire",
            "title": "Harbour & Coast Wire",
            "xmlUrl": wire,
            "htmlUrl": "https://wire.example/",
        },
    ]
    # What one storyapp exports another imports.
    (env / "export.opml").write_text(exported)
    monkeypatch.setenv("STORYAPP_DATA_DIR", str(env / "another"))
    code, out, _ = run("feeds", "import", str(env / "export.opml"))
    assert (code, out.splitlines()[-1]) == (0, "2 added, 0 already registered, 0 refused")


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("<html><body>hi</body></html>", "not an OPML file: the document is <html>"),
        ("<opml version='2.0'><body>", "not an OPML file: no element found"),
        ("<opml version='2.0'><body><outline text='x'/></body></opml>", "no feed in it"),
    ],
)
def test_feeds_import_refuses_what_is_not_opml(run, env, content, fragment):
    (env / "bad.opml").write_text(content)
    code, out, err = run("feeds", "import", str(env / "bad.opml"))
    assert_one_line_error(code, err, fragment)
    code, _, err = run("feeds", "import", str(env / "missing.opml"))
    assert_one_line_error(code, err, "cannot read", "No such file")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "javascript:alert(1)", "feed.xml"])
def test_feeds_add_refuses_what_is_not_an_http_url(run, url):
    code, out, err = run("feeds", "add", url)
    assert_one_line_error(code, err, url, "http or https")
    assert out == ""


def test_feeds_remove_needs_a_number(run):
    code, _, err = run("feeds", "remove", "one")
    assert_one_line_error(code, err, "'one' is not a valid integer")


def test_feeds_remove_of_an_id_no_engine_stores_is_one_line(run):
    code, _, err = run("feeds", "remove", "99999999999999999999999")
    assert_one_line_error(code, err, "99999999999999999999999")


def test_serve_on_a_port_in_use_is_one_line(run, monkeypatch):
    import waitress

    def port_taken(app, host, port, **options):
        # What waitress raises; the real one leaves its half-made server to the collector,
        # which then warns in whichever test runs next.
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(waitress, "create_server", port_taken)
    code, _, err = run("serve", "--port", "8787")
    assert_one_line_error(code, err, "cannot serve on 127.0.0.1:8787", "Address already in use")


def test_a_data_directory_that_is_a_file_is_one_line(run, env, monkeypatch):
    (env / "not-a-dir").write_text("")
    monkeypatch.setenv("STORYAPP_DATA_DIR", str(env / "not-a-dir"))
    code, _, err = run("init")
    assert_one_line_error(code, err, "not-a-dir")


def test_feeds_refresh_reports_each_feed(run, feed_server):
    feed_server.publish("/wire.rss", RSS)
    feed_server.publish("/gone.rss", RSS)
    run("feeds", "add", feed_server.url("/wire.rss"))
    run("feeds", "add", feed_server.url("/gone.rss"))
    del feed_server.documents["/gone.rss"]  # gone since it was added
    code, out, err = run("feeds", "refresh")
    assert out.splitlines() == [
        f"1 {feed_server.url('/wire.rss')}: 2 new, 0 duplicates",
        f"2 {feed_server.url('/gone.rss')}: failed: HTTP 404 Not Found",
    ]
    assert_one_line_error(code, err, "1 of 2 feeds failed")
    assert Article.select().count() == 2
    out = run("feeds", "list")[1].splitlines()
    assert re.fullmatch(r"1 \S+ Harbour & Coast Wire \(last fetched \S+Z: ok\)", out[0])
    assert out[1].endswith(": error: HTTP 404 Not Found)")


# --- usage errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["bogus"], "No such command 'bogus'"),
        (["--bogus"], "No such option"),
        (["init", "--bogus"], "No such option"),
        (["generate", "--hours"], "requires an argument"),
        (["serve", "--port", "0"], "--port"),
    ],
)
def test_usage_errors_are_one_line(run, args, fragment):
    code, out, err = run(*args)
    assert code == 2
    assert_one_line_error(code, err, fragment)
    assert out == ""


def test_help(run):
    code, out, _ = run("--help")
    assert code == 0
    commands = ("init", "ingest", "feeds", "generate", "worker", "serve", "demo", "jobs")
    for command in (*commands, "watch", "cancel", "stories"):
        assert re.search(rf"^  {command} ", out, re.M), command


HEAVY = ("flask", "huey", "sklearn", "peewee", "requests", "tqdm", "feedparser", "waitress")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["jobs", "--help"], ["nonsense"]])
def test_help_and_usage_errors_import_no_heavy_module(args):
    # `storyapp --help` took 2.2 s: every command's modules were imported to print it.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "storyapp.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == (2 if args == ["nonsense"] else 0), done.stderr
    imported = {
        line.split("|")[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "storyapp.config" in imported  # storyapp's own code ran, as __main__
    loaded = {name for name in imported if name.split(".")[0] in HEAVY}
    assert loaded == set()
    assert {name for name in imported if name.startswith("storyapp.")} == {"storyapp.config"}


def test_version(run):
    code, out, _ = run("--version")
    assert code == 0
    assert out == f"storyapp {version('storyapp')}\n"


def test_the_clis_copies_of_model_constants_hold():
    assert cli.JOB_STATUSES == Job.STATUSES
    assert cli.MAX_ID == models.MAX_ID


def test_no_command_shows_the_help(run):
    code, out, err = run()
    assert code != 0
    assert err.startswith("Usage: storyapp")
    assert "error" not in err


# --- generate -------------------------------------------------------------------------------------


def test_generate_prints_a_job_id(run):
    code, out, err = run("generate", "--hours", "6")
    assert code == 0, err
    job_id = out.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    job = Job.get_by_id(job_id)
    assert (job.status, job.time_window_hours, job.force) == ("queued", 6.0, False)

    code, out, _ = run("generate", "--hours", "6")
    assert code == 0
    assert out == f"{job_id} (an equal job is already queued)\n"

    code, out, _ = run("generate", "--hours", "6", "--force")
    assert code == 0
    forced = out.strip()
    assert forced != job_id
    assert Job.get_by_id(forced).force is True


def test_generate_wait_off_a_terminal_writes_a_line_now_and_then(run, env, monkeypatch, ollama):
    ollama.latency = 0.2
    monkeypatch.setenv("OLLAMA_HOST", ollama.url)
    assert run("ingest", str(write_jsonl(env / "sample.jsonl", shifted_sample())))[0] == 0
    with running_consumer():
        started = time.monotonic()
        code, out, err = run("generate", "--wait")
        watched = time.monotonic() - started
    assert code == 0, err
    # No bar redrawn into a pipe or a log: a line at each change of status (queued, running,
    # succeeded), and one every few seconds between them.
    assert "\r" not in err and "█" not in err
    lines = err.splitlines()
    assert lines[0].startswith("queued: 0/? clusters") or lines[0].startswith("running: ")
    assert re.fullmatch(r"succeeded: (\d+)/\1 clusters, llm \d+ cached 0 fallback 0 .*", lines[-1])
    assert len(lines) <= 3 + watched / progress.LINE_EVERY_S
    assert out.splitlines()[-1].startswith(f"job {out.split()[0]} succeeded in ")


def test_off_a_terminal_a_running_job_gets_a_line_every_few_seconds(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    log = io.StringIO()
    lines = progress._Lines(log)
    job = {
        "status": "running",
        "done": 3,
        "total": 40,
        "counts": dict.fromkeys(("llm", "cached", "fallback", "reused", "single"), 0),
        "duration_s": 1.0,
        "eta_s": None,
    }
    for step in range(60):  # 12 s of polls, 0.2 s apart
        clock[0] = 100.0 + step * 0.2
        lines.show(job | {"done": 3 + step // 10})
    shown = log.getvalue().splitlines()
    assert [line.split(",")[0] for line in shown] == [
        "running: 3/40 clusters",
        "running: 5/40 clusters",
        "running: 8/40 clusters",
    ]
    lines.show(job | {"status": "succeeded", "done": 40})  # a change of status: at once
    assert log.getvalue().splitlines()[-1].startswith("succeeded: 40/40 clusters")


class Terminal(io.StringIO):
    """What the bar is drawn on when a person watches: a UTF-8 terminal."""

    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_progress_is_a_bar_with_elapsed_and_eta(env, run, monkeypatch, ollama):
    ollama.latency = 0.2
    monkeypatch.setenv("OLLAMA_HOST", ollama.url)
    assert run("ingest", str(write_jsonl(env / "sample.jsonl", shifted_sample())))[0] == 0
    code, out, _ = run("generate")
    screen = Terminal()
    with running_consumer():
        final = watch_job(out.strip(), file=screen)
    assert final["status"] == "succeeded"
    drawn = screen.getvalue()
    assert re.search(r"succeeded: 100%\|█+\| (\d+)/\1 clusters, llm \d+ cached 0 fallback 0", drawn)
    frames = re.split(r"[\r\n]+", drawn)
    assert any(re.search(r"running: +\d+%.*elapsed, ETA \d\d:\d\d\]", f) for f in frames), drawn
    assert frames[-2].endswith("elapsed, ETA ?]")  # nothing left to wait for


def test_generate_wait_says_why_a_job_found_nothing(run, env):
    old = article(1, "Ferry service resumes", hours_ago=5 * 24 + 3)
    assert run("ingest", str(write_jsonl(env / "old.jsonl", [old])))[0] == 0
    with running_consumer():
        code, out, err = run("generate", "--wait")
    assert code == 0, err
    assert re.search(
        r"succeeded in [\d.]+ s: 0/0 clusters .*; no article in the window \S+ \S+ to \S+ \S+ "
        r"UTC; the newest is 5 days old \(a window of 124 hours would hold it\)$",
        out.splitlines()[-1],
    )


def test_progress_postfix_uses_the_jobs_clock():
    job = {
        "counts": {"llm": 8, "cached": 0, "fallback": 2, "reused": 10, "single": 5, "failed": 0},
        "duration_s": 10.4,
        "eta_s": 75.0,
    }
    line = "llm 8 cached 0 fallback 2 reused 10 single 5 [00:10 elapsed, ETA 01:15]"
    assert progress_postfix(job) == line
    assert progress_postfix(job | {"eta_s": None, "duration_s": None}).endswith(
        "[00:00 elapsed, ETA ?]"
    )


@pytest.mark.parametrize("hours", ["0", "721", "-1", "abc", "nan", "inf"])
def test_generate_bad_hours(run, hours):
    assert run("init")[0] == 0  # binds this test's database, to count its jobs
    code, out, err = run("generate", "--hours", hours)
    assert_one_line_error(code, err, "--hours")
    assert out == ""
    assert Job.select().count() == 0


# --- the installed console script -----------------------------------------------------------------


def test_console_script(tmp_path):
    script = Path(sys.executable).with_name("storyapp")
    assert script.exists()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STORYAPP_")},
        "STORYAPP_DATA_DIR": str(tmp_path / "data"),
        "OLLAMA_HOST": f"http://127.0.0.1:{free_port()}",
        "STORYAPP_SCHEDULE": "off",
    }
    done = subprocess.run(
        [str(script), "init"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "applied m001_initial" in done.stdout
    assert (tmp_path / "data" / "storyapp.db").exists()

    failed = subprocess.run(
        [str(script), "ingest", "missing.json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith("storyapp: error: cannot read missing.json")
    assert failed.stderr.count("\n") == 1


# --- jobs, watch, cancel, stories ----------------------------------------------------------------


def test_jobs_lists_the_jobs_newest_first_and_by_status(run):
    code, out, _ = run("jobs")
    assert (code, out) == (0, "no jobs yet (storyapp generate queues one)\n")
    first = run("generate", "--hours", "6")[1].strip()
    second = run("generate", "--hours", "12")[1].strip()
    assert jobs.cancel_job(first)

    code, out, err = run("jobs")
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ["ID", "STATUS", "WINDOW", "CLUSTERS", "CREATED", "TOOK"]
    assert [row.split()[:4] for row in rows] == [
        [second, "queued", "12", "h"],
        [first, "cancelled", "6", "h"],
    ]
    assert rows[0].split()[4] == "0/?"

    code, out, _ = run("jobs", "--status", "cancelled")
    assert [row.split()[0] for row in out.splitlines()[1:]] == [first]
    code, out, _ = run("jobs", "--status", "failed")
    assert out == "no failed jobs\n"

    code, out, _ = run("jobs", "--json", "--limit", "1")
    listed = json.loads(out)["jobs"]
    assert [job["id"] for job in listed] == [second]
    assert listed[0] == Job.get_by_id(second).to_dict() | {"duration_s": None, "eta_s": None}

    code, _, err = run("jobs", "--status", "done")
    assert_one_line_error(code, err, "--status")


def test_cancel_ends_a_job_once(run):
    job_id = run("generate")[1].strip()
    code, out, err = run("cancel", job_id)
    assert (code, out) == (0, f"job {job_id} cancelled\n"), err
    assert Job.get_by_id(job_id).status == "cancelled"
    code, _, err = run("cancel", job_id)
    assert_one_line_error(code, err, f"job {job_id} has ended already: cancelled")
    for unknown in ("0" * 32, "nope", "a\x00b"):
        code, _, err = run("cancel", unknown)
        assert_one_line_error(code, err, "no job with id", "storyapp jobs")


# In these two a `storyapp worker` process writes the job, as in use: each command run here
# binds the settings anew, which would close an in-process consumer's LLM client mid-request.


def test_cancel_stops_a_running_job_from_starting_clusters(run, env, ollama, workers):
    ollama.latency = 0.5
    workers(ollama.url, STORYAPP_WORKERS="2")
    assert run("ingest", str(write_jsonl(env / "sample.jsonl", shifted_sample())))[0] == 0
    job_id = run("generate")[1].strip()
    wait_until(lambda: Job.get_by_id(job_id).done > 0, 60, "the job's first clusters")
    assert run("cancel", job_id)[0] == 0
    code, out, err = run("watch", job_id)
    assert code == 1  # it did not succeed
    job = Job.get_by_id(job_id).to_dict()
    assert job["status"] == "cancelled" and 0 < job["done"] < job["total"]
    assert out.startswith(f"job {job_id} cancelled in ")
    assert err.startswith("cancelled: ")  # the state it was found in, at once


def test_watch_follows_a_job_to_its_end(run, env, ollama, workers):
    workers(ollama.url)
    assert run("ingest", str(write_jsonl(env / "sample.jsonl", shifted_sample())))[0] == 0
    job_id = run("generate")[1].strip()
    code, out, err = run("watch", job_id)
    assert code == 0, err
    assert out.startswith(f"job {job_id} succeeded in ")
    assert err.splitlines()[-1].startswith("succeeded: ")
    code, _, err = run("watch", "f" * 32)
    assert_one_line_error(code, err, "no job with id")


def test_stories_lists_them_as_the_api_ranks_them(run, env):
    code, out, _ = run("stories")
    assert (code, out) == (0, "no story updated in the last 24 hours\n")
    assert run("ingest", "--sample")[0] == 0
    with running_consumer():
        assert run("generate", "--wait")[0] == 0

    from storyapp.api import create_app

    answer = create_app(cli.load_settings()).test_client().get("/stories?limit=5").get_json()
    code, out, err = run("stories", "--limit", "5", "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [s["id"] for s in listed["stories"]] == [s["id"] for s in answer["stories"]]
    assert listed["total"] == answer["total"] == Story.listed().count()
    assert listed["stories"][0].keys() == answer["stories"][0].keys()

    code, out, _ = run("stories", "--limit", "3")
    lines = out.splitlines()
    assert len(lines) == 6
    pairs = zip(lines[::2], lines[1::2], strict=True)
    for story, (title, about) in zip(answer["stories"][:3], pairs, strict=True):
        assert title.split(maxsplit=1) == [str(story["id"]), story["title"]]
        assert about.strip().startswith(f"{story['article_count']} article(s) from ")


def test_ctrl_c_on_generate_wait_leaves_the_job_and_says_how_to_watch_it(run, env):
    assert run("init")[0] == 0  # binds the database the command will use, to read its job
    environ = {**os.environ, "STORYAPP_DATA_DIR": str(env / "data")}
    with subprocess.Popen(
        [sys.executable, "-m", "storyapp.cli", "generate", "--wait"],
        env=environ,
        cwd=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        job_id = proc.stdout.readline().strip()  # printed before the watching starts
        assert proc.stderr.readline().startswith("queued: 0/? clusters")  # it watches
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"storyapp: stopped watching; job {job_id} goes on. Watch it again with "
        f"`storyapp watch {job_id}`, or stop it with `storyapp cancel {job_id}`."
    )
    assert out == ""
    assert Job.get_by_id(job_id).status == "queued"  # no worker here: it waits for one
