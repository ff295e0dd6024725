"""The xdist scheduler of the plugin's loadgroup: cases start as soon as one worker has collected.

xdist's own schedulers hand out nothing until every worker has collected. The workers start one
after another (xdist sets up each gateway in turn) and collect at once on the same cores, so with
ten workers on two cores the first case waited ~0.85 s after the first worker was ready (a catalogue
run: the first collection done at 1.52 s, the last at 2.37 s, the first case at 2.37 s). Here the
first worker that has collected starts on the queue (the waiting cases first, harness/ordering.py)
while the others still collect; each later worker joins as its collection comes in.

Everything else is xdist's LoadGroupScheduling: the units (a case each, the xdist_group cases one
unit together), the order of the collection; a worker holds two units, not three. A later worker whose
collection differs from the first one's gets no work: the difference is reported as a failed
collection, as xdist does, and the worker is shut down.
"""

from __future__ import annotations

import pytest
from xdist.report import report_collection_diff
from xdist.scheduler import LoadGroupScheduling


class EarlyStart(LoadGroupScheduling):
    """LoadGroupScheduling that starts with the first collection instead of waiting for all."""

    @property
    def collection_is_completed(self) -> bool:
        # xdist calls schedule() after every collection that arrives while this is true
        return bool(self.registered_collections)

    def add_node_collection(self, node, collection) -> None:
        assert node in self.assigned_work
        if self.collection is not None and list(collection) != self.collection:
            first = next(iter(self.registered_collections))
            msg = report_collection_diff(self.collection, collection, first.gateway.id, node.gateway.id)
            self.log(msg)
            self.config.hook.pytest_collectreport(
                report=pytest.CollectReport(nodeid=node.gateway.id, outcome="failed", longrepr=msg, result=[]))
            node.shutdown()
            return
        self.registered_collections[node] = list(collection)

    def _reschedule(self, node) -> None:
        if node in self.registered_collections:     # a worker still collecting gets work once it is done
            super()._reschedule(node)

    def schedule(self) -> None:
        if self.collection is None:
            self.collection = list(next(iter(self.registered_collections.values())))
            units: dict[str, dict[str, bool]] = {}
            for nodeid in self.collection:
                units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
            if self.config.option.loadscopereorder:          # as xdist: the largest units first
                self.workqueue.update(sorted(units.items(), key=lambda item: -len(item[1])))
            else:
                self.workqueue.update(units)
        for node in self.nodes:
            if node not in self.registered_collections or node.shutting_down:
                continue
            # two units: the one a worker runs and the next (xdist's worker runs a test once it knows
            # the next one); a third would wait behind a long case while other workers take the rest
            while self.workqueue and self._pending_of(self.assigned_work[node]) < 2:
                self._assign_work_unit(node)
            if not self.workqueue:
                node.shutdown()             # after the units it holds, as xdist's _reschedule does
