"""The record of one case: everything it observed, typed, written once as case.json.

The run side (harness/artifacts.py) builds a `CaseRecord` from a finished lab; everything after it
reads the same record: the claims' judges (harness/judge.py), results, report, compare. Times are
seconds since the case started (CLOCK_MONOTONIC underneath). `CaseRecord.load(path)` reads a
case.json back; `to_json()` writes it. The pytest plugin puts the case's pytest outcome into the same
record (`CaseRecord.outcome`); for a case whose lab was never built (skipped or failed at set-up, a
run stopped before the lab recorded anything) the plugin writes a record of its own, with the ids
and the outcome only (`lab=False`).

Besides the data, the record answers the questions judges ask (`segments(...)`, `snapshot(...)`,
`history(...)`, `calls(...)`). A question about something the case never recorded (a snapshot
label it did not take, a call it did not make) raises `Unobservable`: the harness could not observe
what the claim needs, which fails the case. A question whose answer is "the kernel did not do it"
(no FIN among the segments, no TIME-WAIT row) returns an empty answer: that is a verdict.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field

from .errors import SocklabError

SCHEMA = 3          # 3: the pytest outcome in the record (before: a separate outcome.json)


class Unobservable(SocklabError):
    """The record lacks what a claim needs (a snapshot never taken, a missing trace): not a verdict."""


class RecordError(SocklabError):
    """A case.json that cannot be read: not JSON, or not a case record."""


@dataclass
class CallRecord:
    """One step: which program in which host called what, with which result, when."""

    program: str
    op: str
    args: dict = field(default_factory=dict)
    ret: object = None
    errno: str | None = None
    error: str | None = None
    t0: float = 0.0
    t1: float = 0.0
    background: bool = False
    role: str = ""
    local_port: int | None = None

    @property
    def ok(self) -> bool:
        return self.errno is None and self.error is None

    def result(self) -> str:
        """'ECONNREFUSED', 'error ...' or the return value as text."""
        if self.errno:
            return self.errno
        if self.error:
            return f"error {self.error}"
        return repr(self.ret)


@dataclass
class SegmentRecord:
    """One TCP segment on the link, sequence numbers relative to its sender's ISN."""

    t: float
    src: str
    dst: str
    flags: str
    seq: int
    len: int
    ack: int | None = None
    win: int | None = None
    options: list = field(default_factory=list)
    sport: int | None = None
    dport: int | None = None
    dropped_by: str | None = None
    text: str = ""
    raw_seq: int | None = None       # absolute sequence and ack numbers as on the wire (ISNs: ISN-RANDOM)
    raw_ack: int | None = None

    def has(self, letters: str) -> bool:
        """True when every tcpdump flag letter in `letters` is set ('F', 'R', 'S.', 'P')."""
        return all(ch in self.flags for ch in letters)

    @property
    def pure_ack(self) -> bool:
        return self.flags == "." and self.len == 0

    def option(self, name: str):
        """The value of option `name` (e.g. 'mss', 'wscale'), True for a flag option, None if absent."""
        for opt in self.options:
            if opt and opt[0] == name:
                return opt[1] if len(opt) > 1 and opt[1] is not None else True
        return None


@dataclass
class Timer:
    name: str
    remaining: float
    retrans: int


@dataclass
class SsRow:
    state: str
    recv_q: int | None = None
    send_q: int | None = None
    local: str | None = None
    local_port: int | None = None
    peer: str | None = None
    peer_port: int | None = None
    timer: Timer | None = None
    info: dict = field(default_factory=dict)


@dataclass
class SnapshotRecord:
    """`ss -tanoi` in one host at one moment: the text as printed, and its rows."""

    t: float
    role: str
    label: str
    text: str
    rows: list[SsRow] = field(default_factory=list)
    before: float | None = None      # when ss was started and when it returned (the reading lies between)
    after: float | None = None
    # "ss": `ss -tanoi` ran at the moment; "sock_diag": rows from the kernel's sock_diag answer, text
    # laid out by the harness; "ss replay": that answer kept in the file `diag` (case folder) and
    # printed by `ss -tanoi` after the run (harness/ss.py replay).
    source: str = "ss"
    diag: str | None = None

    def states(self) -> list[str]:
        return [r.state for r in self.rows]

    def find(self, *, state: str | None = None, local_port: int | None = None,
             peer_port: int | None = None) -> list[SsRow]:
        return [r for r in self.rows if (state is None or r.state == state)
                and (local_port is None or r.local_port == local_port)
                and (peer_port is None or r.peer_port == peer_port)]


