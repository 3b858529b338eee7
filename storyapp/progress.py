"""A job's progress where a person or a log reads it: the bar that `storyapp generate --wait`,
`storyapp watch` and the demo show until the job ends, and the line that sums it up."""

import sys
import time
from typing import TextIO

from tqdm import tqdm

from storyapp.models import Job

ENDED = ("succeeded", "failed", "cancelled")
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} clusters{postfix}"
# Off a terminal (a pipe, a log file) a line this often, and at each change of status: a bar
# redrawn five times a second wrote 790 KB of stderr into a log in 11 minutes.
LINE_EVERY_S = 5.0
STILL_QUEUED_S = 10.0


def watch_job(job_id: str, poll_s: float = 0.2, file: TextIO | None = None) -> dict:
    """The job's progress on `file` (stderr) until it ends; returns the final job. A bar on a
    terminal, plain lines elsewhere."""
    file = sys.stderr if file is None else file
    view = _Bar(file) if file.isatty() else _Lines(file)
    waited_for_worker = time.monotonic()
    try:
        while True:
            job = Job.get_by_id(job_id).to_dict()
            view.show(job)
            if job["status"] in ENDED:
                return job
            if job["status"] == "queued" and time.monotonic() - waited_for_worker > STILL_QUEUED_S:
                view.write("still queued: is a worker running? (storyapp worker)")
                waited_for_worker = float("inf")
            time.sleep(poll_s)
    finally:
        view.close()


class _Bar:
    def __init__(self, file: TextIO):
        self.bar = tqdm(
            total=None, desc="queued", bar_format=BAR_FORMAT, file=file, dynamic_ncols=True
        )

    def show(self, job: dict) -> None:
        bar = self.bar
        if job["total"] is not None and bar.total != job["total"]:
            bar.reset(total=job["total"])
        bar.n = job["done"]
        bar.set_description(job["status"], refresh=False)
        bar.set_postfix_str(progress_postfix(job), refresh=False)
        bar.refresh()

    def write(self, line: str) -> None:
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()


class _Lines:
    def __init__(self, file: TextIO):
        self.file = file
        self.status: str | None = None
        self.shown_at = float("-inf")

    def show(self, job: dict) -> None:
        now = time.monotonic()
        if job["status"] == self.status and now - self.shown_at < LINE_EVERY_S:
            return
        self.status, self.shown_at = job["status"], now
        total = "?" if job["total"] is None else job["total"]
        self.write(f"{job['status']}: {job['done']}/{total} clusters, {progress_postfix(job)}")

    def write(self, line: str) -> None:
        print(line, file=self.file, flush=True)

    def close(self) -> None:
        pass


def progress_postfix(job: dict) -> str:
    # The job's own clock, not the bar's: the bar may start late, and the clusters settled at
    # planning would make tqdm's rate (and so its ETA) far too fast.
    c = job["counts"]
    eta = "?" if job["eta_s"] is None else tqdm.format_interval(job["eta_s"])
    return (
        f"llm {c['llm']} cached {c['cached']} fallback {c['fallback']} reused {c['reused']} "
        f"single {c['single']} [{tqdm.format_interval(job['duration_s'] or 0)} elapsed, ETA {eta}]"
    )


def describe_job(job: dict) -> str:
    c = job["counts"]
    line = (
        f"job {job['id']} {job['status']} in {job['duration_s'] or 0:.1f} s: {job['done']}/"
        f"{job['total'] or 0} clusters ({c['llm']} by the LLM, {c['cached']} from the cache, "
        f"{c['fallback']} fallback, {c['reused']} unchanged, {c['single']} single-article)"
    )
    if c["upgraded"]:
        line += f"; {c['upgraded']} fallback stories rewritten by the LLM"
    if job["note"]:
        line += f"; {job['note']}"
    return line + (f"; error: {job['error']}" if job["error"] else "")
