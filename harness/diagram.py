"""RFC 9293's TCP state diagram as data, and which cases of a run took each of its edges.

`EDGES` is every edge of figure 5 (with its note 1, SYN-RECEIVED -> LISTEN on RST, and note 2,
FIN-WAIT-1 -> TIME-WAIT on a FIN that also acknowledges ours), plus the RST edges of section 3.10.7.3
(SYN-SENT) and 3.10.7.4 (every synchronized state) to CLOSED or LISTEN. State names are the RFC's
(harness/states.py); `kernel` gives the transition as `sock:inet_sock_set_state` and the timewait
probes spell it.

From a run's case records (`view(case_id, case_json)`: one compact view per case) the module builds
the two tables results.json carries (harness/results.py build_results):

"states": one row per RFC state, in the RFC's order:
    {"state": "TIME-WAIT", "kernel": "TIME_WAIT",
     "cases": [{"id": test id, "experiment": "CLOSE-4WAY", "family": "ipv4",
                "seen_by": ["ss", "timewait"]}, ...],          # sorted subset of ss, trace, timewait
     "counts": {"cases": 30, "ss": 28, "trace": 0, "timewait": 2, "several": 2}}
    A state counts as reached when a socket entered it: a transition's new state, or the first state
    of a history that does not start in CLOSE (a request socket's LISTEN); `ss` adds every state it
    printed except UNCONN (a socket that has not left CLOSED). So CLOSED is reached only by a
    `-> CLOSE` transition, never by a history starting from it. "several" counts cases that saw the
    state from more than one source. Sources: "ss" (`ss -tanoi` snapshots), "trace" (the tracepoint),
    "timewait" (the timewait probes of harness/timewait.py).

"edges": one row per edge of EDGES, in that order:
    {"id": "FIN-WAIT-2 -> TIME-WAIT", "from": "FIN-WAIT-2", "to": "TIME-WAIT", "event": "rcv FIN / snd ACK",
     "where": "figure 5", "kernel": "FIN_WAIT2 -> TIME_WAIT",
     "status": "taken" | "shown not taken" | "not taken",
     "cases": [test ids that took it],
     "evidence": [{"case": id, "socket": "client:eph > server:50000", "transition": "FIN_WAIT2 -> TIME_WAIT",
                   "t": 0.0123, "source": "timewait" | "trace" | "trace+ss" | "ss", "note": "..."}],  # at most 3
     "shown_cases": [test ids showing Linux does not take it],
     "shown": [{"case": id, "socket"?: ..., "call"?: "connect", "errno"?: "EISCONN", "evidence": "one sentence"}]}
    "shown not taken": no case took the edge, and a case made its event happen and the kernel did
    something else: connect() on a listening socket (LISTEN -> SYN-SENT) fails, the call's errno is
    the evidence; the peer's FIN+ACK in FIN-WAIT-1 (FIN-WAIT-1 -> TIME-WAIT) is taken as
    FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT within microseconds (the ACK processed before the FIN).
    "not taken": neither. Every edge has a row; "evidence" and "shown" keep one entry per case, the
    first three cases ("cases" and "shown_cases" list them all).

How a kernel transition is matched to an edge: by its states; `X -> CLOSE` by its cause: an RST
received by that socket just before (its RST edge; SYN-RECEIVED goes back to LISTEN when the socket
came from a listener), a close() call (SYN-SENT, LISTEN), the ACK of our FIN (LAST-ACK), the timewait
socket's end (TIME-WAIT: the 2MSL timeout unless an RST or a reusing SYN ended it). Without the timewait
probes, a `FIN_WAIT1/FIN_WAIT2/CLOSING -> CLOSE` handover followed by `ss` showing the same ports
in TIME-WAIT counts as that state's edge to TIME-WAIT (source "trace+ss"). `ss` alone (source "ss")
shows a connection in a state and gone in its host's next snapshot: gone after an RST it received
is that state's RST edge (a request socket in SYN-RECV never reaches the tracepoint: with its
listener still there, SYN-RECEIVED -> LISTEN); TIME-WAIT gone with no RST or SYN of the connection
in between is the timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

try:
    from . import states as _states
    RFC_STATES = _states.RFC
    _RFC_FOR_KERNEL = _states.RFC_FOR_KERNEL
    _KERNEL_FOR_RFC = _states.KERNEL_FOR_RFC
    _RFC_FOR_SS = _states.RFC_FOR_SS
except ImportError:      # until harness/states.py lands: the same vocabulary, locally
    _TABLE = (("CLOSED", "CLOSE", "UNCONN"), ("LISTEN", "LISTEN", "LISTEN"), ("SYN-SENT", "SYN_SENT", "SYN-SENT"),
              ("SYN-RECEIVED", "SYN_RECV", "SYN-RECV"), ("ESTABLISHED", "ESTABLISHED", "ESTAB"),
              ("FIN-WAIT-1", "FIN_WAIT1", "FIN-WAIT-1"), ("FIN-WAIT-2", "FIN_WAIT2", "FIN-WAIT-2"),
              ("CLOSE-WAIT", "CLOSE_WAIT", "CLOSE-WAIT"), ("CLOSING", "CLOSING", "CLOSING"),
              ("LAST-ACK", "LAST_ACK", "LAST-ACK"), ("TIME-WAIT", "TIME_WAIT", "TIME-WAIT"))
    RFC_STATES = tuple(r for r, _, _ in _TABLE)
    _RFC_FOR_KERNEL = {k: r for r, k, _ in _TABLE} | {"NEW_SYN_RECV": "SYN-RECEIVED"}
    _KERNEL_FOR_RFC = {r: k for r, k, _ in _TABLE}
    _RFC_FOR_SS = {s: r for r, _, s in _TABLE}

RST_WINDOW = 0.2        # s: an RST captured on the link this long before a `-> CLOSE` caused it
CALL_WINDOW = 0.05      # s: a close() call this long before (or during) a `-> CLOSE` caused it
EVIDENCE_KEPT = 3


@dataclass(frozen=True)
class Edge:
    frm: str
    to: str
    event: str
    where: str
    cause: str = ""      # for `-> CLOSED/LISTEN` edges: "rst", "close", "ack", "timeout"

    @property
    def id(self) -> str:
        base = f"{self.frm} -> {self.to}"
        return base + (" (rcv RST)" if self.cause == "rst" and self.where != "figure 5, note 1" else "")

    @property
    def kernel(self) -> str:
        return f"{_KERNEL_FOR_RFC[self.frm]} -> {_KERNEL_FOR_RFC[self.to]}"


EDGES = (
    Edge("CLOSED", "LISTEN", "passive OPEN / create TCB", "figure 5"),
    Edge("CLOSED", "SYN-SENT", "active OPEN / create TCB, snd SYN", "figure 5"),
    Edge("LISTEN", "CLOSED", "CLOSE / delete TCB", "figure 5", "close"),
    Edge("LISTEN", "SYN-RECEIVED", "rcv SYN / snd SYN,ACK", "figure 5"),
    Edge("LISTEN", "SYN-SENT", "SEND / snd SYN", "figure 5"),
    Edge("SYN-SENT", "SYN-RECEIVED", "rcv SYN / snd ACK", "figure 5"),
    Edge("SYN-SENT", "ESTABLISHED", "rcv SYN,ACK / snd ACK", "figure 5"),
    Edge("SYN-SENT", "CLOSED", "CLOSE / delete TCB", "figure 5", "close"),
    Edge("SYN-RECEIVED", "ESTABLISHED", "rcv ACK of SYN", "figure 5"),
    Edge("SYN-RECEIVED", "FIN-WAIT-1", "CLOSE / snd FIN", "figure 5"),
    Edge("SYN-RECEIVED", "LISTEN", "rcv RST (came from LISTEN)", "figure 5, note 1", "rst"),
    Edge("ESTABLISHED", "FIN-WAIT-1", "CLOSE / snd FIN", "figure 5"),
    Edge("ESTABLISHED", "CLOSE-WAIT", "rcv FIN / snd ACK", "figure 5"),
    Edge("FIN-WAIT-1", "FIN-WAIT-2", "rcv ACK of FIN", "figure 5"),
    Edge("FIN-WAIT-1", "CLOSING", "rcv FIN / snd ACK", "figure 5"),
    Edge("FIN-WAIT-1", "TIME-WAIT", "rcv FIN,ACK (our FIN acknowledged) / snd ACK", "figure 5, note 2"),
    Edge("FIN-WAIT-2", "TIME-WAIT", "rcv FIN / snd ACK", "figure 5"),
    Edge("CLOSING", "TIME-WAIT", "rcv ACK of FIN", "figure 5"),
    Edge("CLOSE-WAIT", "LAST-ACK", "CLOSE / snd FIN", "figure 5"),
    Edge("LAST-ACK", "CLOSED", "rcv ACK of FIN / delete TCB", "figure 5", "ack"),
    Edge("TIME-WAIT", "CLOSED", "timeout = 2MSL / delete TCB", "figure 5", "timeout"),
    Edge("SYN-SENT", "CLOSED", "rcv RST (acceptable ACK)", "3.10.7.3", "rst"),
    Edge("SYN-RECEIVED", "CLOSED", "rcv RST (came from SYN-SENT: connection refused)", "3.10.7.4", "rst"),
    Edge("ESTABLISHED", "CLOSED", "rcv RST (connection reset)", "3.10.7.4", "rst"),
    Edge("FIN-WAIT-1", "CLOSED", "rcv RST (connection reset)", "3.10.7.4", "rst"),
    Edge("FIN-WAIT-2", "CLOSED", "rcv RST (connection reset)", "3.10.7.4", "rst"),
    Edge("CLOSE-WAIT", "CLOSED", "rcv RST (connection reset)", "3.10.7.4", "rst"),
    Edge("CLOSING", "CLOSED", "rcv RST", "3.10.7.4", "rst"),
    Edge("LAST-ACK", "CLOSED", "rcv RST", "3.10.7.4", "rst"),
    Edge("TIME-WAIT", "CLOSED", "rcv RST", "3.10.7.4", "rst"),
)
EDGE_IDS = tuple(e.id for e in EDGES)
assert len(set(EDGE_IDS)) == len(EDGE_IDS), "edge ids must be unique"


def rfc(kernel_name: str) -> str:
    return _RFC_FOR_KERNEL.get(kernel_name, kernel_name)


# -- one case's view ------------------------------------------------------------------------------

def view(case_id: str, rec: dict, *, experiment: str | None = None, family: str | None = None) -> dict:
    """What the tables need of one case.json (a dict): histories with times, sources, the RSTs,
    SYNs and ss states of the same connection, and the calls."""
    from .results import fixed_ports, socket_name
    fixed = fixed_ports(rec)
    segs = [s for s in rec.get("segments", []) if not s.get("dropped_by")]
    hists = []
    for h in rec.get("transitions", []):
        role, peer_role = h.get("local_role"), h.get("peer_role")
        lp, pp = h.get("local_port"), h.get("peer_port")
        mine = [s for s in segs if s.get("dst") == role and s.get("dport") == lp
                and (not pp or s.get("sport") == pp)]
        ss_seen = []
        for snap in rec.get("ss", []):
            if snap.get("role") != role:
                continue
            rows = [r for r in snap.get("rows", []) if r.get("local_port") == lp and (not pp or r.get("peer_port") == pp)]
            ss_seen.append((snap.get("t", 0.0), snap.get("label") or "", [r.get("state") for r in rows]))
        states = list(h.get("states", []))
        hists.append({
            "socket": socket_name(h, fixed), "role": role, "peer_role": peer_role,
            "states": states, "times": list(h.get("times", [])),
            "sources": list(h.get("sources") or ["trace"] * max(len(states) - 1, 0)),
            "rst_in": [s["t"] for s in mine if "R" in s.get("flags", "")],
            "syn_in": [s["t"] for s in mine if s.get("flags") == "S"],
            "fin_in": [s["t"] for s in mine if "F" in s.get("flags", "")],
            "ss": ss_seen,
        })
    return {"id": case_id, "experiment": experiment or rec.get("experiment"), "family": family or rec.get("family"),
            "timewait_source": rec.get("timewait_source"), "histories": hists, "ss_states": _ss_states(rec),
            "ss_connections": _ss_connections(rec, segs, fixed),
            "calls": [{k: c.get(k) for k in ("program", "op", "args", "errno", "error", "t0", "t1", "role", "ret")}
                      for c in rec.get("calls", [])]}


def _ss_states(rec: dict) -> list[str]:
    ss_states = set()
    for snap in rec.get("ss", []):
        for r in snap.get("rows", []):
            name = _RFC_FOR_SS.get(r.get("state"))
            if name and name != "CLOSED":
                ss_states.add(name)
    return sorted(ss_states)


def _ss_connections(rec: dict, segs: list, fixed: set) -> list[dict]:
    """Each connection `ss` showed (not listeners), per host: its state in every snapshot of that host
    (None where absent), whether a listener on its port was still there, and the RSTs and SYNs it received."""
    from .results import port_name
    roles = {a: r for r, addrs in (rec.get("hosts") or {}).items() for a in addrs.values() if a}
    snaps: dict = {}
    for snap in rec.get("ss", []):
        snaps.setdefault(snap.get("role"), []).append(snap)
    out = []
    for role, taken in snaps.items():
        taken = sorted(taken, key=lambda sn: sn.get("t", 0.0))
        keys: dict = {}
        for sn in taken:
            for r in sn.get("rows", []):
                if r.get("peer_port") and r.get("state") not in ("LISTEN", "UNCONN"):
                    keys.setdefault((r.get("local_port"), r.get("peer_port")), roles.get(r.get("peer"), "wire"))
        for (lp, pp), peer_role in keys.items():
            seen = []
            for sn in taken:
                rows = sn.get("rows", [])
                state = next((r.get("state") for r in rows if (r.get("local_port"), r.get("peer_port")) == (lp, pp)), None)
                listener = any(r.get("state") == "LISTEN" and r.get("local_port") == lp for r in rows)
                seen.append((sn.get("t", 0.0), sn.get("label") or "", state, listener))
            mine = [x for x in segs if x.get("dst") == role and x.get("dport") == lp and x.get("sport") == pp]
            out.append({"socket": f"{role}:{port_name(lp, fixed)} > {peer_role}:{port_name(pp, fixed)}",
                        "role": role, "seen": seen,
                        "rst_in": [x["t"] for x in mine if "R" in x.get("flags", "")],
                        "syn_in": [x["t"] for x in mine if x.get("flags") == "S"]})
    return out


# -- the states table -----------------------------------------------------------------------------

def reached(v: dict) -> dict:
    """{RFC state: {sources}} this case reached (see the module docstring for what counts)."""
    out: dict = {}
    for s in v.get("ss_states", []):
        out.setdefault(s, set()).add("ss")
    for h in v.get("histories", []):
        st = h["states"]
        if st and st[0] != "CLOSE":
            out.setdefault(rfc(st[0]), set()).add(h["sources"][0] if h["sources"] else "trace")
        for new, src in zip(st[1:], h["sources"]):
            out.setdefault(rfc(new), set()).add(src)
    return {k: v for k, v in out.items() if k in RFC_STATES}


def states_table(views: list[dict]) -> list[dict]:
    """The eleven states, each with the cases that reached it and by which sources."""
    rows = []
    reach = [reached(v) for v in views]
    for state in RFC_STATES:
        cases = []
        for v, states in zip(views, reach):
            srcs = states.get(state)
            if srcs:
                cases.append({"id": v["id"], "experiment": v.get("experiment"), "family": v.get("family"),
                              "seen_by": sorted(srcs)})
        counts = {"cases": len(cases), "several": sum(1 for c in cases if len(c["seen_by"]) > 1)}
        for src in ("ss", "trace", "timewait"):
            counts[src] = sum(1 for c in cases if src in c["seen_by"])
        rows.append({"state": state, "kernel": _KERNEL_FOR_RFC[state], "cases": cases, "counts": counts})
    return rows


# -- the edge table -------------------------------------------------------------------------------

def _near(times, t, window) -> bool:
    return any(x <= t + 0.001 and t - x <= window for x in times)


def _closed_by_call(v: dict, role: str, t: float) -> bool:
    return any(c.get("op") in ("close", "shutdown") and (c.get("role") or (c.get("program") or "").split(".")[0]) == role
               and (c.get("t0") or 0) - 0.001 <= t <= (c.get("t1") or 0) + CALL_WINDOW
               for c in v.get("calls", []))


def _ss_after(h: dict, t: float) -> list[str]:
    """ss states of this socket's ports in snapshots taken after t."""
    return [s for st, _, states in h["ss"] if st >= t for s in states]


