"""The LLM hosts as the workers see them. The workers make the calls, and may be configured
with other hosts than the web process: each worker checks the hosts it calls (does it answer,
has it the model) and sends what it found with its heartbeat. `/health` and the page read the
freshest report of each host among the live workers; with no worker alive nobody has checked,
and they say so rather than guess.

A worker checks one host per heartbeat, the one checked longest ago, and each host at most
every `CHECK_EVERY_S`, with a short timeout: a hung host delays a beat by one timeout at most,
however many hosts there are, and the servers are not asked every two seconds.
"""

import json
from datetime import datetime

from storyapp import heartbeat
from storyapp.llm import LLM
from storyapp.models import isoformat, utcnow

CHECK_EVERY_S = 30.0
# Well under heartbeat.DEAD_AFTER_S: a beat waits for the check it makes.
CHECK_TIMEOUT_S = 3.0


class HostChecks:
    """One worker's last check of each host of its LLM: {host: {"reachable",
    "model_available", "model", "backend", "error", "checked_at"}}."""

    def __init__(self) -> None:
        self.found: dict[str, dict] = {}

    def check_next(self, llm: LLM, now: datetime | None = None) -> str | None:
        """Checks the host whose check is oldest, if one is due; returns it, else None."""
        now = now or utcnow()
        # The hosts of the LLM as configured now: one dropped from the settings is not reported.
        self.found = {h: f for h, f in self.found.items() if h in llm.hosts}
        due = [
            h
            for h in llm.hosts
            if h not in self.found or _age_s(self.found[h], now) >= CHECK_EVERY_S
        ]
        if not due:
            return None
        host = min(due, key=lambda h: self.found[h]["checked_at"] if h in self.found else "")
        result = llm.check_host(host, CHECK_TIMEOUT_S)
        self.found[host] = {
            "reachable": result["reachable"],
            "model_available": result["reachable"] and result["model_available"],
            "model": llm.model,
            "backend": llm.name,
            "error": result["error"],
            "checked_at": isoformat(utcnow()),
        }
        return host

    def report(self) -> str:
        """What the heartbeat stores (Worker.llm_hosts)."""
        return json.dumps(self.found, sort_keys=True)


def workers_view(now: datetime | None = None) -> dict:
    """Each LLM host as the freshest report of a live worker has it, with that report's age:
    {"known", "reachable", "model_available", "hosts": [...]}, and "errors" for the hosts that
    are down. `reachable` and `model_available` are for any host, as a request needs one; with
    no report they are None and "note" says why."""
    now = now or utcnow()
    workers = list(heartbeat.alive(now))
    freshest: dict[str, dict] = {}
    for worker in workers:
        for host, found in json.loads(worker.llm_hosts or "{}").items():
            if host not in freshest or found["checked_at"] > freshest[host]["checked_at"]:
                freshest[host] = {"host": host, **found, "worker": worker.id}
    hosts = [{**freshest[h], "age_s": round(_age_s(freshest[h], now), 1)} for h in sorted(freshest)]
    if not hosts:
        why = "no worker is alive" if not workers else "no worker has checked its LLM hosts yet"
        return {
            "known": False,
            "reachable": None,
            "model_available": None,
            "note": f"unknown: {why} (the workers check the LLM hosts they call)",
            "hosts": [],
        }
    view = {
        "known": True,
        "reachable": any(h["reachable"] for h in hosts),
        "model_available": any(h["model_available"] for h in hosts),
        "hosts": hosts,
    }
    down = [h for h in hosts if not h["model_available"]]
    if down:
        view["errors"] = [f"{h['host']}: {_trouble(h)}" for h in down]
    return view


def healthy(view: dict) -> bool:
    """Whether the workers know every host they call to answer with the model."""
    return view["known"] and all(h["model_available"] for h in view["hosts"])


def _trouble(host: dict) -> str:
    if not host["reachable"]:
        return host["error"] or "does not answer"
    return no_model(host["backend"], host["model"])


def no_model(backend: str, model: str) -> str:
    """What a host lacks, with the command that fetches it where there is one."""
    if backend == "ollama":
        return f"has no model {model} (ollama pull {model})"
    return f"has no model {model}"


def _age_s(found: dict, now: datetime) -> float:
    return (now - datetime.fromisoformat(found["checked_at"].removesuffix("Z"))).total_seconds()
