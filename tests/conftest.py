import json
import os
import signal
import socket
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import waitress
from backends import BACKENDS, Backend, ScaleServices
from feedserver import FeedServer
from peewee import PostgresqlDatabase
from scripted import ScriptedLLM
from waitress import wasyncore
from workers import WorkerProcess

from storyapp import db, tasks
from storyapp.cli import WAITRESS
from storyapp.config import Settings
from storyapp.corpus import SAMPLE
from storyapp.fake_ollama import FakeOllama
from storyapp.ingest import parse_datetime
from storyapp.migrations import migrate
from storyapp.models import utcnow
from storyapp.queue import huey


def pytest_addoption(parser):
    parser.addoption(
        "--backends",
        default=None,
        help="comma-separated engines for the tests marked `backends`: sqlite (SQLite data "
        "and queue) and scale (PostgreSQL data, Redis queue, on 127.0.0.1 or as "
        "STORYAPP_TEST_POSTGRES_URL and STORYAPP_TEST_REDIS_URL say). Default: both, and "
        "scale is skipped, with the reason, when its services do not answer. Named here (or "
        "in STORYAPP_TEST_BACKENDS, as CI does), a backend that is not there fails.",
    )


def pytest_configure(config):
    # A shell runs a command put in the background (`cmd &`, as CI scripts may) with SIGINT
    # ignored, and a process started from it inherits that: the tests' Ctrl-C to `storyapp
    # serve`, `generate --wait` and `demo` did nothing. A handled signal is default again in a
    # program started after, as at a terminal.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line(
        "markers",
        "backends(*names): runs once per backend that --backends selects (of `names`, if any)",
    )


def selected_backends(config) -> tuple[list[str], bool]:
    option = config.getoption("--backends") or os.environ.get("STORYAPP_TEST_BACKENDS")
    if not option:
        return list(BACKENDS), False
    names = [name.strip() for name in option.split(",") if name.strip()]
    unknown = set(names) - set(BACKENDS)
    if unknown or not names:
        raise pytest.UsageError(f"--backends takes {', '.join(BACKENDS)}; got {option!r}")
    return names, True


def pytest_generate_tests(metafunc):
    # Tests marked `backends` run once per selected backend; the rest run on SQLite.
    marker = metafunc.definition.get_closest_marker("backends")
    if "backend" in metafunc.fixturenames and marker is not None:
        names, _ = selected_backends(metafunc.config)
        names = [n for n in names if not marker.args or n in marker.args]
        metafunc.parametrize("backend", names, indirect=True)


@pytest.fixture(scope="session")
def scale_services(request):
    _, explicit = selected_backends(request.config)
    services = ScaleServices()
    problem = services.start()
    if problem is not None:
        if explicit:
            pytest.fail(f"the scale backend was asked for, but {problem}")
        pytest.skip(f"scale backend skipped: {problem} (--backends=scale makes this a failure)")
    yield services
    services.stop()


@pytest.fixture
def backend(request, tmp_path) -> Backend:
    """Where the data and the queue live: SQLite files in tmp_path, or a PostgreSQL schema and
    a Redis queue name of this test's own, dropped and deleted afterwards."""
    name = getattr(request, "param", "sqlite")
    if name == "sqlite":
        yield Backend.sqlite(tmp_path)
        return
    services = request.getfixturevalue("scale_services")
    with services.for_test() as scale:
        yield scale


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app):
    """`app` behind a real waitress server, set up as `storyapp serve` sets it, on a free port."""
    sockets: dict = {}
    server = waitress.create_server(app, map=sockets, host="127.0.0.1", port=0, **WAITRESS)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.task_dispatcher.shutdown()
        wasyncore.close_all(sockets)  # the server's loop ends with no socket left
        thread.join(timeout=5)


@pytest.fixture
def feed_server():
    with FeedServer() as server:
        yield server


@pytest.fixture
def ollama():
    """The fake Ollama server, for the tests of what goes over HTTP: the settings point at it."""
    with FakeOllama() as server:
        yield server


@pytest.fixture
def llm() -> ScriptedLLM:
    """A scripted LLM (tests/scripted.py) for a test to hand to the code it drives."""
    return ScriptedLLM()


def make_settings(tmp_path: Path, ollama_url: str, **env) -> Settings:
    return Settings.from_env(
        {
            "STORYAPP_DATA_DIR": str(tmp_path / "data"),
            "OLLAMA_HOST": ollama_url,
            "STORYAPP_SCHEDULE": "off",
            "STORYAPP_LLM_TIMEOUT": "5",
            "STORYAPP_WORKERS": "4",
            **env,
        }
    )


def init(settings: Settings) -> Settings:
    """Binds the database and the queue to `settings` and makes the tables, as `storyapp init`
    does (and `serve` and `worker` as they start): the app factory only binds them."""
    tasks.configure(settings)
    migrate(db.bind(settings.database_url))
    return settings


