"""Many clients at once, and the web process restarted mid-job, against a real WSGI server."""

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import article, free_port, running_consumer, serving, shifted_sample
from workers import storyapp_env, wait_until

ENDED = ("succeeded", "failed", "cancelled")


@pytest.fixture
def server(app):
    """The app behind waitress on a free port, as `storyapp serve` runs it."""
    with serving(app) as url:
        yield url


@pytest.mark.backends
def test_fifty_simultaneous_requests_make_one_job(server):
    def post(_):
        return requests.post(
            f"{server}/stories/generate", json={"time_window_hours": 12}, timeout=30
        )

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(post, range(50)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 49 + [202]
    assert len({a.json()["job_id"] for a in answers}) == 1
    assert sum(bool(a.json().get("deduplicated")) for a in answers) == 49


def test_writers_and_readers_during_a_job_never_see_a_locked_database(server, ollama):
    ollama.latency = 0.02
    with requests.Session() as http:
        assert http.post(f"{server}/articles", json=shifted_sample(), timeout=30).ok
        job_url = server + http.post(f"{server}/stories/generate", timeout=10).json()["status_url"]
    failures: list[str] = []
    stop = threading.Event()

    def writer(n: int):
        with requests.Session() as http:
            batch = 0
            while not stop.is_set():
                batch += 1
                records = [
                    article(100_000 * n + 100 * batch + i, f"Late report {n} {batch} {i}")
                    for i in range(20)
                ]
                answer = http.post(f"{server}/articles", json=records, timeout=30)
                if answer.status_code != 201:
                    failures.append(f"POST /articles {answer.status_code} {answer.text}")

    def reader():
        with requests.Session() as http:
            while not stop.is_set():
                for path in ("/stories?limit=100", "/jobs", "/articles?limit=100", "/health"):
                    answer = http.get(f"{server}{path}", timeout=30)
                    if answer.status_code >= 500:
                        failures.append(f"GET {path} {answer.status_code} {answer.text}")

    with running_consumer(workers=8):
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
        threads += [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 90
        while (job := requests.get(job_url, timeout=10).json())["status"] not in ENDED:
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert job["status"] == "succeeded" and job["error"] is None


def test_restarting_the_web_process_does_not_touch_a_running_job(tmp_path, ollama):
    ollama.hold(after=5)  # the job cannot end while the web process restarts
    port = free_port()
    env = storyapp_env(tmp_path, ollama.url, STORYAPP_WORKERS="2", STORYAPP_LLM_CONCURRENCY="2")
    base = f"http://127.0.0.1:{port}"

    def start(*command):
        return subprocess.Popen(
            [sys.executable, "-m", "storyapp.cli", *command],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def until_up():
        deadline = time.monotonic() + 30
        while True:
            try:
                return requests.get(f"{base}/health", timeout=1).raise_for_status()
            except requests.RequestException:
                assert time.monotonic() < deadline
                time.sleep(0.1)

    web = start("serve", "--port", str(port))
    worker = start("worker")
    try:
        until_up()
        requests.post(f"{base}/articles", json=shifted_sample(), timeout=30).raise_for_status()
        job_url = base + requests.post(f"{base}/stories/generate", timeout=10).json()["status_url"]
        wait_until(lambda: ollama.held == 2, what="both worker threads mid-cluster")
        web.terminate()
        web.wait(timeout=20)
        web = start("serve", "--port", str(port))
        until_up()
        seen = [requests.get(job_url, timeout=10).json()]
        ollama.release()
        deadline = time.monotonic() + 90
        while seen[-1]["status"] not in ENDED:
            assert time.monotonic() < deadline, seen[-1]
            time.sleep(0.2)
            seen.append(requests.get(job_url, timeout=10).json())
    finally:
        ollama.release()  # a worker stopping with SIGTERM finishes what it holds
        for process in (web, worker):
            process.terminate()
            process.wait(timeout=60)
    assert seen[0]["status"] == "running" and seen[0]["done"] < seen[-1]["done"]
    assert seen[-1]["status"] == "succeeded"
    assert [s["done"] for s in seen] == sorted(s["done"] for s in seen)  # progress only grows
