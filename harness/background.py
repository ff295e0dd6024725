"""Slow kernel releases done off the case's critical path, and waited for before the process exits.

Closing an AF_PACKET socket or removing a tracefs instance waits for an RCU grace period (13 to
40 ms here). Nothing about the case depends on when that wait ends, so the harness hands such
releases to a few background threads; `flush()` (at exit, on SIGTERM via pytest's unwinding)
waits until every one has finished and re-raises the first error.
"""

from __future__ import annotations

import atexit
import threading
from concurrent.futures import Future, ThreadPoolExecutor

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_pending: set[Future] = set()
_errors: list[BaseException] = []


def submit(fn, *args) -> Future:
    """Run fn(*args) in the background; its result or error is kept in the returned Future."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="socklab-bg")
        fut = _executor.submit(fn, *args)
        _pending.add(fut)
    fut.add_done_callback(_done)
    return fut


def _done(fut: Future):
    with _lock:
        _pending.discard(fut)
    if fut.exception() is not None:
        _errors.append(fut.exception())


def flush(timeout: float = 30.0) -> None:
    """Wait until every background release has finished; raise the first error any of them had."""
    with _lock:
        pending = list(_pending)
    for fut in pending:
        fut.exception(timeout)
    if _errors:
        err = _errors[0]
        _errors.clear()
        raise err


atexit.register(flush)
