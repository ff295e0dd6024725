"""A case's artifacts: what it observed, as files in its folder under reports/.

`record()` turns a finished lab into plain data (case.json, which results and reports are built
from); `write()` puts every artifact on disk: packets.pcap, segments.txt, ss.txt, transitions.txt,
timeline.txt/.json and case.json (calls, verdicts and everything else observed).
"""

from __future__ import annotations

import json
import os

from . import ss, timewait, trace
from .errors import SocklabError
from .kernels import version as kernel_version
from .record import (CallRecord, CaseRecord, Counters, Event, HistoryRecord, RecordError, SegmentRecord,
                     SnapshotRecord, SsRow, Timer)
from .segment import windows


def record(lab, segs) -> CaseRecord:
    """Everything observed in this case, typed (case.json), for judges, results and reports."""
    t0 = lab.start
    hists = []
    if lab.trace is not None:
        hists = trace.group_by_socket(lab.own_transitions(), lab.addresses(), lab.connect_calls())
        hists = timewait.merge(hists, lab.timewait_events())
    rel = lambda t: round(t - t0, 6)  # noqa: E731
    return CaseRecord(
        name=lab.name, family=lab.family, mtu=lab.mtu, kernel=os.uname().release,
        kernel_version=kernel_version.running(), emulator=os.environ.get("SOCKLAB_EMULATOR") or None,
        experiment=lab.experiment, articles=list(lab.articles), judges=[j.id for j in lab.judges],
        sysctls={k: str(v) for k, v in lab.sysctls.items()},
        host_sysctls={r: dict(h.sysctls) for r, h in lab.topology.hosts.items()},
        hosts=_hosts(lab.topology),
        duration=round(lab.end - t0, 6),
        calls=[CallRecord(program=c.program, op=c.op, args=c.args, ret=c.ret, errno=c.errno, error=c.error,
                          t0=rel(c.t0), t1=rel(c.t1), background=c.background, role=c.role,
                          local_port=c.local_port) for c in lab.calls],
        segments_=[SegmentRecord(t=rel(s.time), src=s.src, dst=s.dst, flags=s.flags, seq=s.seq, len=s.length,
                                 ack=s.ack, win=s.win, options=[list(o) for o in s.options], sport=s.sport,
                                 dport=s.dport, dropped_by=s.dropped_by, text=s.text(), raw_seq=s.raw_seq,
                                 raw_ack=s.raw_ack) for s in segs],
        ss=[SnapshotRecord(t=rel(sn.time), role=getattr(sn, "role", None) or "", label=sn.label, text=sn.text,
                           before=rel(sn.before), after=rel(sn.after),
                           source=("ss replay" if sn.replayed else
                                   "sock_diag" if sn.argv[:1] == ("sock_diag",) else "ss"),
                           diag=diag_name(i, sn) if sn.dump is not None else None,
                           rows=[SsRow(state=r.state, recv_q=r.recv_q, send_q=r.send_q, local=r.local,
                                       local_port=r.local_port, peer=r.peer, peer_port=r.peer_port,
                                       timer=None if r.timer is None else
                                       Timer(r.timer.name, r.timer.remaining, r.timer.retrans),
                                       info=_plain(r.info))
                                 for r in sn.rows])
            for i, sn in enumerate(lab.snapshots)],
        transitions=[HistoryRecord(local=h.key[0], local_role=lab.role_of(h.key[0]), local_port=h.key[1],
                                   peer=h.key[2], peer_role=lab.role_of(h.key[2]), peer_port=h.key[3],
                                   states=h.states(), times=[rel(t.time) for t in h.transitions],
                                   sources=h.sources())
                     for h in hists],
        timewait_source=getattr(lab, "timewait_source", None),
        faults=[Event(rel(t), role, text) for t, role, text in (lab.faults.events if lab.faults else [])],
        notes=[Event(rel(t), "", text) for t, text in lab.notes],
        counters=[Counters(rel(t), role, label, values) for t, role, label, values in lab.counters],
        facts=dict(lab.facts),
        trace_unavailable=lab.trace_unavailable,
        trace_clock=_clock_text(lab.trace),
        trace_lost=lab.trace_lost,
        drops=lab.drops or {},
        verdicts=list(lab.verdicts),
        timing_dependent=dict(lab.timing_dependent),
        outcome=lab.outcome,
        artifacts={"pcap": "packets.pcap", "ss": "ss.txt", "timeline": "timeline.txt", "segments": "segments.txt",
                   "transitions": "transitions.txt"},
    )


def _hosts(topology) -> dict:
    """Each host's addresses; a router's second interface as ipv4_<link>_link / ipv6_<link>_link."""
    out = {r: {"ipv4": h.ipv4, "ipv6": h.ipv6} for r, h in topology.hosts.items()}
    for name, ends in topology.links.items():
        for h in ends:
            if h is not topology.hosts[h.role]:
                out[h.role].update({f"ipv4_{name}_link": h.ipv4, f"ipv6_{name}_link": h.ipv6})
    return out


def _plain(info: dict) -> dict:
    """ss -i info as JSON-safe values (numbers and strings)."""
    return {k: v if isinstance(v, (int, float, str, bool)) or v is None else str(v) for k, v in (info or {}).items()}