@dataclass
class HistoryRecord:
    """One socket's kernel state sequence (the tracepoint, and the timewait probes where present)."""

    local: str
    local_role: str
    local_port: int | None
    peer: str
    peer_role: str
    peer_port: int | None
    states: list[str]
    times: list[float] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)     # per transition: "trace" or "timewait"

    @property
    def listener(self) -> bool:
        return self.states[1:2] == ["LISTEN"]

    def text(self) -> str:
        return " -> ".join(self.states)


@dataclass
class Event:
    """A fault rule's action, a note, a named hold: t, the host it concerns, text."""

    t: float
    role: str
    text: str


@dataclass
class Counters:
    """The kernel's TCP counters (TcpExt, Tcp, ...) of one host at one moment."""

    t: float
    role: str
    label: str
    values: dict


@dataclass
class VerdictRecord:
    """A claim judged from this record."""

    judge: str                       # "CLOSE-4WAY:four_way_close"
    experiment: str
    claims: list[int]
    claim: str                       # the claim, in our words
    verdict: str                     # confirmed | refuted | differs
    evidence: str                    # what the kernel did, one sentence from the record
    setting: str | None = None       # differs: the setting under which the claim holds


OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "interrupted")


@dataclass
class Outcome:
    """The case's pytest outcome, in pytest's words (OUTCOMES), the phase that decided it
    (setup, call, teardown) and, for anything but a pass, pytest's text (reason, failure)."""

    outcome: str
    when: str | None = None
    longrepr: str | None = None



_FIELDS: dict = {}      # dataclass type -> its field names


def _plain(obj):
    """dataclasses.asdict() for the record's types, about 3x faster (it runs for every case.json):
    dataclasses to dicts, lists, tuples and dicts copied with their items converted, anything else
    deep-copied as asdict() does."""
    if obj is None or isinstance(obj, (str, int, float)):
        return obj
    names = _FIELDS.get(type(obj))
    if names is None and dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        names = _FIELDS[type(obj)] = tuple(f.name for f in dataclasses.fields(obj))
    if names is not None:
        return {n: _plain(getattr(obj, n)) for n in names}
    if type(obj) in (list, tuple):
        return type(obj)(_plain(v) for v in obj)
    if type(obj) is dict:
        return {k: _plain(v) for k, v in obj.items()}
    return copy.deepcopy(obj)


