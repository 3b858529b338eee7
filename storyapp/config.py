"""Settings, read once from the environment (names and defaults: CONTRACT.md)."""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REDIS_SCHEMES = ("redis", "rediss", "unix")
POSTGRES_SCHEMES = ("postgres", "postgresql", "postgres+pool", "postgresql+pool")
# The queue's name prefixes its Redis keys and names its SQLite rows: a plain word keeps it
# readable in redis-cli and free of the separators Huey puts between its parts.
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
# The call log's model column holds 200 characters (models.LLMCall).
MAX_MODEL = 200


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the variable."""


# Which LLM server writes the stories (llm.from_settings), and the model each uses by default:
# for `local`, the small model the package index carries (local_llm.py).
BACKENDS = ("ollama", "openai", "local")
DEFAULT_MODELS = {"ollama": "llama3.1:8b", "openai": "llama3.1:8b", "local": "gemma3-270m"}
OLLAMA_PORT = 11434


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    queue_url: str
    queue_name: str
    llm_backend: str  # ollama | openai | local
    llm_urls: tuple[str, ...]  # the servers (for local, none)
    llm_api_key: str | None
    model: str
    llm_concurrency: int
    llm_concurrency_scope: str  # process | redis
    llm_timeout: float
    workers: int
    schedule: str
    api_token: str | None
    retention_days: int
    # When set, reading (every GET but /health) needs it, or the API token.
    read_token: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        raw_dir = env.get("STORYAPP_DATA_DIR") or "./data"
        data_dir = Path(raw_dir).expanduser().resolve()
        database_url = _database_url(env.get("STORYAPP_DATABASE_URL"), data_dir)
        queue_url = _queue_url(env.get("STORYAPP_QUEUE_URL"), data_dir)
        if str(data_dir) in database_url + queue_url:
            # Checked here, not where the files are opened, so that the error names the
            # variable; and only when a file goes there (a PostgreSQL and Redis deployment
            # leaves the default ./data unused).
            _writable_directory(data_dir, "STORYAPP_DATA_DIR", raw_dir)
        backend = (env.get("STORYAPP_LLM_BACKEND") or "ollama").strip().lower()
        if backend not in BACKENDS:
            raise ConfigError(
                f"STORYAPP_LLM_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}"
            )
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            queue_url=queue_url,
            # Keys the queue: deployments (or test runs) sharing one Redis keep to their own.
            queue_name=_queue_name(env.get("STORYAPP_QUEUE_NAME")),
            llm_backend=backend,
            llm_urls=_llm_urls(env, backend),
            llm_api_key=_token(env, "STORYAPP_LLM_API_KEY"),
            model=_model(env.get("STORYAPP_MODEL"), backend),
            llm_concurrency=_number(env, "STORYAPP_LLM_CONCURRENCY", 4, int, 1, 256),
            llm_concurrency_scope=_scope(env.get("STORYAPP_LLM_CONCURRENCY_SCOPE"), queue_url),
            llm_timeout=_number(env, "STORYAPP_LLM_TIMEOUT", 120.0, float, 0.1, 3600),
            workers=_number(env, "STORYAPP_WORKERS", 8, int, 1, 256),
            schedule=_schedule(env.get("STORYAPP_SCHEDULE")),
            api_token=_token(env, "STORYAPP_API_TOKEN"),
            retention_days=_number(env, "STORYAPP_RETENTION_DAYS", 30, int, 1, 36500),
            read_token=_token(env, "STORYAPP_READ_TOKEN"),
        )


def _writable_directory(path: Path, name: str, raw: str) -> None:
    """The directory, or the first of its parents that exists (the rest is made on first
    use), must be a directory this process can write."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{name}: {existing} is not a directory (got {raw!r})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{name}: {existing} is a directory this process cannot write")


def _database_url(raw: str | None, data_dir: Path) -> str:
    name = "STORYAPP_DATABASE_URL"
    if not raw or not raw.strip():
        return f"sqlite:///{data_dir}/storyapp.db"
    url = raw.strip()
    scheme = _scheme(url, name)
    if scheme == "sqlite":
        return _sqlite_url(url, name)
    if scheme in POSTGRES_SCHEMES:
        _network_url(url, name)
        return url
    raise ConfigError(
        f"{name} must be sqlite:///path or postgresql://user:password@host:5432/name, got {raw!r}"
    )


def _queue_url(raw: str | None, data_dir: Path) -> str:
    name = "STORYAPP_QUEUE_URL"
    if not raw or not raw.strip():
        return f"sqlite:///{data_dir}/queue.db"
    url = raw.strip()
    scheme = _scheme(url, name)
    if scheme == "sqlite":
        return _sqlite_url(url, name)
    if scheme == "unix":
        if not urlsplit(url).path:
            raise ConfigError(f"{name} must be unix:///path/redis.sock, got {raw!r}")
        return url
    if scheme in ("redis", "rediss"):
        _network_url(url, name)
        return url
    raise ConfigError(f"{name} must be sqlite:///path or redis://host:6379/0, got {raw!r}")


