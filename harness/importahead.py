"""Importing ahead: the modules a process needs after its first case's set-up, imported in a thread
while that case's steps wait for the kernel.

One case from a cold start is CPU-bound until its steps begin (pytest, collection, the lab side's
imports, the topology), and then mostly waits: of the four-way close's ~65 ms of steps, ~55 ms are
the programs' answers and the peer's delayed ACK. So the lab imports at set-up only what set-up
uses, and what the steps, the case's record and the run's report need later is imported here, in
one thread started when the first case's steps begin (`start`). A process forked from a warm one
(an xdist worker of the fork server) has them all already, and starts no thread.

The main thread may reach one of these modules first: then it imports it itself, or waits for the
thread to finish it. Python's per-module import locks make that safe, and these modules import one
another only one way (no cycle), so neither thread ever waits for the other in a circle.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading

# In the order the first case needs them: its waits (sock_diag, ss), the trace, its expectations,
# its record and summary (written at teardown).
CASE = ("harness.sockdiag", "harness.ss", "harness.trace", "harness.expect", "harness.record", "harness.artifacts",
        "harness.results", "harness.diagram")
# What only the process that writes the run's report and checks its baseline needs, at the session's end.
RUN = ("harness.ladder", "harness.casepage", "harness.report", "harness.baseline")

SWITCH_INTERVAL = 0.0005     # s

_started: dict[int, threading.Thread | None] = {}     # pid -> its thread (None: nothing was left to import)


def start(names=CASE, then=None) -> threading.Thread | None:
    """Import those of `names` that are not imported yet, in a thread (once per process), then call
    `then()` there if given (not after an import failed: the main thread meets that error where it
    imports the module, and does then's work itself); returns the thread, or None when it was started
    before or nothing is left."""
    pid = os.getpid()
    if pid in _started:
        return None
    missing = [name for name in names if name not in sys.modules]
    if not missing and then is None:
        _started[pid] = None
        return None
    thread = _started[pid] = threading.Thread(target=_run, args=(missing, then), name="socklab-import-ahead")
    thread.start()
    return thread


def _run(names: list[str], then) -> None:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:       # noqa: BLE001 - the main thread's own import of it raises the error where it is used
                return
        if then is not None:
            then()
    finally:
        sys.setswitchinterval(interval)
