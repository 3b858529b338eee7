import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from storyapp import cli, config
from storyapp.config import ConfigError, Settings


def test_defaults_follow_the_contract(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})
    data = Path(tmp_path / "data").resolve()
    assert s.data_dir == data
    assert s.database_url == f"sqlite:///{data}/storyapp.db"
    assert s.queue_url == f"sqlite:///{data}/queue.db"
    assert s.llm_urls == ("http://localhost:11434",)
    assert (s.model, s.llm_concurrency, s.llm_timeout, s.workers) == ("llama3.1:8b", 4, 120.0, 8)
    assert s.schedule == "0 * * * *" and s.api_token is None
    assert s.retention_days == 30
    assert s.queue_name == "storyapp" and s.llm_concurrency_scope == "process"


def test_llm_slots_shared_through_redis_need_a_redis_queue():
    redis = {"STORYAPP_QUEUE_URL": "redis://r:6379/0", "STORYAPP_LLM_CONCURRENCY_SCOPE": "Redis"}
    assert Settings.from_env(redis).llm_concurrency_scope == "redis"
    with pytest.raises(ConfigError, match="needs a redis:// STORYAPP_QUEUE_URL"):
        Settings.from_env({"STORYAPP_LLM_CONCURRENCY_SCOPE": "redis"})


def test_several_hosts_and_bare_host_port():
    s = Settings.from_env({"OLLAMA_HOST": "http://a:11434, b:11434"})
    assert s.llm_urls == ("http://a:11434", "http://b:11434")


@pytest.mark.parametrize("host", ["localhost", "http://localhost", "127.0.0.1", "0.0.0.0"])
def test_an_ollama_host_without_a_port_gets_ollamas_port(host):
    # As Ollama's own tools read OLLAMA_HOST: not port 80.
    (url,) = Settings.from_env({"OLLAMA_HOST": host}).llm_urls
    assert url.endswith(":11434") and url.startswith("http://")


def test_the_llm_backend_and_its_urls():
    ollama = Settings.from_env({"STORYAPP_LLM_URL": "gpu-a, http://gpu-b:9000", "OLLAMA_HOST": "x"})
    assert ollama.llm_backend == "ollama"
    assert ollama.llm_urls == ("http://gpu-a:11434", "http://gpu-b:9000")  # STORYAPP_LLM_URL wins
    openai = Settings.from_env(
        {
            "STORYAPP_LLM_BACKEND": "openai",
            "STORYAPP_LLM_URL": "http://vllm:8000/v1/, https://api.example/v1",
            "STORYAPP_LLM_API_KEY": "k",
        }
    )
    assert openai.llm_urls == ("http://vllm:8000/v1", "https://api.example/v1")
    # No port: the scheme's own (no one port is an OpenAI-compatible server's).
    bare = Settings.from_env({"STORYAPP_LLM_BACKEND": "openai", "STORYAPP_LLM_URL": "gpu/v1"})
    assert bare.llm_urls == ("http://gpu/v1",)
    assert openai.llm_api_key == "k" and openai.model == "llama3.1:8b"
    local = Settings.from_env({"STORYAPP_LLM_BACKEND": "Local"})
    assert (local.llm_backend, local.llm_urls, local.model) == ("local", (), "gemma3-270m")


