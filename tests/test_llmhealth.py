"""The LLM hosts as the workers see them (llmhealth.py): each worker checks the hosts it calls
with its heartbeat, and /health and the page show the freshest report, not the web process's
own guess."""

import json
from datetime import timedelta

from conftest import free_port, init, make_settings
from workers import report_from, wait_until

from storyapp import heartbeat, llmhealth, tasks
from storyapp.api import create_app
from storyapp.db import transaction
from storyapp.fake_ollama import FakeOllama
from storyapp.llm import from_settings
from storyapp.models import Worker, utcnow


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_a_worker_checks_one_host_a_beat_and_each_again_only_after_30_s(tmp_path, ollama):
    dead = dead_url()
    llm = from_settings(make_settings(tmp_path, f"{ollama.url},{dead}"))
    checks = llmhealth.HostChecks()
    try:
        assert checks.check_next(llm) == ollama.url
        assert checks.check_next(llm) == dead
        assert checks.check_next(llm) is None  # both checked: nothing is due
        later = utcnow() + timedelta(seconds=llmhealth.CHECK_EVERY_S + 1)
        assert checks.check_next(llm, later) in (ollama.url, dead)
    finally:
        llm.close()
    up, down = checks.found[ollama.url], checks.found[dead]
    assert (up["reachable"], up["model_available"], up["error"]) == (True, True, None)
    assert (down["reachable"], down["model_available"]) == (False, False)
    assert "cannot connect" in down["error"] and up["backend"] == "ollama"


def test_health_shows_the_workers_view_not_the_web_process_guess(tmp_path, ollama):
    # The web process is configured with a host where nothing listens; the worker, which makes
    # the calls, with the fake server: the workers' view is the one that counts.
    web = init(make_settings(tmp_path, dead_url()))
    client = create_app(web).test_client()
    worker, _ = report_from(make_settings(tmp_path, ollama.url))
    body = client.get("/health").get_json()
    assert body["status"] == "ok"
    assert body["llm"]["reachable"] is True and body["llm"]["model_available"] is True
    (host,) = body["llm"]["hosts"]
    assert host["host"] == ollama.url and host["worker"] == worker
    assert host["model"] == "llama3.1:8b" and 0 <= host["age_s"] < 5
    assert tasks._state["llm"] is None  # the web process asked no LLM


def test_health_is_degraded_when_the_workers_find_a_host_down(tmp_path, ollama):
    client = create_app(init(make_settings(tmp_path, ollama.url))).test_client()
    dead = dead_url()
    report_from(make_settings(tmp_path, f"{ollama.url},{dead}"))
    body = client.get("/health").get_json()
    assert body["status"] == "degraded"
    # A request still finds a host that answers with the model.
    assert body["llm"]["reachable"] is True and body["llm"]["model_available"] is True
    (error,) = body["llm"]["errors"]
    assert error.startswith(f"{dead}: cannot connect")
    reachable = {h["host"]: h["reachable"] for h in body["llm"]["hosts"]}
    assert reachable == {ollama.url: True, dead: False}


def test_a_missing_model_is_named_with_the_pull_to_run(tmp_path, ollama):
    client = create_app(init(make_settings(tmp_path, ollama.url))).test_client()
    report_from(make_settings(tmp_path, ollama.url, STORYAPP_MODEL="llama9:70b"))
    body = client.get("/health").get_json()
    assert body["status"] == "degraded"
    assert body["llm"]["reachable"] is True and body["llm"]["model_available"] is False
    assert body["llm"]["errors"] == [
        f"{ollama.url}: has no model llama9:70b (ollama pull llama9:70b)"
    ]


def test_with_no_worker_alive_health_says_unknown_and_does_not_guess(tmp_path, ollama):
    client = create_app(init(make_settings(tmp_path, ollama.url))).test_client()
    body = client.get("/health").get_json()
    assert body["status"] == "degraded" and body["workers"] == {"alive": 0}
    assert body["llm"]["known"] is False
    # The contract's booleans, from the web process's own check, and said to be that.
    assert body["llm"]["reachable"] is True and body["llm"]["model_available"] is True
    assert body["llm"]["note"].startswith("unknown: no worker is alive")
    assert body["llm"]["note"].endswith("are the web process's own check")
    assert "LLM servers: unknown: no worker is alive" in client.get("/").get_data(as_text=True)
    heartbeat.register()  # alive, but it has checked nothing yet
    note = client.get("/health").get_json()["llm"]["note"]
    assert note.startswith("unknown: no worker has checked")


def test_the_freshest_report_of_a_live_worker_wins(tmp_path):
    client = create_app(init(make_settings(tmp_path, dead_url()))).test_client()
    host = "http://llm.example:11434"
    now = utcnow()

    def found(reachable: bool, seconds_ago: float) -> dict:
        at = now - timedelta(seconds=seconds_ago)
        return {
            "reachable": reachable,
            "model_available": reachable,
            "model": "llama3.1:8b",
            "backend": "ollama",
            "error": None if reachable else "cannot connect",
            "checked_at": at.isoformat(timespec="seconds") + "Z",
        }

    dead_since = now - timedelta(seconds=heartbeat.DEAD_AFTER_S + 5)
    with transaction():
        for worker_id, beat_at, report in (
            ("older", now, found(False, 20)),
            ("newer", now, found(True, 4)),
            # A dead worker's report is not read, however fresh it says it is.
            ("dead", dead_since, found(False, 0)),
        ):
            Worker.create(
                id=worker_id,
                host="box",
                pid=1,
                started_at=beat_at,
                heartbeat_at=beat_at,
                llm_hosts=json.dumps({host: report}),
            )
    body = client.get("/health").get_json()
    assert body["status"] == "ok"
    (seen,) = body["llm"]["hosts"]
    assert seen["worker"] == "newer" and seen["reachable"] is True and 3 <= seen["age_s"] <= 6


def test_a_worker_process_reports_its_hosts_with_its_heartbeat(tmp_path, workers, backend):
    with FakeOllama() as server:
        dead = dead_url()
        client = create_app(init(make_settings(tmp_path, dead, **backend.env))).test_client()
        workers(f"{server.url},{dead}")

        def both_checked() -> bool:
            return len(client.get("/health").get_json()["llm"]["hosts"]) == 2

        wait_until(both_checked, 30, "the worker's check of both hosts")
        body = client.get("/health").get_json()
    assert body["status"] == "degraded" and body["workers"] == {"alive": 1}
    up, down = sorted(body["llm"]["hosts"], key=lambda h: h["host"] != server.url)
    assert up["host"] == server.url and up["model_available"] is True
    assert down["host"] == dead and down["reachable"] is False
    page = client.get("/").get_data(as_text=True)
    assert server.url in page and dead in page and "cannot connect" in page


def test_a_workers_health_check_only_looks_the_planners_lets_a_probe_go(tmp_path, ollama):
    # Every 30 s a worker checks its hosts: a host whose breaker is open after failed requests
    # stays skipped for it (a server that lists its models may still hang on a story). The
    # planner's check before a run lets a probe go at once (slots.Hosts.checked).
    llm = from_settings(make_settings(tmp_path, ollama.url))
    try:
        breaker = llm._slots.hosts.breakers[ollama.url]
        for _ in range(breaker.failures_to_open):
            breaker.failed("refused")
        assert llmhealth.HostChecks().check_next(llm) == ollama.url
        assert breaker.state == "open"
        assert llm.check()["reachable"] is True
        assert breaker.state == "half-open"
    finally:
        llm.close()
