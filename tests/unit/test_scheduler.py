"""The plugin's xdist scheduler (harness/scheduler.py): cases start with the first worker's collection,
later workers join as theirs comes in, a worker whose collection differs gets no work."""

from __future__ import annotations

import pytest

from harness.scheduler import EarlyStart

IDS = [f"cases/test_x.py::test_{i}" for i in range(8)]


class Node:
    """The part of xdist's WorkerController a scheduler uses."""

    def __init__(self, name: str):
        self.gateway = type("Gateway", (), {"id": name})()
        self.sent: list[str] = []
        self.shutting_down = False
        self.collection: list[str] = []

    def send_runtest_some(self, indices):
        self.sent += [self.collection[i] for i in indices]

    def shutdown(self):
        self.shutting_down = True


@pytest.fixture
def sched(pytester):
    config = pytester.parseconfig("-p", "no:socklab", "--tx", "3*popen", "--dist", "loadgroup")
    reports = []
    config.hook.pytest_collectreport = lambda report: reports.append(report)
    s = EarlyStart(config)
    s.reports = reports
    return s


def collected(sched, node, ids=IDS):
    """xdist's DSession.worker_collectionfinish, as it drives a scheduler."""
    node.collection = list(ids)
    sched.add_node_collection(node, ids)
    if sched.collection_is_completed:
        sched.schedule()


def test_the_first_worker_starts_before_the_others_have_collected(sched):
    a, b, c = Node("gw0"), Node("gw1"), Node("gw2")
    for n in (a, b, c):
        sched.add_node(n)
    assert not sched.collection_is_completed
    collected(sched, a)
    assert a.sent == IDS[:2]                      # two units ahead, in the collection's order
    assert b.sent == c.sent == []                 # still collecting: nothing sent to them
    sched.mark_test_complete(a, 0)
    assert a.sent == IDS[:3]
    collected(sched, b)
    assert b.sent == IDS[len(a.sent):len(a.sent) + 2]      # two units, where the queue is
    assert not sched.tests_finished


def test_every_case_runs_once_and_the_run_ends(sched):
    a, b = Node("gw0"), Node("gw1")
    sched.add_node(a)
    sched.add_node(b)
    collected(sched, a)
    collected(sched, b)
    while not sched.tests_finished:
        for node in (a, b):
            pending = [i for i, nid in enumerate(IDS) if nid in node.sent and not sched.assigned_work[node]
                       [sched._split_scope(nid)][nid]]
            if pending:
                sched.mark_test_complete(node, pending[0])
    assert sorted(a.sent + b.sent) == sorted(IDS)
    assert a.shutting_down and b.shutting_down


def test_a_worker_that_collected_other_cases_gets_none_and_the_difference_is_reported(sched):
    a, b = Node("gw0"), Node("gw1")
    sched.add_node(a)
    sched.add_node(b)
    collected(sched, a)
    collected(sched, b, IDS[:-1])
    assert b.sent == [] and b.shutting_down
    assert [r.outcome for r in sched.reports] == ["failed"]
    assert "gw1" in str(sched.reports[0].longrepr)


def test_a_worker_that_collects_after_the_queue_emptied_is_shut_down(sched):
    a, b = Node("gw0"), Node("gw1")
    sched.add_node(a)
    sched.add_node(b)
    collected(sched, a, IDS[:2])
    assert a.sent == IDS[:2]
    collected(sched, b, IDS[:2])
    assert b.sent == [] and b.shutting_down
