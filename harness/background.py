"""Work done off the case's critical path, and waited for before the process exits.

Closing an AF_PACKET socket or removing a tracefs instance waits for an RCU grace period (13 to
40 ms here). Nothing about the case depends on when that wait ends, so the harness hands such
releases to a few background threads (`release`); a case's files, summary and page are written
by others (`submit`), so they never queue behind a release that sleeps in the kernel (they did: a
one-case run's end waited 20-30 ms for 10 ms of writing). `flush()` (at the session's end, at exit,
on SIGTERM via pytest's unwinding) waits until every one has finished and re-raises the first
error; `flush(releases=False)` waits for the writing only.
"""

from __future__ import annotations

import atexit
import threading
from concurrent.futures import Future, ThreadPoolExecutor

_lock = threading.Lock()
_executors: dict[bool, ThreadPoolExecutor] = {}     # release or not -> its threads
_pending: dict[Future, bool] = {}          # -> a kernel release (release()) rather than the harness's own work
_failed: list[Future] = []                  # jobs that raised, not reported by flush() yet
_reported: set[Future] = set()


def submit(fn, *args, _release: bool = False) -> Future:
    """Run fn(*args) in the background; its result or error is kept in the returned Future."""
    with _lock:
        if _release not in _executors:
            _executors[_release] = ThreadPoolExecutor(max_workers=3, thread_name_prefix=(
                "socklab-release" if _release else "socklab-bg"))
        fut = _executors[_release].submit(fn, *args)
        _pending[fut] = _release
    fut.add_done_callback(_done)
    return fut


def release(fn, *args) -> Future:
    """submit() for a kernel resource's release (a socket's close, an instance's removal): nothing
    the run's results read, so flush(releases=False) does not wait for it."""
    return submit(fn, *args, _release=True)


def _done(fut: Future):
    with _lock:
        _pending.pop(fut, None)
        if fut.exception() is not None and fut not in _reported:
            _failed.append(fut)


def flush(timeout: float = 30.0, *, releases: bool = True) -> None:
    """Wait until every background job has finished (releases=False: all but the kernel releases,
    e.g. every case's files written, while an instance's removal goes on); raise the first error
    any of them had, once. (A future wakes its waiters before it runs its callbacks, so the jobs
    waited for here are looked at themselves, not only through _done.)"""
    with _lock:
        pending = [fut for fut, is_release in _pending.items() if releases or not is_release]
    for fut in pending:
        fut.exception(timeout)
    with _lock:
        failed = [f for f in (*_failed, *pending) if f.exception() is not None and f not in _reported]
        _reported.update(failed)
        _failed.clear()
    if failed:
        raise failed[0].exception()


atexit.register(flush)