@dataclass
class CaseRecord:
    """Everything one case observed; see the module docstring."""

    name: str                           # the pytest node id
    family: str | None = "ipv4"         # None: a case without the family parameter and without a lab
    mtu: int = 1500
    kernel: str = ""
    kernel_version: str = ""            # upstream version (6.1.192), what baselines are keyed on
    emulator: str | None = None         # "TCG" / "KVM" in a socklab matrix guest, None on the machine itself
    experiment: str | None = None
    articles: list[str] = field(default_factory=list)
    judges: list[str] = field(default_factory=list)
    sysctls: dict = field(default_factory=dict)
    host_sysctls: dict = field(default_factory=dict)
    hosts: dict = field(default_factory=dict)
    duration: float = 0.0
    calls: list[CallRecord] = field(default_factory=list)
    segments_: list[SegmentRecord] = field(default_factory=list)
    ss: list[SnapshotRecord] = field(default_factory=list)
    transitions: list[HistoryRecord] = field(default_factory=list)
    faults: list[Event] = field(default_factory=list)
    notes: list[Event] = field(default_factory=list)
    counters: list[Counters] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    trace_unavailable: str | None = None
    trace_clock: str | None = None        # how the trace's times became CLOCK_MONOTONIC (tracefs.Instance)
    timewait_source: str | None = None   # "kprobe", or "ss (why the timewait probes could not be made)"
    trace_lost: dict | None = None        # {"count": n or None, "lines": [...]}: the trace buffer overflowed
    drops: dict = field(default_factory=dict)   # per host: {"links": {if: rx/tx drops}, "counters": {nonzero}}
    verdicts: list[VerdictRecord] = field(default_factory=list)
    artifacts: dict = field(default_factory=dict)
    timing_dependent: dict = field(default_factory=dict)   # aspect -> why (the case's timing_dependent markers)
    outcome: Outcome | None = None      # None: not a case of the run (a harness test), or a record before schema 3
    lab: bool = True                    # False: the plugin's record of a case whose lab recorded nothing
    schema: int = SCHEMA

    # -- case.json ---------------------------------------------------------------------------
    def to_json(self) -> dict:
        data = _plain(self)
        data["segments"] = data.pop("segments_")
        return data

    @classmethod
    def from_json(cls, data: dict) -> "CaseRecord":
        if not isinstance(data, dict) or "name" not in data:
            raise RecordError("not a case record (no \"name\")")
        d = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        d["segments_"] = [_build(SegmentRecord, s) for s in d.pop("segments", [])]
        d["calls"] = [_build(CallRecord, c) for c in d.get("calls", [])]
        d["ss"] = [_snapshot(s) for s in d.get("ss", [])]
        d["transitions"] = [_build(HistoryRecord, h) for h in d.get("transitions", [])]
        d["faults"] = [_build(Event, e) for e in d.get("faults", [])]
        d["notes"] = [_build(Event, dict({"role": ""}, **e)) for e in d.get("notes", [])]
        d["counters"] = [_build(Counters, c) for c in d.get("counters", [])]
        d["verdicts"] = [_verdict(v) for v in d.get("verdicts", [])]
        d["outcome"] = _build(Outcome, d["outcome"]) if isinstance(d.get("outcome"), dict) else None
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, path: str) -> "CaseRecord":
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RecordError(f"{path}: not a case record (not JSON: {exc})") from None
        try:
            return cls.from_json(data)
        except (TypeError, KeyError, RecordError) as exc:
            raise RecordError(f"{path}: not a case record ({exc})") from None

    def save(self, path: str) -> None:
        """Write case.json atomically: a killed writer leaves the old file or the new one, never half."""
        # Compact and through json.dumps: json's C encoder serves only dumps() without indent
        # (json.dump to a file always runs the Python one: 1.67 ms against 0.36 ms for a case.json);
        # `python3 -m json.tool case.json` shows it laid out.
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            fh.write(json.dumps(self.to_json(), separators=(",", ":")))
        os.replace(path + ".tmp", path)

    def copy(self) -> "CaseRecord":
        """A deep copy, to edit into another outcome (counterfactual tests)."""
        return CaseRecord.from_json(json.loads(json.dumps(self.to_json())))

    # -- questions judges ask ------------------------------------------------------------------
    def segments(self, port: int | None = None, *, src: str | None = None, flags: str | None = None,
                 payload: bool | None = None, dropped: bool | None = None, since: float | None = None,
                 acks: int | None = None) -> list[SegmentRecord]:
        """Segments on the link, optionally of one port, one sender, with every flag letter of
        `flags`, with or without payload, dropped by a fault rule or not, at or after time `since`,
        acknowledging at least up to `acks`."""
        return [s for s in self.segments_
                if (port is None or port in (s.sport, s.dport)) and (src is None or s.src == src)
                and (flags is None or s.has(flags)) and (payload is None or (s.len > 0) == payload)
                and (dropped is None or bool(s.dropped_by) == dropped) and (since is None or s.t >= since)
                and (acks is None or (s.ack is not None and s.ack >= acks))]

    def first(self, port: int | None = None, **kw) -> SegmentRecord | None:
        """The first segment `segments(port, **kw)` lists, or None when the kernel sent none such."""
        return next(iter(self.segments(port, **kw)), None)

    def snapshots(self, role: str | None = None, label: str | None = None) -> list[SnapshotRecord]:
        """Every ss snapshot (of one host; whose label starts with `label`)."""
        return [s for s in self.ss if (role is None or s.role == role)
                and (label is None or s.label.startswith(label))]

    def snapshot(self, role: str, label: str) -> SnapshotRecord:
        """The (last) snapshot of host `role` whose label starts with `label`; Unobservable if never taken."""
        found = self.snapshots(role, label)
        if not found:
            taken = sorted({f"{s.role}: {s.label}" for s in self.ss}) or ["none"]
            raise Unobservable(f"no ss snapshot of {role} labelled {label!r} in the record; taken: "
                               + "; ".join(taken))
        return found[-1]

    def states(self, role: str, label: str) -> list[str]:
        """The ss states of host `role` at the snapshot labelled `label`, sorted."""
        return sorted(self.snapshot(role, label).states())

    def histories(self, role: str | None = None, port: int | None = None, *,
                  listener: bool | None = None) -> list[HistoryRecord]:
        """Kernel state histories (of sockets local to host `role`, of one port); Unobservable without a trace."""
        if self.trace_unavailable:
            raise Unobservable(f"kernel state transitions were not recorded: {self.trace_unavailable}")
        return [h for h in self.transitions if (role is None or h.local_role == role)
                and (port is None or port in (h.local_port, h.peer_port))
                and (listener is None or h.listener == listener)]

    def history(self, role: str, port: int | None = None, *, listener: bool = False) -> HistoryRecord | None:
        """The one history of host `role` (and port); None when the kernel made no such socket,
        the first one when it made several."""
        found = self.histories(role, port, listener=listener)
        return found[0] if found else None

    def calls_of(self, op: str | None = None, *, program: str | None = None,
                 role: str | None = None) -> list[CallRecord]:
        return [c for c in self.calls if (op is None or c.op == op)
                and (program is None or c.program == program) and (role is None or c.role == role)]

    def call(self, op: str, *, program: str | None = None, role: str | None = None, n: int = -1) -> CallRecord:
        """The n-th (default: last) call `op` (of one program or host); Unobservable if never made."""
        found = self.calls_of(op, program=program, role=role)
        if not found:
            raise Unobservable(f"no {op}() call" + (f" by {program or role}" if program or role else "")
                               + " in the record")
        try:
            return found[n]
        except IndexError:
            raise Unobservable(f"only {len(found)} {op}() call(s) in the record, the case needs #{n}") from None

    def fact(self, name: str):
        """A value the case recorded with lab.observe(name, value); Unobservable if it did not."""
        if name not in self.facts:
            raise Unobservable(f"the case recorded no {name!r} (lab.observe); recorded: {sorted(self.facts) or 'none'}")
        return self.facts[name]

    def sysctl(self, role: str, key: str, default=None):
        """A sysctl as set in host `role` for this case (the run's and the case's own settings)."""
        host = self.host_sysctls.get(role) or {}
        return host.get(key, self.sysctls.get(key, default))

    def counter(self, role: str, label: str, name: str, group: str = "TcpExt") -> int:
        found = [c for c in self.counters if c.role == role and c.label.startswith(label)]
        if not found:
            raise Unobservable(f"no counters of {role} labelled {label!r} in the record")
        return found[-1].values.get(group, {}).get(name, 0)