def classify(v: dict, h: dict, i: int) -> tuple[str | None, str, str]:
    """(edge id or None, source, note) for transition i of history h (states[i] -> states[i+1])."""
    old, new = h["states"][i], h["states"][i + 1]
    t = h["times"][i] if i < len(h["times"]) else 0.0
    src = h["sources"][i] if i < len(h["sources"]) else "trace"
    o, n = rfc(old), rfc(new)
    if n != "CLOSED":
        eid = f"{o} -> {n}"
        return (eid if eid in EDGE_IDS else None), src, ""
    if o == "CLOSED":
        return None, src, ""
    if _near(h["rst_in"], t, RST_WINDOW):
        if o == "SYN-RECEIVED":
            passive = h["states"][0] == "LISTEN"
            return ("SYN-RECEIVED -> LISTEN" if passive else "SYN-RECEIVED -> CLOSED (rcv RST)"), src, \
                "an RST arrived" + ("; the listener stays in LISTEN" if passive else "")
        eid = f"{o} -> CLOSED (rcv RST)"
        return (eid if eid in EDGE_IDS else None), src, "an RST arrived"
    if o == "LISTEN":
        return "LISTEN -> CLOSED", src, ""
    if o == "SYN-SENT":
        if _closed_by_call(v, h["role"], t):
            return "SYN-SENT -> CLOSED", src, "close() during SYN-SENT"
        return None, src, "no RST and no close(): the connection attempt timed out (no RFC edge)"
    if o == "LAST-ACK":
        return "LAST-ACK -> CLOSED", src, ""
    if o == "TIME-WAIT":
        if _near(h["syn_in"], t, RST_WINDOW):
            return None, src, "a SYN reusing the connection ended TIME-WAIT early (no RFC edge)"
        return "TIME-WAIT -> CLOSED", src, "the timewait socket's timer ran out"
    if src == "trace" and o in ("FIN-WAIT-1", "FIN-WAIT-2", "CLOSING"):
        # The tracepoint's handover to a timewait socket: what it became, ss says (same ports, later).
        if "TIME-WAIT" in _ss_after(h, t):
            eid = f"{o} -> TIME-WAIT"
            return eid, "trace+ss", f"trace {old} -> CLOSE (handover to a timewait socket), then ss TIME-WAIT"
        return None, src, "handover to a timewait socket (ss did not show it in TIME-WAIT)"
    return None, src, "no RST: the socket was aborted or timed out (no RFC edge)"


