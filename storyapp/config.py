"""Settings, read once from the environment (names and defaults: CONTRACT.md)."""

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

REDIS_SCHEMES = ("redis", "rediss", "unix")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the variable."""


# Which LLM server writes the stories (llm.from_settings), and the model each uses by default:
# for `local`, the small model the package index carries (local_llm.py).
BACKENDS = ("ollama", "local")
DEFAULT_MODELS = {"ollama": "llama3.1:8b", "local": "gemma3-270m"}


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    queue_url: str
    queue_name: str
    llm_backend: str  # ollama | local
    ollama_hosts: tuple[str, ...]
    model: str
    llm_concurrency: int
    llm_concurrency_scope: str  # process | redis
    llm_timeout: float
    workers: int
    schedule: str
    api_token: str | None
    retention_days: int

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        data_dir = Path(env.get("STORYAPP_DATA_DIR") or "./data").resolve()
        hosts = tuple(
            h.strip() for h in env.get("OLLAMA_HOST", "http://localhost:11434").split(",")
        )
        if not all(hosts):
            raise ConfigError("OLLAMA_HOST has an empty entry")
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
            ollama_hosts=tuple(_ollama_host(h) for h in hosts),
            model=env.get("STORYAPP_MODEL") or DEFAULT_MODELS[backend],
            llm_concurrency=_number(env, "STORYAPP_LLM_CONCURRENCY", 4, int, 1, 256),
            llm_concurrency_scope=_scope(env.get("STORYAPP_LLM_CONCURRENCY_SCOPE"), queue_url),
            llm_timeout=_number(env, "STORYAPP_LLM_TIMEOUT", 120.0, float, 0.1, 3600),
            workers=_number(env, "STORYAPP_WORKERS", 8, int, 1, 256),
            schedule=(env.get("STORYAPP_SCHEDULE") or "0 * * * *").strip(),
            api_token=env.get("STORYAPP_API_TOKEN") or None,
            retention_days=_number(env, "STORYAPP_RETENTION_DAYS", 30, int, 1, 36500),
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


def _ollama_host(host: str) -> str:
    # Ollama's own tools accept "localhost:11434"; so do we.
    url = host if "://" in host else f"http://{host}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises for a port that is no port)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"OLLAMA_HOST entries must be like http://host:11434, got {host!r}")
    return url


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
