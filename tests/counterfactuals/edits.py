"""Edits that turn a recorded observation into another outcome (used by the FLIPS tables)."""

from __future__ import annotations

from harness.record import CaseRecord, SegmentRecord, SsRow


def drop_segments(rec: CaseRecord, pred) -> int:
    """Remove the segments for which pred(seg) holds, as if they never crossed the link; returns how many."""
    before = len(rec.segments_)
    rec.segments_ = [s for s in rec.segments_ if not pred(s)]
    return before - len(rec.segments_)


def set_flags(rec: CaseRecord, pred, flags: str) -> int:
    """Give the segments for which pred(seg) holds other flags (e.g. a FIN turned into an RST)."""
    n = 0
    for s in rec.segments_:
        if pred(s):
            s.flags, n = flags, n + 1
    return n


def add_segment(rec: CaseRecord, after: SegmentRecord | None = None, **fields) -> SegmentRecord:
    """Insert a segment (after `after`, else at the end); fields as SegmentRecord's."""
    seg = SegmentRecord(**{"t": (after.t if after else 0.0), "len": 0, **fields})
    i = rec.segments_.index(after) + 1 if after else len(rec.segments_)
    rec.segments_.insert(i, seg)
    return seg


def set_errno(rec: CaseRecord, op: str, errno: str | None, *, role: str | None = None, n: int = -1, ret=None):
    """Make the n-th call `op` (of host `role`) fail with `errno` (None: succeed with `ret`)."""
    call = rec.call(op, role=role, n=n)
    call.errno, call.error, call.ret = errno, None, (ret if errno is None else None)
    return call


def set_ret(rec: CaseRecord, op: str, ret, *, role: str | None = None, n: int = -1):
    call = rec.call(op, role=role, n=n)
    call.ret, call.errno, call.error = ret, None, None
    return call


def set_states(rec: CaseRecord, role: str, label: str, states: list[str]):
    """Replace the rows of host `role`'s snapshot `label` by rows in `states` (keeping the first
    rows' other fields where there are any)."""
    snap = rec.snapshot(role, label)
    old = snap.rows
    snap.rows = [SsRow(**{**(old[i].__dict__ if i < len(old) else {}), "state": st}) for i, st in enumerate(states)]
    return snap


def remove_rows(rec: CaseRecord, state: str, *, role: str | None = None, label: str | None = None) -> int:
    """Remove the ss rows in `state` (of one host, one snapshot label prefix) from every snapshot."""
    n = 0
    for snap in rec.snapshots(role, label):
        keep = [r for r in snap.rows if r.state != state]
        n += len(snap.rows) - len(keep)
        snap.rows = keep
    return n


def set_history(rec: CaseRecord, role: str, states: list[str], *, port: int | None = None,
                listener: bool = False):
    """Make the kernel's state history of host `role`'s socket read `states`."""
    h = rec.history(role, port, listener=listener)
    if h is None:
        raise ValueError(f"no history of {role} (port {port}) in the record to edit")
    h.states = list(states)
    h.times = (h.times + [h.times[-1] if h.times else 0.0] * len(states))[:max(len(states) - 1, 0)]
    return h


def set_counter(rec: CaseRecord, role: str, label: str, name: str, value: int, group: str = "TcpExt"):
    """Make host `role`'s counter `name` read `value` in the counters kept under `label`."""
    found = [c for c in rec.counters if c.role == role and c.label.startswith(label)]
    if not found:
        raise ValueError(f"no counters of {role} labelled {label!r} in the record to edit")
    found[-1].values.setdefault(group, {})[name] = value
    return found[-1]


def set_option(rec: CaseRecord, pred, name: str, value) -> int:
    """Give the segments for which pred(seg) holds option `name` with `value` (added when absent)."""
    n = 0
    for s in rec.segments_:
        if pred(s):
            opts = [o for o in s.options if not (o and o[0] == name)]
            s.options, n = opts + [[name, value]], n + 1
    return n


def remove_option(rec: CaseRecord, pred, name: str) -> int:
    """Take option `name` off the segments for which pred(seg) holds."""
    n = 0
    for s in rec.segments_:
        if pred(s) and any(o and o[0] == name for o in s.options):
            s.options, n = [o for o in s.options if not (o and o[0] == name)], n + 1
    return n


def set_info(rec: CaseRecord, key: str, value=None, *, role: str | None = None, label: str | None = None) -> int:
    """Set (value None: remove) the `ss -i` info field `key` in every row of the matching snapshots."""
    n = 0
    for snap in rec.snapshots(role, label):
        for row in snap.rows:
            if value is None:
                n += row.info.pop(key, None) is not None
            else:
                row.info[key], n = value, n + 1
    return n
