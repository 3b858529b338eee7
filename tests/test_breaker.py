"""The circuit breaker of one LLM host: closed, open for a cool-down, half-open for one probe."""

from storyapp.breaker import Breaker

HOST = "http://h:11434"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> Breaker:
    return Breaker(HOST, failures=3, cool_down_s=60.0, clock=clock)


def test_failures_in_a_row_open_it_and_an_answer_in_between_resets_the_count():
    clock = Clock()
    b = breaker(clock)
    b.failed("timeout")
    b.failed("timeout")
    b.answered()  # a reply: the count starts again
    b.failed("timeout")
    b.failed("refused")
    assert b.state == "closed" and b.allows()
    b.failed("timeout")
    assert b.state == "open" and not b.allows()
    assert b.why() == f"{HOST}: 2 timeouts and 1 refused connection in a row, skipped for 60 s"


def test_after_the_cool_down_one_probe_goes_and_its_answer_closes_it():
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failed("timeout")
    clock.now += 59.9
    assert b.state == "open" and not b.allows()
    clock.now += 0.1
    assert b.state == "half-open" and b.allows()
    b.sent()  # the probe
    assert b.state == "half-open" and not b.allows()  # one request only
    b.answered()
    assert b.state == "closed" and b.allows()
    b.failed("timeout")
    assert b.state == "closed"  # counting from nothing again


def test_a_probe_that_fails_opens_it_for_another_cool_down():
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failed("refused")
    clock.now += 60
    b.sent()
    b.failed("refused")  # one failure is enough for a probe
    assert b.state == "open" and not b.allows()
    assert b.why() == f"{HOST}: 4 refused connections in a row, skipped for 60 s"
    clock.now += 60
    assert b.state == "half-open" and b.allows()


def test_a_probe_that_came_to_nothing_lets_the_next_one_go():
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failed("timeout")
    clock.now += 60
    b.sent()
    assert not b.allows()
    b.abandoned()  # its caller failed before the host said anything
    assert b.state == "half-open" and b.allows()


def test_three_timeouts_say_so():
    b = breaker(Clock())
    for _ in range(3):
        b.failed("timeout")
    assert b.why() == f"{HOST}: 3 timeouts in a row, skipped for 60 s"


def test_a_host_that_answers_a_check_is_due_a_probe_at_once():
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failed("refused")
    b.due_now()
    assert b.state == "half-open" and b.allows()
    b.sent()
    b.due_now()  # a second check while the probe is out changes nothing
    assert not b.allows()
