"""A capture wait's deadline measures the awaited segment, not the harness's own start-up (no privileges)."""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace

import pytest

from harness import capture
from harness.errors import StepTimeout


def test_the_parser_import_happens_before_the_deadline_starts(monkeypatch):
    """Under load importing scapy took 10-13 s, longer than the 5 s a case waits for a segment; a wait
    that started the import inside its deadline read the link once and gave up (HALFCLOSE-NOCLOSE
    failed 3 of 3 soak runs). Here the "import" takes 0.5 s and the wait 0.3 s: the wait must still
    poll for its whole 0.3 s."""
    real = capture._layers
    slow_once = threading.Event()

    def slow_layers():
        if not slow_once.is_set():
            slow_once.set()
            threading.Event().wait(0.5)     # stands for the slow import (an experiment-free pause)
        return real()
    monkeypatch.setattr(capture, "_layers", slow_layers)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    cap = capture.Capture.__new__(capture.Capture)
    cap.frames = [capture.Frame(b"\x00" * 60, 0.0, 0.0)]     # one frame, so segments() parses
    cap.drops, cap._sock = [], ours
    cap.topology = SimpleNamespace(host_by_address=lambda: {})
    cap.tap = SimpleNamespace(ifname="sltest")
    try:
        with pytest.raises(StepTimeout) as exc:
            cap.wait_for(lambda seg: False, timeout=0.3, what="that never comes")
    finally:
        ours.close()
        theirs.close()
    reads = int(str(exc.value).split("(", 1)[1].split(" reads", 1)[0])
    assert reads >= 3, str(exc.value)