def _ss_edges(v: dict) -> list[tuple[str, dict]]:
    """(edge id, evidence) that `ss` alone shows: a connection seen in a state and gone in the next
    snapshot of its host. Gone after an RST it received: that state's RST edge (SYN-RECV with its
    listener still there: back to LISTEN; a request socket never reaches the tracepoint). TIME-WAIT
    gone without an RST or a SYN of the connection in between: the timeout."""
    out = []
    for c in v.get("ss_connections", []):
        for (t0, label0, state0, _), (t1, label1, state1, listener1) in zip(c["seen"], c["seen"][1:]):
            if state0 is None or state1 is not None:
                continue
            name = _RFC_FOR_SS.get(state0)
            rst = [x for x in c["rst_in"] if t0 <= x <= t1]
            if rst:
                eid = ("SYN-RECEIVED -> LISTEN" if name == "SYN-RECEIVED" and listener1
                       else f"{name} -> CLOSED (rcv RST)")
                note = f"ss {state0} at [{label0}], an RST arrived, gone at [{label1}]" + \
                    ("; the listener still LISTEN" if eid == "SYN-RECEIVED -> LISTEN" else "")
            elif name == "TIME-WAIT" and not [x for x in c["syn_in"] if t0 <= x <= t1]:
                eid, note = "TIME-WAIT -> CLOSED", f"ss TIME-WAIT at [{label0}], gone at [{label1}] {t1 - t0:.1f} s later"
            else:
                continue
            if eid in EDGE_IDS:
                out.append((eid, {"case": v["id"], "socket": c["socket"], "transition": f"{state0} -> (gone)",
                                  "t": t1, "source": "ss", "note": note}))
    return out


