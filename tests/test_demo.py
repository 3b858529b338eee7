import os
import subprocess
import sys

from conftest import free_port


def run_demo(tmp_path, ollama_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OLLAMA_HOST": ollama_url, "STORYAPP_SCHEDULE": "off"}
    env.pop("STORYAPP_DATA_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "storyapp.cli", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_without_ollama_falls_back_and_says_so(tmp_path):
    done = run_demo(tmp_path, f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Ollama is not reachable" in out and "extractive fallback" in out
    assert out.count("\n## ") >= 30  # a story per event of the sample
    assert "succeeded" in out and "Traceback" not in done.stderr
    assert (tmp_path / "data" / "storyapp.db").exists()
    assert (tmp_path / "data" / "queue.db").exists()


def test_demo_with_ollama_writes_llm_stories_and_reuses_them(tmp_path, ollama):
    first = run_demo(tmp_path, ollama.url)
    assert first.returncode == 0, first.stderr
    assert "not reachable" not in first.stdout
    assert ", llm;" in first.stdout
    calls = ollama.chat_count
    assert calls > 20
    second = run_demo(tmp_path, ollama.url)  # same sample, moved to now again
    assert second.returncode == 0, second.stderr
    assert ollama.chat_count == calls  # every cluster is unchanged: no LLM call
    assert "unchanged" in second.stdout
