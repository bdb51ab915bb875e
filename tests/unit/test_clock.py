"""The one clock: polls and retries run on an injected clock, so no test sleeps."""

from __future__ import annotations

import pytest

from streamops.clock import Backoff, FakeClock, RetryAfter, WaitTimeout, any_of, poll, retried


def test_poll_returns_first_answer_and_sleeps_between_checks() -> None:
    clock = FakeClock()
    answers = iter([None, None, "ready"])
    got = poll(lambda: next(answers), timeout_s=60, interval_s=5, what="the run", clock=clock)
    assert got == "ready"
    assert clock.slept == [5, 5]


def test_poll_times_out_naming_what_it_waited_for() -> None:
    clock = FakeClock()
    with pytest.raises(WaitTimeout, match="run 7 to end: no answer within 30 s"):
        poll(lambda: None, timeout_s=30, interval_s=10, what="run 7 to end", clock=clock)
    assert clock.now >= 30


def test_retried_backs_off_exponentially_then_succeeds() -> None:
    clock = FakeClock()
    calls = iter([OSError("a"), OSError("b"), "ok"])

    def step() -> str:
        got = next(calls)
        if isinstance(got, Exception):
            raise got
        return got

    seen: list[int] = []
    out = retried(
        step,
        attempts=5,
        retryable=any_of(OSError),
        backoff=Backoff(1, 60),
        clock=clock,
        on_retry=lambda n, _e, _d: seen.append(n),
    )
    assert out == "ok"
    assert clock.slept == [1, 2]
    assert seen == [1, 2]


def test_retried_honours_retry_after_and_builds_the_final_error() -> None:
    clock = FakeClock()

    def step() -> None:
        raise RetryAfter(7)

    with pytest.raises(RuntimeError, match="gave up after 3"):
        retried(
            step,
            attempts=3,
            retryable=any_of(RetryAfter),
            clock=clock,
            give_up=lambda n, _e: RuntimeError(f"gave up after {n}"),
        )
    assert clock.slept == [7, 7]


def test_retried_does_not_retry_what_is_not_retryable() -> None:
    clock = FakeClock()

    def step() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        retried(step, attempts=5, retryable=any_of(OSError), clock=clock)
    assert clock.slept == []
