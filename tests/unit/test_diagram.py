"""harness.diagram without privileges: the eleven-states table and the edge table from hand-made case records."""

from __future__ import annotations

import copy

from harness import diagram

HOSTS = {"client": {"ipv4": "198.18.0.2", "ipv6": None}, "server": {"ipv4": "198.18.0.1", "ipv6": None}}


def hist(role, lport, peer_role, pport, states, times, sources=None):
    local = HOSTS[role]["ipv4"]
    peer = HOSTS[peer_role]["ipv4"] if peer_role != "wire" else "0.0.0.0"
    return {"local": local, "local_role": role, "local_port": lport, "peer": peer, "peer_role": peer_role,
            "peer_port": pport, "states": states, "times": times,
            "sources": sources or ["trace"] * (len(states) - 1)}


def seg(t, src, flags, sport, dport):
    return {"t": t, "src": src, "dst": "server" if src == "client" else "client", "flags": flags,
            "sport": sport, "dport": dport, "seq": 0, "len": 0, "ack": None, "dropped_by": None}


def call(t, program, op, **args):
    errno = args.pop("errno", None)
    return {"program": program, "role": program, "op": op, "args": args, "errno": errno, "t0": t, "t1": t + 0.0001}


def snap(t, role, label, *rows):
    peer = HOSTS["client" if role == "server" else "server"]["ipv4"]
    return {"t": t, "role": role, "label": label,
            "rows": [{"state": s, "local_port": lp, "peer_port": pp, "peer": peer if pp else "*"}
                     for s, lp, pp in rows]}