def save_outcome(path: str, outcome: Outcome, alone: CaseRecord, after=None) -> None:
    """Set the pytest outcome of the case.json at `path`: in the lab's record once its writing (the
    Future `after`, a background job) has ended, else in `alone`, the plugin's record of a case
    whose lab recorded nothing."""
    if after is not None:
        after.exception()       # waits; an error in the lab's writing is re-raised by background.flush()
    try:
        rec = CaseRecord.load(path)
    except FileNotFoundError:
        rec = alone
    rec.outcome = outcome
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rec.save(path)


def _build(cls, data: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def _snapshot(data: dict) -> SnapshotRecord:
    snap = _build(SnapshotRecord, dict({"role": "", "label": "", "text": ""}, **data))
    rows = []
    for r in data.get("rows", []):
        row = _build(SsRow, r)
        t = r.get("timer")
        row.timer = Timer(*t) if isinstance(t, (list, tuple)) else (_build(Timer, t) if isinstance(t, dict) else None)
        rows.append(row)
    snap.rows = rows
    return snap


def _verdict(data: dict) -> VerdictRecord:
    d = dict(data)
    if "evidence" not in d and "observed" in d:          # schema 1 records
        d["evidence"] = d.pop("observed")
    d.setdefault("judge", "")
    d.setdefault("experiment", "")
    d.setdefault("claims", [])
    return _build(VerdictRecord, d)
