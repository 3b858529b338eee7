"""A job's progress in a terminal: the bar that `storyapp generate --wait` and the demo show
until the job ends, and the line that sums it up."""

import sys
import time

from tqdm import tqdm

from storyapp.models import Job

ENDED = ("succeeded", "failed", "cancelled")
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} clusters{postfix}"


def watch_job(job_id: str, poll_s: float = 0.2) -> dict:
    """A progress bar over the job's clusters until it ends; returns the final job."""
    bar = tqdm(
        total=None, desc="queued", bar_format=BAR_FORMAT, file=sys.stderr, dynamic_ncols=True
    )
    waited_for_worker = time.monotonic()
    try:
        while True:
            job = Job.get_by_id(job_id).to_dict()
            if job["total"] is not None and bar.total != job["total"]:
                bar.reset(total=job["total"])
            bar.n = job["done"]
            bar.set_description(job["status"], refresh=False)
            bar.set_postfix_str(progress_postfix(job), refresh=False)
            bar.refresh()
            if job["status"] in ENDED:
                return job
            if job["status"] == "queued" and time.monotonic() - waited_for_worker > 10:
                bar.write("still queued: is a worker running? (storyapp worker)")
                waited_for_worker = float("inf")
            time.sleep(poll_s)
    finally:
        bar.close()


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
    return line + (f"; error: {job['error']}" if job["error"] else "")