def four_way():
    """Client closes first; the timewait probes add FIN_WAIT2 -> TIME_WAIT -> CLOSE."""
    return {"name": "4way", "experiment": "CLOSE-4WAY", "family": "ipv4", "hosts": HOSTS, "timewait_source": "kprobe",
            "calls": [call(0.0, "server", "bind", fd=3, port=50000), call(0.001, "server", "listen", fd=3, backlog=5),
                      call(0.002, "client", "connect", fd=3, port=50000), call(0.01, "client", "close", fd=3)],
            "segments": [seg(0.002, "client", "S", 40000, 50000)],
            "transitions": [
                hist("server", 50000, "wire", 0, ["CLOSE", "LISTEN", "CLOSE"], [0.001, 0.5]),
                hist("client", 40000, "server", 50000,
                     ["CLOSE", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE"],
                     [0.002, 0.003, 0.01, 0.011, 0.05, 0.3],
                     ["trace", "trace", "trace", "trace", "timewait", "timewait"]),
                hist("server", 50000, "client", 40000,
                     ["LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"],
                     [0.002, 0.003, 0.011, 0.05, 0.051])],
            "ss": [snap(0.1, "client", "after close", ("TIME-WAIT", 40000, 50000)),
                   snap(0.1, "server", "after close", ("LISTEN", 50000, 0))]}


def listen_connect():
    """connect() on a listening socket fails: the trace shows only CLOSE -> LISTEN."""
    return {"name": "lc", "experiment": "LISTEN-CONNECT", "family": "ipv4", "hosts": HOSTS,
            "calls": [call(0.0, "server", "bind", fd=3, port=50000), call(0.001, "server", "listen", fd=3, backlog=5),
                      call(0.002, "server", "connect", fd=3, port=50001, errno="EISCONN")],
            "segments": [], "transitions": [hist("server", 50000, "wire", 0, ["CLOSE", "LISTEN"], [0.001])],
            "ss": [snap(0.01, "server", "after", ("LISTEN", 50000, 0))]}


def refused():
    """No listener: the client's SYN is answered with an RST; the client's request in the server... none."""
    return {"name": "nolisten", "experiment": "CONN-NOLISTEN", "family": "ipv4", "hosts": HOSTS,
            "calls": [call(0.0, "client", "connect", fd=3, port=50000, errno="ECONNREFUSED")],
            "segments": [seg(0.001, "client", "S", 40000, 50000), seg(0.0012, "server", "R.", 50000, 40000)],
            "transitions": [hist("client", 40000, "server", 50000, ["CLOSE", "SYN_SENT", "CLOSE"], [0.0009, 0.0013])],
            "ss": []}


def request_reset():
    """A request socket reset by the client: SYN_RECV -> CLOSE under the listener's port, which stays LISTEN."""
    return {"name": "synrcvd-rst", "experiment": "SYNRCVD-RST", "family": "ipv4", "hosts": HOSTS,
            "calls": [], "segments": [seg(0.02, "client", "R", 40000, 50000)],
            "transitions": [hist("server", 50000, "wire", 0, ["CLOSE", "LISTEN"], [0.001]),
                            hist("server", 50000, "client", 40000, ["LISTEN", "SYN_RECV", "CLOSE"], [0.01, 0.0201])],
            "ss": []}


def handover_only():
    """No probes: FIN_WAIT2 -> CLOSE in the trace, then ss shows the same ports in TIME-WAIT, later gone."""
    return {"name": "handover", "experiment": "TIMEWAIT-LEN", "family": "ipv4", "hosts": HOSTS,
            "timewait_source": "ss (no kprobe events)", "calls": [], "segments": [],
            "transitions": [hist("client", 40000, "server", 50000, ["ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE"],
                                 [0.01, 0.011, 0.05])],
            "ss": [snap(0.02, "client", "before", ("FIN-WAIT-1", 40000, 50000)),
                   snap(0.1, "client", "after", ("TIME-WAIT", 40000, 50000)),
                   snap(61.0, "client", "expired")]}


def views(*recs):
    return [diagram.view(r["name"], r) for r in recs]


def by(rows, key):
    return {r[key]: r for r in rows}


def test_closed_counts_only_when_a_socket_enters_it():
    states = by(diagram.states_table(views(listen_connect(), four_way())), "state")
    closed = states["CLOSED"]
    assert [c["id"] for c in closed["cases"]] == ["4way"]          # not LISTEN-CONNECT: it only starts there
    assert closed["cases"][0]["seen_by"] == ["timewait", "trace"]
    assert [c["id"] for c in states["LISTEN"]["cases"]] == ["lc", "4way"]
    assert states["LISTEN"]["cases"][0]["seen_by"] == ["ss", "trace"]


def test_a_request_socket_counts_its_listen_start_and_ss_unconn_is_not_closed():
    rec = request_reset()
    rec["transitions"] = rec["transitions"][1:]            # only the request's history, starting in LISTEN
    rec["ss"] = [snap(0.0, "client", "bound", ("UNCONN", 40000, 0))]
    reached = diagram.reached(diagram.view("r", rec))
    assert reached == {"LISTEN": {"trace"}, "SYN-RECEIVED": {"trace"}, "CLOSED": {"trace"}}
    rec["transitions"][0]["states"][-1] = "ESTABLISHED"
    assert "CLOSED" not in diagram.reached(diagram.view("r", rec))


def test_time_wait_from_the_probes_and_ss_counts_as_several():
    states = by(diagram.states_table(views(four_way(), handover_only())), "state")
    tw = states["TIME-WAIT"]
    assert [(c["id"], c["seen_by"]) for c in tw["cases"]] == [("4way", ["ss", "timewait"]), ("handover", ["ss"])]
    assert tw["counts"] == {"cases": 2, "several": 1, "ss": 2, "trace": 0, "timewait": 1}
    assert [r["state"] for r in diagram.states_table([])] == list(diagram.RFC_STATES)


def test_every_edge_has_a_row_in_the_diagrams_order():
    rows = diagram.edges_table(views(four_way()))
    assert [r["id"] for r in rows] == list(diagram.EDGE_IDS)
    assert len(rows) == 30 and all(r["status"] in ("taken", "shown not taken", "not taken") for r in rows)
    assert by(rows, "id")["FIN-WAIT-1 -> TIME-WAIT"]["where"] == "figure 5, note 2"
    assert by(rows, "id")["TIME-WAIT -> CLOSED (rcv RST)"]["kernel"] == "TIME_WAIT -> CLOSE"


def test_edges_taken_with_their_evidence():
    rows = by(diagram.edges_table(views(four_way(), refused(), request_reset(), handover_only())), "id")
    fw2 = rows["FIN-WAIT-2 -> TIME-WAIT"]
    assert fw2["status"] == "taken" and fw2["cases"] == ["4way", "handover"]
    assert [(e["case"], e["source"], e["transition"]) for e in fw2["evidence"]] == [
        ("4way", "timewait", "FIN_WAIT2 -> TIME_WAIT"), ("handover", "trace+ss", "FIN_WAIT2 -> CLOSE")]
    assert fw2["evidence"][0]["socket"] == "client:eph > server:50000" and fw2["evidence"][0]["t"] == 0.05
    assert rows["TIME-WAIT -> CLOSED"]["cases"] == ["4way", "handover"]       # probes' kill; ss: gone 60.9 s later
    assert rows["TIME-WAIT -> CLOSED"]["evidence"][1]["source"] == "ss"
    assert rows["SYN-SENT -> CLOSED (rcv RST)"]["cases"] == ["nolisten"]
    assert rows["SYN-SENT -> CLOSED"]["status"] == "not taken"                # no close() during SYN-SENT
    assert rows["SYN-RECEIVED -> LISTEN"]["cases"] == ["synrcvd-rst"]
    assert rows["LAST-ACK -> CLOSED"]["cases"] == ["4way"]
    assert rows["LISTEN -> CLOSED"]["cases"] == ["4way"]
    assert rows["CLOSING -> TIME-WAIT"]["status"] == "not taken" and rows["CLOSING -> TIME-WAIT"]["evidence"] == []


def test_listen_to_syn_sent_refused_by_connect_on_a_listener():
    rows = by(diagram.edges_table(views(listen_connect())), "id")
    row = rows["LISTEN -> SYN-SENT"]
    assert row["status"] == "shown not taken" and row["cases"] == [] and row["shown_cases"] == ["lc"]
    assert row["shown"] == [{"case": "lc", "call": "connect", "errno": "EISCONN",
                             "evidence": "server: connect() on the listening socket fd 3 failed with EISCONN"}]
    ok = listen_connect()
    ok["calls"][-1]["errno"] = None
    ok["transitions"][0]["states"] += ["SYN_SENT"]
    ok["transitions"][0]["times"] += [0.003]
    row = by(diagram.edges_table(views(ok)), "id")["LISTEN -> SYN-SENT"]
    assert row["status"] == "taken" and row["shown"] == []


def test_the_cause_decides_which_edge_a_close_takes():
    """The same SYN_SENT -> CLOSE is the RST edge with an RST, the CLOSE edge with close(), neither by timeout."""
    rst = refused()
    no_rst = copy.deepcopy(rst)
    no_rst["segments"] = no_rst["segments"][:1]
    closed = copy.deepcopy(no_rst)
    closed["calls"].append(call(0.0012, "client", "close", fd=3))
    rows = {name: by(diagram.edges_table(views(r)), "id") for name, r in
            (("rst", rst), ("none", no_rst), ("close", closed))}
    assert rows["rst"]["SYN-SENT -> CLOSED (rcv RST)"]["status"] == "taken"
    assert rows["none"]["SYN-SENT -> CLOSED (rcv RST)"]["status"] == "not taken"
    assert rows["none"]["SYN-SENT -> CLOSED"]["status"] == "not taken"
    assert rows["close"]["SYN-SENT -> CLOSED"]["status"] == "taken"
    dropped = copy.deepcopy(rst)
    dropped["segments"][1]["dropped_by"] = "rule 1"                # an RST dropped on the path caused nothing
    assert by(diagram.edges_table(views(dropped)), "id")["SYN-SENT -> CLOSED (rcv RST)"]["status"] == "not taken"


def test_a_reusing_syn_is_not_the_2msl_timeout():
    rec = four_way()
    """The server closed first; the client's new SYN from the same port ends its TIME-WAIT early."""
    rec = four_way()
    server_tw = hist("server", 50000, "client", 40000, ["ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE"],
                     [0.01, 0.011, 0.05, 0.3], ["trace", "trace", "timewait", "timewait"])
    rec["transitions"] = [server_tw]
    rows = by(diagram.edges_table(views(rec)), "id")
    assert rows["FIN-WAIT-2 -> TIME-WAIT"]["status"] == "taken"
    assert rows["TIME-WAIT -> CLOSED"]["status"] == "taken"          # no SYN yet: the timer ran out
    rec["segments"].append(seg(0.2999, "client", "S", 40000, 50000))
    rows = by(diagram.edges_table(views(rec)), "id")
    assert rows["TIME-WAIT -> CLOSED"]["status"] == "not taken"


def test_summary_counts():
    rows = diagram.edges_table(views(listen_connect()))
    assert diagram.summary(rows) == "1 of 30 edges taken, 1 shown not taken, 28 not taken"


def test_a_request_socket_reset_is_seen_by_ss_only():
    """The request never reaches the tracepoint: ss shows SYN-RECV, the RST arrives, the next snapshot lacks it."""
    rec = request_reset()
    rec["transitions"] = rec["transitions"][:1]                     # only the listener, as the kernel traces it
    rec["ss"] = [snap(0.015, "server", "the request in SYN-RECV", ("LISTEN", 50000, None), ("SYN-RECV", 50000, 40000)),
                 snap(0.03, "server", "the request gone", ("LISTEN", 50000, None))]
    row = by(diagram.edges_table(views(rec)), "id")["SYN-RECEIVED -> LISTEN"]
    assert row["status"] == "taken" and row["evidence"][0]["source"] == "ss"
    assert row["evidence"][0]["socket"] == "server:50000 > client:eph"
    no_rst = copy.deepcopy(rec)
    no_rst["segments"] = []
    assert by(diagram.edges_table(views(no_rst)), "id")["SYN-RECEIVED -> LISTEN"]["status"] == "not taken"
    no_listener = copy.deepcopy(rec)
    no_listener["ss"][1]["rows"] = []
    rows = by(diagram.edges_table(views(no_listener)), "id")
    assert rows["SYN-RECEIVED -> LISTEN"]["status"] == "not taken"
    assert rows["SYN-RECEIVED -> CLOSED (rcv RST)"]["status"] == "taken"


def test_fin_ack_in_fin_wait_1_is_shown_taken_through_fin_wait_2():
    """CLOSE-3WAY: the peer's FIN+ACK makes FIN_WAIT1 -> FIN_WAIT2 -> CLOSE microseconds apart, then TIME-WAIT."""
    rec = handover_only()
    rec["transitions"][0]["times"] = [0.01, 0.05, 0.050004]
    orphan = copy.deepcopy(rec)          # no FIN from the peer: an orphan's handover, as quick
    assert by(diagram.edges_table(views(orphan)), "id")["FIN-WAIT-1 -> TIME-WAIT"]["status"] == "not taken"
    rec["segments"] = [seg(0.04995, "server", "F.", 50000, 40000)]
    row = by(diagram.edges_table(views(rec)), "id")["FIN-WAIT-1 -> TIME-WAIT"]
    assert row["status"] == "shown not taken" and row["shown_cases"] == ["handover"]
    assert "4 us apart" in row["shown"][0]["evidence"]
    slow = handover_only()                                          # FIN_WAIT2 lasted 39 ms: two segments
    assert by(diagram.edges_table(views(slow)), "id")["FIN-WAIT-1 -> TIME-WAIT"]["status"] == "not taken"
