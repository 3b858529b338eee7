"""`storyapp worker` processes for the tests, and what a job that ended well looks like."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from storyapp import heartbeat, llmhealth
from storyapp.llm import from_settings
from storyapp.models import Job, JobCluster, Story


def wait_until(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def storyapp_env(tmp_path, ollama_url: str, **extra: str) -> dict[str, str]:
    """The environment a `storyapp` subprocess of a test runs with: its data in tmp_path."""
    return {
        **os.environ,
        "STORYAPP_DATA_DIR": str(tmp_path / "data"),
        "OLLAMA_HOST": ollama_url,
        "STORYAPP_SCHEDULE": "off",
        "STORYAPP_WORKERS": "4",
        "STORYAPP_LLM_CONCURRENCY": "4",
        **extra,
    }


REPO = Path(__file__).resolve().parent.parent
# The contract's other way to run a worker, from the project's directory (its tasks.py).
HUEY_CONSUMER = [str(Path(sys.executable).with_name("huey_consumer")), "tasks.huey", "-k", "thread"]


class WorkerProcess:
    def __init__(
        self,
        tmp_path,
        ollama_url: str,
        n: int,
        env: dict[str, str],
        *args: str,
        command: list[str] | None = None,
    ):
        self.log = tmp_path / f"worker-{n}.log"
        env = storyapp_env(tmp_path, ollama_url, **env)
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                command or [sys.executable, "-m", "storyapp.cli", "worker", *args],
                env=env,
                cwd=REPO if command else tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: "Huey consumer started" in self.log.read_text(), 30, "worker start")

    def stop(self, sig=signal.SIGTERM, timeout: float = 90) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def job_of(job_id: str) -> Job:
    return Job.get_by_id(job_id)


def assert_finished_once(job_id: str) -> None:
    job = job_of(job_id)
    assert job.status == "succeeded", job.error
    assert job.done == job.total
    assert job.llm + job.single == job.total  # every cluster counted once, none twice
    clusters = list(JobCluster.select().where(JobCluster.job == job_id))
    assert all(c.status == "done" and c.story_id for c in clusters)
    assert Story.select().count() == job.total  # no story written twice


def report_from(settings, *, checks=None) -> tuple[str, llmhealth.HostChecks]:
    """A worker with `settings` registers, checks every host it calls, and beats."""
    llm = from_settings(settings)
    checks = checks or llmhealth.HostChecks()
    try:
        while checks.check_next(llm) is not None:
            pass
    finally:
        llm.close()
    worker = heartbeat.register()
    heartbeat.beat(worker, checks.report())
    return worker, checks
