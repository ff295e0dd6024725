"""harness.wait.wait_until: the value, the deadline, and what the error says."""

import time

import pytest

from harness.errors import SetupError, StepTimeout
from harness.wait import wait_until


def test_returns_the_first_true_value():
    calls = iter([0, None, "", "found", "later"])
    assert wait_until(lambda: next(calls), 1.0, "a value", interval=0.001) == "found"


def test_looks_at_least_once_even_without_time():
    assert wait_until(lambda: 42, 0, "an answer") == 42


def test_timeout_names_what_and_the_last_thing_seen():
    seen = []

    def never():
        seen.append(len(seen))
        return False
    t0 = time.monotonic()
    with pytest.raises(StepTimeout) as info:
        wait_until(never, 0.05, "the server's FIN", interval=0.01, seen=lambda: f"tries: {len(seen)}")
    assert time.monotonic() - t0 >= 0.05
    assert str(info.value).startswith("the server's FIN not seen within 0.05 s; last seen:\ntries: ")
    assert len(seen) >= 2


def test_error_class_and_exceptions_of_the_condition():
    with pytest.raises(SetupError, match="tracefs instance gone not seen within 0 s"):
        wait_until(lambda: False, 0, "tracefs instance gone", error=SetupError)
    with pytest.raises(ZeroDivisionError):
        wait_until(lambda: 1 / 0, 1.0, "nothing")
