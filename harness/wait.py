"""One way to wait for a condition that has no event to block on: `wait_until`.

Like the kernel selftests' `ksft_busy_wait`: call the condition until it holds or the deadline
passes, sleeping a named interval between tries (an honest `time.sleep`, not a disguised one). On
timeout the error names what was awaited and the last thing seen.
"""

from __future__ import annotations

import time

from .errors import StepTimeout
from .timefactor import scaled
from .errors import hide_own_frames as __tracebackhide__  # noqa: F401 (read by pytest)

POLL = 0.005        # seconds between two looks at a condition (ss state, a counter, /proc)


def wait_until(condition, timeout: float, what: str, *, interval: float = POLL, seen=None, error=StepTimeout,
               explain=None, pause=None):
    """Return condition()'s first true value; raise `error` naming `what` after `timeout` seconds.

    `seen()`, if given, describes the last observation for the error message (e.g. the last `ss`);
    `explain()`, if given, is the whole message instead. The condition runs at least once, and once
    more at the deadline, so a slow machine that sleeps past the deadline still gets a last look.
    `pause(seconds)`, if given, replaces the sleep between tries: it may return early when something
    happened that can change the condition (see Lab.wait_ss: a frame on the link).
    """
    timeout = scaled(timeout)      # stretched under emulation (harness/timefactor.py)
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            if explain is not None:
                raise error(explain())
            last = f"; last seen:\n{seen()}" if seen is not None else ""
            raise error(f"{what} not seen within {timeout:g} s{last}")
        if pause is None:
            time.sleep(min(interval, left))
        else:
            pause(left)
