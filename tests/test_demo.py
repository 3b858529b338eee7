import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import free_port

import storyapp
from storyapp.corpus import SAMPLE


def demo_env(ollama_url: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "OLLAMA_HOST": ollama_url, "STORYAPP_SCHEDULE": "off", **extra}
    if "STORYAPP_DATA_DIR" not in extra:
        env.pop("STORYAPP_DATA_DIR", None)
    return env


def run_demo(tmp_path, ollama_url: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "storyapp.cli", "demo"],
        cwd=tmp_path,
        env=demo_env(ollama_url, **extra),
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
    # Its own directory, not ./data where `storyapp serve` keeps real news; and it says so.
    demo_dir = tmp_path / "data" / "demo"
    assert out.splitlines()[0] == (
        f"Data in {demo_dir} (STORYAPP_DATA_DIR chooses another directory)"
    )
    assert (demo_dir / "storyapp.db").exists() and (demo_dir / "queue.db").exists()
    assert not (tmp_path / "data" / "storyapp.db").exists()
    # Off a terminal, the progress is a few plain lines, not a bar redrawn ten times a second.
    assert "\r" not in done.stderr
    assert 2 <= len(done.stderr.splitlines()) <= 12, done.stderr
    assert done.stderr.splitlines()[-1].startswith("succeeded: ")


def test_demo_names_the_kind_of_server_that_does_not_answer(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    done = run_demo(tmp_path, "", STORYAPP_LLM_BACKEND="openai", STORYAPP_LLM_URL=url)
    assert done.returncode == 0, done.stderr
    assert f"The OpenAI-compatible server is not reachable at {url}" in done.stdout
    assert "Ollama" not in done.stdout


def test_demo_uses_the_data_directory_it_is_given(tmp_path):
    chosen = tmp_path / "elsewhere"
    done = run_demo(tmp_path, f"http://127.0.0.1:{free_port()}", STORYAPP_DATA_DIR=str(chosen))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Data in {chosen} ")
    assert (chosen / "storyapp.db").exists()
    assert not (tmp_path / "data").exists()


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


def job_rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT id, status, done, total FROM job").fetchall()


def test_ctrl_c_stops_the_demo_and_cancels_its_job(tmp_path, ollama):
    ollama.latency = 2.0  # long enough to interrupt it half-way
    with subprocess.Popen(
        [sys.executable, "-m", "storyapp.cli", "demo"],
        cwd=tmp_path,
        env=demo_env(ollama.url, STORYAPP_WORKERS="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        for line in proc.stderr:  # the progress lines: wait until clusters are being written
            if line.startswith("running: "):
                break
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    stopped_in = time.monotonic() - started
    assert proc.returncode == 130
    assert stopped_in < ollama.latency + 3  # no waiting for the clusters in flight, or the rest
    ((job_id, status, done, total),) = job_rows(tmp_path / "data" / "demo" / "storyapp.db")
    assert err.splitlines()[-1] == f"storyapp: demo stopped: job {job_id} cancelled"
    assert "Traceback" not in err and "## " not in out
    assert status == "cancelled" and done < total
    # The consumer stopped with the program: no cluster was settled after it ended.
    time.sleep(ollama.latency + 0.5)
    assert job_rows(tmp_path / "data" / "demo" / "storyapp.db") == [(job_id, status, done, total)]


def test_the_sample_ships_in_the_package_and_the_demo_runs_from_it(tmp_path):
    # What `pip install .` installs is what setuptools' build_py puts in the wheel: the
    # packages and their package data. Built here from a copy of the project, with the
    # setuptools at hand (no index needed), then the demo runs from that and nothing else.
    project = Path(storyapp.__file__).resolve().parent.parent
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(project / name, source)
    shutil.copytree(
        project / "storyapp", source / "storyapp", ignore=shutil.ignore_patterns("__pycache__")
    )
    built = tmp_path / "installed"
    subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py"]
        + ["--build-lib", str(built)],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=120,
    )
    shipped = built / "storyapp" / SAMPLE.relative_to(SAMPLE.parents[1])
    assert shipped.read_bytes() == SAMPLE.read_bytes()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = demo_env(f"http://127.0.0.1:{free_port()}", PYTHONPATH=str(built))
    done = subprocess.run(
        [sys.executable, "-c", "import storyapp, sys; print(storyapp.__file__); sys.exit()"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == str(built / "storyapp" / "__init__.py")
    done = subprocess.run(
        [sys.executable, "-m", "storyapp.cli", "demo"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n## ") >= 30