def _bypasses(v: dict) -> list[tuple[str, dict]]:
    """(edge id, evidence) for FIN-WAIT-1 -> TIME-WAIT where the peer's FIN+ACK came and the kernel
    went FIN_WAIT1 -> FIN_WAIT2 -> ... within one segment's processing (it handles the ACK first).
    Without a FIN from the peer, the same microseconds are an orphan's handover in FIN_WAIT2."""
    out = []
    for h in v.get("histories", []):
        st, times = h["states"], h["times"]
        for i in range(len(st) - 2):
            if st[i:i + 2] == ["FIN_WAIT1", "FIN_WAIT2"] and i + 1 < len(times) and st[i + 2] in ("CLOSE", "TIME_WAIT"):
                dt = times[i + 1] - times[i]
                went_tw = st[i + 2] == "TIME_WAIT" or "TIME-WAIT" in _ss_after(h, times[i + 1])
                if dt < 0.001 and went_tw and _near(h.get("fin_in", []), times[i], RST_WINDOW):
                    out.append(("FIN-WAIT-1 -> TIME-WAIT", {
                        "case": v["id"], "socket": h["socket"],
                        "evidence": f"{h['socket']}: FIN_WAIT1 -> FIN_WAIT2 -> {st[i + 2]} {dt * 1e6:.0f} us apart, "
                                    f"then TIME-WAIT: the FIN+ACK's ACK is processed before its FIN"}))
    return out