def write(lab, segs) -> None:
    """Write the case's artifacts into lab.artifacts_dir (see reports/README.md for the list)."""
    d = lab.artifacts_dir
    os.makedirs(d, exist_ok=True)
    lab.capture.write_pcap(os.path.join(d, "packets.pcap"))
    with open(os.path.join(d, "segments.txt"), "w") as fh:
        # Notes after '#', so a line can be copied into an expectation as it is (where `win N` is the raw field).
        lines = []
        for s, w in zip(segs, windows(segs)):
            notes = ([w] if w else []) + ([f"dropped by {s.dropped_by}"] if s.dropped_by else [])
            lines.append(s.text() + ("  # " + "; ".join(notes) if notes else ""))
        fh.write("\n".join(lines) + "\n")
    for i, snap in enumerate(lab.snapshots):
        if snap.dump is not None:       # the kernel's answer, for `ss` to print
            with open(os.path.join(d, diag_name(i, snap)), "wb") as fh:
                fh.write(snap.dump)
    _print_with_ss(d, lab.snapshots)
    _write_ss_txt(d, [(getattr(snap, "role", "?"), snap.label, snap.time - lab.start, snap.text)
                      for snap in lab.snapshots])
    with open(os.path.join(d, "transitions.txt"), "w") as fh:
        if lab.trace is not None:
            fh.write(f"# trace clock: {_clock_text(lab.trace)}\n")
            fh.write("".join(t.raw.rstrip("\n") + "\n" for t in lab.own_transitions()))
            fh.write("".join(e.raw.rstrip("\n") + "\n" for e in lab.timewait_events()))
        else:
            fh.write(f"# no trace: {lab.trace_unavailable}\n")
    with open(os.path.join(d, "timeline.txt"), "w") as fh:
        fh.write(lab.timeline.text())
    with open(os.path.join(d, "timeline.json"), "w") as fh:
        fh.write(json.dumps(lab.timeline.to_json(), separators=(",", ":")))     # dumps: the C encoder
    lab.record(segs).save(os.path.join(d, "case.json"))


def _clock_text(inst) -> str | None:
    """How the trace's printed times relate to CLOCK_MONOTONIC, for the record and transitions.txt."""
    if inst is None:
        return None
    if inst.clock == "mono":
        return "mono" + (f" ({inst.clock_note})" if inst.clock_note else "")
    return f"{inst.clock}, calibrated: CLOCK_MONOTONIC = printed time {inst.offset:+.6f} s"


def diag_name(index: int, snap) -> str:
    """The file (in the case folder) of a snapshot's recorded sock_diag answer."""
    return f"ss-{index:03d}-{getattr(snap, 'role', None) or 'host'}.diag"


def _print_with_ss(case_dir: str, snaps) -> None:
    """`ss -tanoi` prints each answer a named snapshot kept under SOCKLAB_SS=end (the mode at the
    snapshot, not now: the artifacts are written in the background, after the case's steps). Where
    ss cannot, the snapshots keep the harness's layout of the rows and say so (source "sock_diag")."""
    todo = [(i, snap) for i, snap in enumerate(snaps)
            if snap.print_when_written and snap.dump is not None and not snap.replayed]
    try:
        texts = ss.replay_all([os.path.join(case_dir, diag_name(i, snap)) for i, snap in todo])
    except SocklabError:
        return
    for (_, snap), text in zip(todo, texts):
        snap.text, snap.replayed = text, True


def _write_ss_txt(case_dir: str, snaps) -> None:
    """ss.txt: each snapshot's text under a `### role [label] t=... ms` line; snaps: (role, label, t, text)."""
    with open(os.path.join(case_dir, "ss.txt"), "w") as fh:
        for role, label, t, text in snaps:
            fh.write(f"### {role} [{label}] t={t * 1000:.3f} ms\n")
            fh.write(text if text.endswith("\n") else text + "\n")
            fh.write("\n")


def replay_ss(run_dir: str) -> int:
    """Have `ss -tanoi` print every snapshot of a run that kept the kernel's answer for later
    (SOCKLAB_SS=replay, harness/lab.py ss()): each case.json's text becomes ss's, its source "ss
    replay", and ss.txt is written again. Returns how many snapshots were printed. The rows, and
    so every verdict, stay those read from the answer at the moment."""
    from .results import case_dirs
    done = 0
    for case_dir in case_dirs(run_dir):
        path = os.path.join(case_dir, "case.json")
        try:
            rec = CaseRecord.load(path)
        except (OSError, RecordError):
            continue                    # results.py reports unreadable records; nothing to print here
        todo = [s for s in rec.ss if s.diag and s.source == "sock_diag"]
        for snap, text in zip(todo, ss.replay_all([os.path.join(case_dir, s.diag) for s in todo])):
            snap.text, snap.source = text, "ss replay"
        if todo:
            st = os.stat(path)
            rec.save(path)
            # keep the time the case ended: `socklab bench --matrix` reads a guest's phases from it
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
            _write_ss_txt(case_dir, [(s.role or "?", s.label, s.t, s.text) for s in rec.ss])
            done += len(todo)
    return done
