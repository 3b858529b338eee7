import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize(
    "env, message",
    [
        ({"STORYAPP_LLM_CONCURRENCY": "abc"}, "STORYAPP_LLM_CONCURRENCY must be a number"),
        ({"STORYAPP_WORKERS": "0"}, "STORYAPP_WORKERS must be between"),
        ({"STORYAPP_LLM_TIMEOUT": "-1"}, "STORYAPP_LLM_TIMEOUT must be between"),
        ({"OLLAMA_HOST": "http://a:1,"}, "OLLAMA_HOST has an empty entry"),
        ({"OLLAMA_HOST": "http://[::1"}, "OLLAMA_HOST entries must be like http://host:11434"),
        ({"OLLAMA_HOST": "http://a:99999"}, "OLLAMA_HOST entries must be like"),
        ({"OLLAMA_HOST": "ftp://a"}, "OLLAMA_HOST entries must be like"),
        ({"STORYAPP_RETENTION_DAYS": "0"}, "STORYAPP_RETENTION_DAYS must be between 1 and"),
        ({"STORYAPP_RETENTION_DAYS": "2.5"}, "STORYAPP_RETENTION_DAYS must be a number"),
        ({"STORYAPP_LLM_CONCURRENCY_SCOPE": "host"}, "must be process or redis"),
        ({"STORYAPP_LLM_BACKEND": "vllm"}, "STORYAPP_LLM_BACKEND must be one of ollama, openai"),
        ({"STORYAPP_LLM_BACKEND": "openai"}, "STORYAPP_LLM_URL is needed"),
        ({"STORYAPP_LLM_URL": "ftp://x"}, "STORYAPP_LLM_URL entries must be like"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)