def test_a_list_of_hosts_does_not_break_the_command(tmp_path):
    # The ollama package reads OLLAMA_HOST when imported, before storyapp's settings do.
    env = {**os.environ, "OLLAMA_HOST": "http://a:11434,http://b:11434"}
    env["STORYAPP_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "storyapp.cli", "init"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


# Every setting with a bad value of its kind, and what the one line must say. {file} is a file
# that exists (a data directory that is not one).
BAD_VALUES = [
    ({"STORYAPP_DATA_DIR": "{file}"}, "STORYAPP_DATA_DIR: .* is not a directory"),
    ({"STORYAPP_DATA_DIR": "{file}/data"}, "STORYAPP_DATA_DIR: .* is not a directory"),
    ({"STORYAPP_DATABASE_URL": "sqlite://relative.db"}, "STORYAPP_DATABASE_URL must be sqlite:///"),
    ({"STORYAPP_DATABASE_URL": "sqlite:///{file}/x.db"}, "STORYAPP_DATABASE_URL: .* not a dir"),
    ({"STORYAPP_DATABASE_URL": "mysql://db/x"}, "STORYAPP_DATABASE_URL must be sqlite:///path or"),
    ({"STORYAPP_DATABASE_URL": "storyapp.db"}, "STORYAPP_DATABASE_URL must be a URL"),
    ({"STORYAPP_DATABASE_URL": "postgresql://db:99999/x"}, "STORYAPP_DATABASE_URL has a port"),
    ({"STORYAPP_DATABASE_URL": "postgresql:///x"}, "STORYAPP_DATABASE_URL has no host"),
    ({"STORYAPP_QUEUE_URL": "sqlite://queue.db"}, "STORYAPP_QUEUE_URL must be sqlite:///"),
    ({"STORYAPP_QUEUE_URL": "amqp://mq/"}, "STORYAPP_QUEUE_URL must be sqlite:///path or redis"),
    ({"STORYAPP_QUEUE_URL": "redis://:pw@/0"}, "STORYAPP_QUEUE_URL has no host"),
    ({"STORYAPP_QUEUE_URL": "unix://"}, "STORYAPP_QUEUE_URL must be unix:///path"),
    ({"STORYAPP_QUEUE_NAME": "my queue"}, "STORYAPP_QUEUE_NAME must be 1-100 letters"),
    ({"STORYAPP_LLM_BACKEND": "vllm"}, "STORYAPP_LLM_BACKEND must be one of ollama, openai"),
    ({"STORYAPP_LLM_BACKEND": "openai"}, "STORYAPP_LLM_URL is needed"),
    ({"STORYAPP_LLM_URL": "ftp://x"}, "STORYAPP_LLM_URL entries must be like"),
    ({"STORYAPP_LLM_API_KEY": "sk one"}, "STORYAPP_LLM_API_KEY must be printable ASCII"),
    ({"OLLAMA_HOST": "http://a:1,"}, "OLLAMA_HOST has an empty entry"),
    ({"OLLAMA_HOST": "http://[::1"}, "OLLAMA_HOST entries must be like http://host:11434"),
    ({"OLLAMA_HOST": "http://a:99999"}, "OLLAMA_HOST entries must be like"),
    ({"OLLAMA_HOST": "ftp://a"}, "OLLAMA_HOST entries must be like"),
    ({"STORYAPP_MODEL": "llama 3"}, "STORYAPP_MODEL must be a model name"),
    ({"STORYAPP_MODEL": "m" * 201}, "STORYAPP_MODEL must be a model name"),
    ({"STORYAPP_LLM_CONCURRENCY": "abc"}, "STORYAPP_LLM_CONCURRENCY must be a whole number"),
    ({"STORYAPP_LLM_CONCURRENCY": "0"}, "STORYAPP_LLM_CONCURRENCY must be between 1 and"),
    ({"STORYAPP_LLM_CONCURRENCY_SCOPE": "host"}, "STORYAPP_LLM_CONCURRENCY_SCOPE must be proc"),
    ({"STORYAPP_LLM_CONCURRENCY_SCOPE": "redis"}, "needs a redis:// STORYAPP_QUEUE_URL"),
    ({"STORYAPP_LLM_TIMEOUT": "-1"}, "STORYAPP_LLM_TIMEOUT must be between"),
    ({"STORYAPP_LLM_TIMEOUT": "nan"}, "STORYAPP_LLM_TIMEOUT must be between"),
    ({"STORYAPP_LLM_TIMEOUT": "soon"}, "STORYAPP_LLM_TIMEOUT must be a number"),
    ({"STORYAPP_WORKERS": "0"}, "STORYAPP_WORKERS must be between"),
    ({"STORYAPP_WORKERS": "2.5"}, "STORYAPP_WORKERS must be a whole number"),
    ({"STORYAPP_SCHEDULE": "hourly"}, "STORYAPP_SCHEDULE must have 5 crontab fields"),
    ({"STORYAPP_SCHEDULE": "99 * * * *"}, "STORYAPP_SCHEDULE '99 \\* \\* \\* \\*': 99 is not"),
    ({"STORYAPP_API_TOKEN": "tok\u00e9n"}, "STORYAPP_API_TOKEN must be printable ASCII"),
    ({"STORYAPP_READ_TOKEN": "line\nbreak"}, "STORYAPP_READ_TOKEN must be printable ASCII"),
    ({"STORYAPP_RETENTION_DAYS": "0"}, "STORYAPP_RETENTION_DAYS must be between 1 and"),
    ({"STORYAPP_RETENTION_DAYS": "2.5"}, "STORYAPP_RETENTION_DAYS must be a whole number"),
]


def test_every_setting_has_a_bad_value_in_the_table():
    # A setting added to config.py without a case here would go untested.
    source = Path(config.__file__).read_text()
    named = set(re.findall(r'"((?:STORYAPP|OLLAMA)_[A-Z_]+)"', source))
    covered = {name for env, _ in BAD_VALUES for name in env}
    assert named - covered == set()


def filled(env: dict, tmp_path: Path) -> dict:
    file = tmp_path / "a-file"
    file.write_text("not a directory")
    return {name: value.replace("{file}", str(file)) for name, value in env.items()}


@pytest.mark.parametrize("env, message", BAD_VALUES)
def test_a_bad_value_is_one_line_naming_the_variable(env, message, tmp_path, monkeypatch):
    env = filled(env, tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message) as raised:
        Settings.from_env(env)
    assert "\n" not in str(raised.value)
    # And through the command, as a user meets it: one line on stderr, a non-zero exit.
    for name in [n for n in os.environ if n.startswith(("STORYAPP_", "OLLAMA_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    done = run_cli(["init"])
    assert done.returncode == 1 and done.stdout == ""
    assert re.fullmatch(f"storyapp: error: .*{message}.*\n", done.stderr), done.stderr


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    """The command in this process (a subprocess per case would take a second each)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.mark.parametrize(
    "name, value",
    [("STORYAPP_DATABASE_URL", "sqlite://relative.db"), ("STORYAPP_DATA_DIR", "/etc/passwd")],
)
def test_the_console_script_says_one_line_and_no_traceback(name, value, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORYAPP_", "OLLAMA_"))}
    env[name] = value
    done = subprocess.run(
        [sys.executable, "-m", "storyapp.cli", "init"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and name in done.stderr
    assert not (tmp_path / "data").exists()  # nothing was made with the default instead
