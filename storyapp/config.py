"""Settings, read once from the environment (names and defaults: CONTRACT.md)."""

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REDIS_SCHEMES = ("redis", "rediss", "unix")


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
        data_dir = Path(env.get("STORYAPP_DATA_DIR") or "./data").resolve()
        queue_url = env.get("STORYAPP_QUEUE_URL") or f"sqlite:///{data_dir}/queue.db"
        backend = (env.get("STORYAPP_LLM_BACKEND") or "ollama").strip().lower()
        if backend not in BACKENDS:
            raise ConfigError(
                f"STORYAPP_LLM_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}"
            )
        return cls(
            data_dir=data_dir,
            database_url=env.get("STORYAPP_DATABASE_URL") or f"sqlite:///{data_dir}/storyapp.db",
            queue_url=queue_url,
            # Keys the queue: deployments (or test runs) sharing one Redis keep to their own.
            queue_name=(env.get("STORYAPP_QUEUE_NAME") or "storyapp").strip(),
            llm_backend=backend,
            llm_urls=_llm_urls(env, backend),
            llm_api_key=env.get("STORYAPP_LLM_API_KEY") or None,
            model=env.get("STORYAPP_MODEL") or DEFAULT_MODELS[backend],
            llm_concurrency=_number(env, "STORYAPP_LLM_CONCURRENCY", 4, int, 1, 256),
            llm_concurrency_scope=_scope(env.get("STORYAPP_LLM_CONCURRENCY_SCOPE"), queue_url),
            llm_timeout=_number(env, "STORYAPP_LLM_TIMEOUT", 120.0, float, 0.1, 3600),
            workers=_number(env, "STORYAPP_WORKERS", 8, int, 1, 256),
            schedule=(env.get("STORYAPP_SCHEDULE") or "0 * * * *").strip(),
            api_token=env.get("STORYAPP_API_TOKEN") or None,
            retention_days=_number(env, "STORYAPP_RETENTION_DAYS", 30, int, 1, 36500),
            read_token=env.get("STORYAPP_READ_TOKEN") or None,
        )


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
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {raw!r}")
    return value
