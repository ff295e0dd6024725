"""harness/importahead.py: the modules a process needs later, imported in one thread, once per process."""

import os
import sys

from harness import importahead


def test_imports_the_missing_modules_then_calls_then_once_per_process(monkeypatch):
    monkeypatch.setattr(importahead, "_started", {})
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    called = []
    thread = importahead.start(("json", "colorsys"), then=lambda: called.append("colorsys" in sys.modules))
    assert thread is not None and thread.name == "socklab-import-ahead"
    thread.join(10)
    assert called == [True]
    assert importahead.start(("colorsys",), then=lambda: called.append("again")) is None
    assert called == [True]
    assert sys.getswitchinterval() != importahead.SWITCH_INTERVAL      # restored


def test_nothing_missing_starts_no_thread(monkeypatch):
    monkeypatch.setattr(importahead, "_started", {})
    assert importahead.start(("json", "os")) is None
    assert os.getpid() in importahead._started


def test_a_module_that_fails_to_import_stops_the_thread_quietly(monkeypatch):
    monkeypatch.setattr(importahead, "_started", {})
    called = []
    thread = importahead.start(("socklab_no_such_module",), then=lambda: called.append(1))
    thread.join(10)
    assert called == []