@pytest.fixture
def settings(request, tmp_path, backend):
    # Only a test that asks for the fake server (`ollama`) gets one. The others point at a port
    # where nothing listens: one that reached the LLM by mistake gets fallback stories, which
    # its counts show, rather than replies from a server it did not say it needed.
    if "ollama" in request.fixturenames:
        url = request.getfixturevalue("ollama").url
    else:
        url = f"http://127.0.0.1:{free_port()}"
    return make_settings(tmp_path, url, **backend.env)


@pytest.fixture(autouse=True)
def release_connections():
    yield
    tasks.close()


@pytest.fixture
def configured(settings):
    return init(settings)


class CountingLock:
    """A lock that counts the threads waiting for it."""

    def __init__(self, lock):
        self._lock = lock
        self._count = threading.Lock()
        self.waiting = 0

    def __enter__(self):
        if not self._lock.acquire(blocking=False):
            with self._count:
                self.waiting += 1
            self._lock.acquire()
            with self._count:
                self.waiting -= 1
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()


# A test's connections carry its own application_name (backends.py): this counts those waiting
# for a lock another transaction holds, an advisory lock or a row.
WAITING_SESSIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
    "AND application_name = current_setting('application_name')"
)


@pytest.fixture
def lock_waits(configured, monkeypatch):
    """How many of this test's transactions wait for another one to end: a race test holds one
    open until it sees the other wait, rather than for a while. On SQLite, the threads queued
    for the process's writer lock (db.transaction); on PostgreSQL, the sessions waiting for a
    lock."""
    if isinstance(db.database.obj, PostgresqlDatabase):
        return lambda: db.database.execute_sql(WAITING_SESSIONS).fetchone()[0]
    writer = CountingLock(db._sqlite_writer)
    monkeypatch.setattr(db, "_sqlite_writer", writer)
    return lambda: writer.waiting


@pytest.fixture
def app(configured):
    from storyapp.api import create_app

    return create_app(configured)


@pytest.fixture
def client(app):
    return app.test_client()


@contextmanager
def running_consumer(workers: int = 4):
    """A real Huey consumer with thread workers on the configured queue."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    consumer = huey.create_consumer(
        workers=workers,
        worker_type="thread",
        periodic=False,
        initial_delay=0.01,
        backoff=1.1,
        max_delay=0.05,
        check_worker_health=False,
    )
    consumer.start()  # sets signal handlers; put pytest's back afterwards
    try:
        yield consumer
    finally:
        consumer.stop(graceful=True)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@pytest.fixture
def consumer(configured):
    with running_consumer() as running:
        yield running


@pytest.fixture
def workers(tmp_path, backend):
    """Starts `storyapp worker` processes; whatever is still running at the end is stopped."""
    started: list[WorkerProcess] = []

    def start(ollama_url: str, *args: str, command=None, **env: str) -> WorkerProcess:
        n = len(started) + 1
        env = {**backend.env, **env}
        started.append(WorkerProcess(tmp_path, ollama_url, n, env, *args, command=command))
        return started[-1]

    yield start
    for worker in started:
        worker.stop(signal.SIGKILL)


@pytest.fixture
def sample_job(tmp_path, backend):
    """Ingests the sample and requests a job: returns the job's id."""

    def start(server):
        from storyapp.api import create_app

        app = create_app(init(make_settings(tmp_path, server.url, **backend.env)))
        client = app.test_client()
        assert client.post("/articles", json=shifted_sample()).status_code == 201
        return client.post("/stories/generate").get_json()["job_id"]

    return start


def wait_for_job(client, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").get_json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end in {timeout} s: {job}")


def article(n: int, title: str, summary: str = "", hours_ago: float = 1.0, **extra) -> dict:
    return {
        "url": f"https://news.example/{n}",
        "title": title,
        "summary": summary,
        "content": extra.pop("content", summary),
        "source": extra.pop("source", "Test Wire"),
        "published_at": (utcnow() - timedelta(hours=hours_ago)).isoformat() + "Z",
        **extra,
    }


def sample_records() -> list[dict]:
    return [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]


def shifted_sample() -> list[dict]:
    """The sample, moved so its newest article is a minute old."""
    records = sample_records()
    newest = max(parse_datetime(r["published_at"]) for r in records)
    shift = utcnow() - timedelta(minutes=1) - newest
    for r in records:
        r["published_at"] = (parse_datetime(r["published_at"]) + shift).isoformat() + "Z"
    return records


def ingest_and_generate(client) -> dict:
    records = shifted_sample()
    response = client.post("/articles", json={"articles": records})
    assert response.status_code == 201
    assert response.get_json() == {"created": len(records), "duplicates": 0}
    response = client.post("/stories/generate", json={"time_window_hours": 24})
    assert response.status_code == 202
    return wait_for_job(client, response.get_json()["job_id"])