def _shown_not_taken(v: dict) -> list[tuple[str, dict]]:
    """(edge id, evidence) where the case made the edge's event happen and the kernel did not take
    the edge: connect() on a listener refused (the errno), FIN-WAIT-1's FIN+ACK taken via FIN-WAIT-2."""
    out = []
    listening: dict = {}
    for c in sorted(v.get("calls", []), key=lambda c: c.get("t0") or 0):
        prog, fd = c.get("program"), (c.get("args") or {}).get("fd")
        if c.get("op") == "listen" and not c.get("errno"):
            listening[(prog, fd)] = True
        elif c.get("op") == "close":
            listening.pop((prog, fd), None)
        elif c.get("op") == "connect" and listening.get((prog, fd)) and c.get("errno"):
            out.append(("LISTEN -> SYN-SENT", {
                "case": v["id"], "call": "connect", "errno": c["errno"],
                "evidence": f"{prog}: connect() on the listening socket fd {fd} failed with {c['errno']}"}))
    return out + _bypasses(v)


def edges_table(views: list[dict]) -> list[dict]:
    """Every edge of EDGES with the cases that took it (and evidence), or those showing Linux does not, or neither."""
    taken: dict = {e: [] for e in EDGE_IDS}
    shown: dict = {e: [] for e in EDGE_IDS}
    for v in views:
        for h in v.get("histories", []):
            for i in range(len(h["states"]) - 1):
                eid, src, note = classify(v, h, i)
                if eid is not None:
                    taken[eid].append({"case": v["id"], "socket": h["socket"],
                                       "transition": f"{h['states'][i]} -> {h['states'][i + 1]}",
                                       "t": h["times"][i] if i < len(h["times"]) else None,
                                       "source": src, "note": note})
        for eid, x in _ss_edges(v):
            taken[eid].append(x)
        for eid, r in _shown_not_taken(v):
            shown[eid].append(r)
    rows = []
    for e in EDGES:
        hits = taken[e.id]
        cases = sorted({x["case"] for x in hits})
        status = "taken" if cases else ("shown not taken" if shown[e.id] else "not taken")
        rows.append({"id": e.id, "from": e.frm, "to": e.to, "event": e.event, "where": e.where,
                     "kernel": e.kernel, "status": status, "cases": cases, "evidence": _first_per_case(hits),
                     "shown": _first_per_case(shown[e.id]), "shown_cases": sorted({x["case"] for x in shown[e.id]})})
    return rows


def _first_per_case(items: list[dict]) -> list[dict]:
    """One entry per case, for the first EVIDENCE_KEPT cases."""
    out, cases = [], set()
    for x in items:
        if x["case"] not in cases and len(out) < EVIDENCE_KEPT:
            out.append(x)
            cases.add(x["case"])
    return out


def tables(views: list[dict]) -> dict:
    """{"states": states_table, "edges": edges_table} of a run's case views."""
    return {"states": states_table(views), "edges": edges_table(views)}


def summary(edges: list[dict]) -> str:
    """'19 of 30 edges taken, 2 shown not taken, 9 not taken'."""
    n = {s: sum(1 for e in edges if e["status"] == s) for s in ("taken", "shown not taken", "not taken")}
    return f"{n['taken']} of {len(edges)} edges taken, {n['shown not taken']} shown not taken, {n['not taken']} not taken"
