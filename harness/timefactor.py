"""The time factor: the one place where the harness's own deadlines stretch under emulation.

A kernel booted under QEMU's TCG runs the steps 10-14x slower while its timers keep real time. The
harness's deadlines (a program reporting ready, a call returning, a wait for a segment or an `ss`
state) are limits on waiting, not measurements, so they are multiplied by SOCKLAB_TIME_FACTOR (set by
`socklab matrix` in the guest; 1 on a real machine). Protocol timers the cases set (tcp_fin_timeout,
tcp_rto_min_us) are never scaled: they are what the experiment observes.
"""

from __future__ import annotations

import os
import time

ENV = "SOCKLAB_TIME_FACTOR"


_last: tuple[str, float] = ("1", 1.0)     # (the variable's text, its factor): every wait asks


def factor() -> float:
    """The factor in force (>= 1); a malformed value is an error naming the variable."""
    global _last
    raw = os.environ.get(ENV, "1")
    if raw == _last[0]:
        return _last[1]
    try:
        value = max(float(raw), 1.0)
    except ValueError:
        raise ValueError(f"{ENV}={raw!r}: not a number (e.g. {ENV}=10 under emulation)") from None
    _last = (raw, value)
    return value


def scaled(seconds: float | None) -> float | None:
    """A harness deadline of `seconds` on a real machine, stretched by the time factor."""
    return None if seconds is None else seconds * factor()


def deadline(seconds: float) -> float:
    """time.monotonic() value at which a wait of `seconds` (scaled) gives up."""
    return time.monotonic() + scaled(seconds)