def _scheme(url: str, name: str) -> str:
    if "://" not in url:
        raise ConfigError(f"{name} must be a URL such as sqlite:///path, got {url!r}")
    return url.split("://", 1)[0].lower()


def _sqlite_url(url: str, name: str) -> str:
    # sqlite://file.db reads as a host named file.db: three slashes, then the path.
    if not url.startswith("sqlite:///") or url == "sqlite:///":
        raise ConfigError(
            f"{name} must be sqlite:/// and a path (sqlite:///data/x.db, sqlite:////abs/x.db), "
            f"got {url!r}"
        )
    path = url.removeprefix("sqlite:///")
    if path != ":memory:":
        file = Path(path).expanduser().resolve()
        if file.is_dir():
            raise ConfigError(f"{name} names a directory, not a file: {url!r}")
        _writable_directory(file.parent, name, url)
    return url


def _network_url(url: str, name: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises for a port that is no port)
    except ValueError:
        raise ConfigError(f"{name} has a port that is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise ConfigError(f"{name} has no host: {parts.scheme}://host…")


def _queue_name(raw: str | None) -> str:
    value = (raw or "").strip() or "storyapp"
    if not QUEUE_NAME.fullmatch(value):
        raise ConfigError(
            f"STORYAPP_QUEUE_NAME must be 1-100 letters, digits or _ . : -, got {raw!r}"
        )
    return value


def _model(raw: str | None, backend: str) -> str:
    value = (raw or "").strip() or DEFAULT_MODELS[backend]
    if len(value) > MAX_MODEL or any(c.isspace() or not c.isprintable() for c in value):
        raise ConfigError(
            f"STORYAPP_MODEL must be a model name or path of at most {MAX_MODEL} characters "
            f"without spaces, got {raw[:60]!r}"
        )
    return value


def _token(env, name: str) -> str | None:
    """A secret sent or compared in an Authorization header: HTTP carries printable ASCII."""
    raw = env.get(name)
    if not raw:
        return None
    if not all(33 <= ord(c) <= 126 for c in raw):
        # The value itself stays out of the message: it is a secret.
        raise ConfigError(f"{name} must be printable ASCII without spaces")
    return raw


def _schedule(raw: str | None) -> str:
    value = (raw or "").strip() or "0 * * * *"
    parse_schedule(value)
    return value


def parse_schedule(text: str):
    """A crontab validator for the periodic task, or None for "off"."""
    from huey import crontab  # here: the settings of a command that queues nothing need no Huey

    if text.lower() == "off":
        return None
    fields = text.split()
    if len(fields) != 5:
        raise ConfigError(f"STORYAPP_SCHEDULE must have 5 crontab fields or be 'off': {text!r}")
    try:
        return crontab(*fields)
    except ValueError as exc:
        raise ConfigError(f"STORYAPP_SCHEDULE {text!r}: {exc}") from None


def _scope(raw: str | None, queue_url: str) -> str:
    scope = (raw or "process").strip().lower()
    if scope not in ("process", "redis"):
        raise ConfigError(f"STORYAPP_LLM_CONCURRENCY_SCOPE must be process or redis, got {raw!r}")
    if scope == "redis" and urlsplit(queue_url).scheme not in REDIS_SCHEMES:
        # The slots live beside the queue: one Redis that every consumer reaches already.
        raise ConfigError(
            "STORYAPP_LLM_CONCURRENCY_SCOPE=redis needs a redis:// STORYAPP_QUEUE_URL"
        )
    return scope


def _llm_urls(env, backend: str) -> tuple[str, ...]:
    """The servers STORYAPP_LLM_URL names (a comma-separated list): for ollama, OLLAMA_HOST when
    it is unset; for openai, base URLs as OpenAI's client takes them (ending in /v1)."""
    if backend == "local":
        return ()
    name = "STORYAPP_LLM_URL"
    raw = env.get(name)
    if not raw and backend == "ollama":
        name, raw = "OLLAMA_HOST", env.get("OLLAMA_HOST") or f"http://localhost:{OLLAMA_PORT}"
    if not raw:
        raise ConfigError(
            f"STORYAPP_LLM_URL is needed with STORYAPP_LLM_BACKEND={backend}: the server's base "
            "URL, such as http://localhost:8000/v1"
        )
    entries = [h.strip() for h in raw.split(",")]
    if not all(entries):
        raise ConfigError(f"{name} has an empty entry")
    return tuple(_server_url(entry, name, backend) for entry in entries)


def _server_url(entry: str, name: str, backend: str) -> str:
    # Ollama's own tools take "localhost" and "localhost:11434" to mean http://localhost:11434:
    # so does storyapp. An OpenAI-compatible server has no one port: its URL is as given.
    url = entry if "://" in entry else f"http://{entry}"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is no port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        example = "http://host:11434" if backend == "ollama" else "http://host:8000/v1"
        raise ConfigError(f"{name} entries must be like {example}, got {entry!r}")
    if backend == "ollama" and port is None:
        url = urlunsplit(parts._replace(netloc=f"{parts.netloc}:{OLLAMA_PORT}"))
    return url.rstrip("/")


def _number(env, name, default, kind, low, high):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {raw!r}")
    return value
