"""Work done off the case's critical path, and waited for before the process exits.

Closing an AF_PACKET socket or removing a tracefs instance waits for an RCU grace period (13 to
40 ms here). Nothing about the case depends on when that wait ends, so the harness hands such
releases to a few background threads (`release`); a case's files, summary and page are written
by others (`submit`), so they never queue behind a release that sleeps in the kernel (they did: a
one-case run's end waited 20-30 ms for 10 ms of writing). What the next case will need (its tracefs
instance) is prepared by a thread of its own (`prepare`): each case hands three releases to the
release threads (two packet sockets, one instance: 13-40 ms each), and a preparation queued behind
them made the next case's set-up wait 13-51 ms. `flush()` (at the session's end, at exit, on
SIGTERM via pytest's unwinding) waits until every one has finished and re-raises the first error;
`flush(releases=False)` waits for the writing only.
"""

from __future__ import annotations

import atexit
import threading
from concurrent.futures import Future, ThreadPoolExecutor

_lock = threading.Lock()
_executors: dict[str, ThreadPoolExecutor] = {}      # kind -> its threads
_THREADS = {"write": 3, "release": 3, "prepare": 1}
_pending: dict[Future, bool] = {}          # -> kernel work (release(), prepare()) rather than the harness's own writing
_failed: list[Future] = []                  # jobs that raised, not reported by flush() yet
_reported: set[Future] = set()


def submit(fn, *args, _kind: str = "write") -> Future:
    """Run fn(*args) in the background; its result or error is kept in the returned Future."""
    with _lock:
        if _kind not in _executors:
            _executors[_kind] = ThreadPoolExecutor(max_workers=_THREADS[_kind], thread_name_prefix=(
                "socklab-bg" if _kind == "write" else f"socklab-{_kind}"))
        fut = _executors[_kind].submit(fn, *args)
        _pending[fut] = _kind != "write"
    fut.add_done_callback(_done)
    return fut


def release(fn, *args) -> Future:
    """submit() for a kernel resource's release (a socket's close, an instance's removal): nothing
    the run's results read, so flush(releases=False) does not wait for it."""
    return submit(fn, *args, _kind="release")


def prepare(fn, *args) -> Future:
    """submit() for kernel work a later case will need (its tracefs instance): one thread of its own,
    never behind the releases; like a release, flush(releases=False) does not wait for it."""
    return submit(fn, *args, _kind="prepare")


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
