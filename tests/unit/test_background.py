"""harness/background.py: jobs done off a case's critical path, and the two waits for them."""

from __future__ import annotations

import threading

import pytest

from harness import background


def test_a_flush_without_releases_waits_for_the_harness_work_only():
    """The run's end waits for every case's files (submit) before it builds the results, while the
    kernel's releases (release: a socket's close, an instance's removal) go on; the last flush
    waits for those too."""
    go = threading.Event()
    release = background.release(go.wait, 10)
    written = background.submit(lambda: "written")
    background.flush(releases=False)
    assert written.done() and not release.done()
    go.set()
    background.flush()
    assert release.done()


def test_a_flush_raises_a_jobs_error_once():
    def fails():
        raise OSError("no space left")
    background.release(fails)
    with pytest.raises(OSError, match="no space left"):
        background.flush()
    background.flush()          # reported once


def test_the_harness_work_does_not_queue_behind_releases():
    """Releases that sleep in the kernel (as many as there are threads, and more) do not hold up a
    case's writing."""
    go = threading.Event()
    sleeping = [background.release(go.wait, 10) for _ in range(5)]
    written = background.submit(lambda: "written")
    assert written.result(timeout=5) == "written"
    go.set()
    background.flush()
    assert all(f.done() for f in sleeping)
