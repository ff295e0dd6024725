"""Lab helpers cases lean on: listen/connect/establish, segment filters, the sock_diag view that
waits poll (the same rows `ss` prints), and the age of a socket's timer."""

from __future__ import annotations

import struct

import pytest

from harness import ss, sockdiag
from harness.segment import match

PORT = 50000


def key(row):
    return (row.state, row.recv_q, row.send_q, row.local, row.local_port, row.peer, row.peer_port,
            row.timer and row.timer.name)


def test_listen_and_connect_both_ways_of_accepting(lab, family):
    """accept_first hands the child over at once; otherwise accept() takes it from the queue. Either
    way the Pair's client_port is the client socket's own port, with no extra call."""
    listener = lab.listen(PORT, backlog=4)
    blocked = lab.connect(listener, PORT)
    queued = lab.connect(listener, PORT, accept_first=False)
    for pair in (blocked, queued):
        assert pair.client.getsockname()[1] == pair.client_port
        assert pair.server.peer_port == pair.client_port
    accepts = sorted((c for c in lab.calls if c.op == "accept"), key=lambda c: c.t0)
    connects = sorted((c for c in lab.calls if c.op == "connect"), key=lambda c: c.t0)
    assert accepts[0].t0 < connects[0].t0 < accepts[0].t1, "accept_first: blocked in accept() during connect()"
    assert connects[1].t1 < accepts[1].t0, "accept_first=False: accept() after connect() returned"
    snap = lab.wait_ss("server", lambda s: len(s.find(local_port=PORT, state="ESTAB")) == 2, what="both children")
    assert sorted(r.peer_port for r in snap.find(state="ESTAB")) == sorted([blocked.client_port, queued.client_port])


def test_a_wait_that_keeps_nothing_leaves_the_record_as_it_was(lab, family):
    """wait_ss(keep=False) orders steps: it returns the snapshot but keeps none and adds no timeline line."""
    lab.listen(PORT)
    before = (len(lab.snapshots), len(lab.timeline.events))
    snap = lab.wait_ss("server", lambda s: s.find(state="LISTEN", local_port=PORT), what="listening", keep=False)
    assert snap.find(state="LISTEN", local_port=PORT)
    assert (len(lab.snapshots), len(lab.timeline.events)) == before
    kept = lab.wait_ss("server", lambda s: s.find(state="LISTEN", local_port=PORT), what="listening, kept")
    assert lab.snapshots[-1] is kept and len(lab.timeline.events) == before[1] + 1


def test_establish_keeps_its_shape(lab, family):
    listener, conn, cli = lab.establish(PORT)
    cli.send("x")
    assert conn.recv(10).ret == "x"
    lab.expect_segments("handshake\nclient > server  P.  1:2(1) ack 1\n...", port=PORT)


def test_segment_filters(lab, family):
    """port, src, flags (every letter), since and dropped select exactly what a list comprehension would."""
    _, conn, cli = lab.establish(PORT)
    lab.faults.drop("client > server", "P.", count=1)
    cli.send("ab")
    assert conn.recv(10).ret == "ab"
    cli.close()
    lab.wait_segment(match("server", ".", ack=4), what="the server's ACK of the FIN")
    everything = lab.segments()
    mid = everything[3].time
    assert lab.segments(PORT) == everything
    assert lab.segments(PORT + 1) == []
    assert lab.segments(src="server") == [s for s in everything if s.src == "server"]
    assert [s.flags for s in lab.segments(src="client", flags="F")] == ["F."]
    assert [s.flags for s in lab.segments(flags="S")] == ["S", "S."]
    assert lab.segments(since=mid) == [s for s in everything if s.time >= mid]
    dropped = lab.segments(dropped=True)
    assert [(s.src, s.flags, s.length) for s in dropped] == [("client", "P.", 2)]
    assert lab.segments(dropped=False) == [s for s in everything if not s.dropped_by]


def test_sock_diag_rows_are_the_rows_ss_prints(lab, family):
    """In the same moment's state (a listener, an established pair with unread data, TIME-WAIT) the
    sock_diag view and `ss -tanoi` give the same rows, in the same order."""
    listener, conn, cli = lab.establish(PORT)
    other = lab.connect(listener, PORT)
    cli.send("hello")
    lab.wait_ss("server", lambda s: any(r.recv_q == 5 for r in s.rows), what="5 unread bytes")
    other.client.close()
    other.server.close()
    lab.wait_ss("client", lambda s: "TIME-WAIT" in s.states(), what="TIME-WAIT")
    for role in ("client", "server"):
        netns = lab.topology.hosts[role].netns
        printed = ss.take(netns, label="ss")
        seen = lab.sockets(role)
        assert [key(r) for r in seen.rows] == [key(r) for r in printed.rows], f"{seen.text}\n{printed.text}"
        assert seen.argv == ("sock_diag", netns) and seen.before <= seen.time <= seen.after
    est = lab.sockets("client").find(state="ESTAB")[0]
    assert est.info["mss"] == lab.mss() - 12            # timestamps on: 12 option bytes per segment
    assert "ts" in est.info and est.raw.startswith("ESTAB")


# What ss prints that the sock_diag rows leave out: times that move while nothing happens, and rates.
MOVING = {"lastsnd", "lastrcv", "lastack", "busy", "rwnd_limited", "sndbuf_limited", "send", "pacing_rate",
          "delivery_rate", "cubic", "bbr", "reno"}


def test_sock_diag_rows_carry_every_tcp_info_field_ss_prints(lab, family):
    """A named snapshot's rows come from the kernel's sock_diag answer (harness/ss.py mode()): after
    data both ways, every field `ss -tanoi` prints but moving times and rates is in them, with ss's
    value (data_segs_out, bytes_sent, delivered, rcv_space, minrtt ...)."""
    _, conn, cli = lab.establish(PORT)
    cli.send("x" * 3000)
    got = 0
    while got < 3000:
        got += len(conn.recv(65536).ret)
    conn.send("y" * 100)
    cli.recv(100)
    lab.wait_segment(lambda s: s.src == "client" and s.ack == 101 and not s.length, timeout=2,
                     what="the client's ACK of the reply")
    for role in ("client", "server"):
        netns = lab.topology.hosts[role].netns
        printed = ss.take(netns, label="ss").find(state="ESTAB")[0]
        seen = lab.sockets(role, as_ss=True).find(state="ESTAB")[0]
        compared = set(printed.info) - MOVING
        assert {"data_segs_out", "bytes_sent", "delivered", "rcv_space", "minrtt"} <= compared, printed.raw
        assert compared <= set(seen.info), f"{role}: ss prints {sorted(compared - set(seen.info))} that the rows lack"
        for key_ in compared - {"rtt", "rto"}:          # rtt and rto are smoothed anew as ACKs come
            assert seen.info[key_] == printed.info[key_], (role, key_, seen.raw, printed.raw)


def test_sock_diag_reads_tcp_info_as_ss_and_pyroute2_do(lab, family):
    """sockdiag packs and unpacks the kernel's structs itself. A listener with the smallest receive
    buffer announces a smaller window scale than its client, so each side's two tcp_info nibbles
    differ: both read as `ss -tanoi` prints them; every field also reads as pyroute2's inet_diag
    classes decode it (but for those nibbles, which pyroute2 reads as one)."""
    srv = lab.server.socket()
    srv.setsockopt("SO_RCVBUF", 1)          # inherited by the accepted socket
    srv.bind(PORT)
    srv.listen()
    lab.connect(srv, PORT)
    for role in ("client", "server"):
        netns = lab.topology.hosts[role].netns
        printed = ss.take(netns, label="ss").find(state="ESTAB")[0]
        snap = lab.sockets(role, as_ss=True)
        seen = snap.find(state="ESTAB")[0]
        assert seen.info["wscale"] == printed.info["wscale"], f"{seen.raw}\n{printed.raw}"
        assert seen.info["wscale"][0] != seen.info["wscale"][1], seen.raw
        for key_ in ("mss", "rcvmss", "advmss", "cwnd", "pmtu"):
            assert seen.info[key_] == printed.info[key_], key_

        from pyroute2.netlink.diag import inet_diag_msg
        off, msgs = 0, []
        while off < len(snap.dump):
            length, kind = struct.unpack_from("=IH", snap.dump, off)
            if kind == 20:                  # SOCK_DIAG_BY_FAMILY: one socket
                msgs.append(snap.dump[off:off + length])
            off += (length + 3) & ~3
        assert len(msgs) == len(snap.rows) > 0
        for raw in msgs:
            theirs = inet_diag_msg(raw)
            theirs.decode()
            ours = sockdiag.decode(raw[16:])
            for name in ("family", "state", "timer", "retrans", "sport", "dport", "src", "dst", "expires",
                         "rqueue", "wqueue"):
                assert ours[name] == theirs[f"idiag_{name}"], name
            ti = theirs.get_attr("INET_DIAG_INFO")
            assert (ours["info"] is None) == (ti is None)
            if ti is not None:
                for name, value in ours["info"].items():
                    if name not in ("wscale", "app_limited"):
                        assert value == ti[f"tcpi_{name}"], name


def test_sock_diag_names_a_missing_namespace():
    with pytest.raises(Exception) as info:
        sockdiag.take("slab-no-such-namespace", label="x")
    assert "slab-no-such-namespace" in str(info.value)


def test_timer_age_brackets_the_time_wait_length(lab, family):
    """The TIME-WAIT timer, started by the client's last ACK, is 60 s long: both in the sock_diag view
    (millisecond remaining) and in ss's text (whole seconds)."""
    _, conn, cli = lab.establish(PORT)
    cli.close()
    conn.close()
    final = lab.wait_segment(match("client", ".", seq=2, ack=2), what="the client's last ACK")
    polled = lab.wait_ss("client", lambda s: s.find(state="TIME-WAIT"), what="TIME-WAIT")
    printed = lab.ss("TIME-WAIT in ss")["client"]
    for snap in (polled, printed):
        row = snap.find(state="TIME-WAIT")[0]
        low, high = row.timer_age(snap, final.time)
        assert low - 0.05 <= 60 <= high + 0.05, (low, high, row.raw)
    diag_low, diag_high = polled.find(state="TIME-WAIT")[0].timer_age(polled, final.time)
    assert diag_high - diag_low < 0.5, "sock_diag's milliseconds bound the length far tighter than ss's seconds"
    with pytest.raises(ValueError, match="no timer"):
        lab.sockets("server").find(state="LISTEN")[0].timer_age(polled, final.time)


def test_polling_starts_no_process(lab, family, monkeypatch):
    """Waits on sockets and segments, with a drop rule in place, start no `ss` or `nft` process:
    they read sock_diag and the capture. (Adding and removing the rule does run nft.)"""
    import subprocess
    started = []
    real = subprocess.Popen.__init__

    def counting(self, args, *a, **kw):
        started.append(list(args) if not isinstance(args, str) else [args])
        real(self, args, *a, **kw)
    listener, conn, cli = lab.establish(PORT)
    rule = lab.faults.drop("client > server", "P.", count=1)
    monkeypatch.setattr(subprocess.Popen, "__init__", counting)
    cli.send("ab")
    lab.wait_segment(lambda s: s.dropped_by == rule.name, what="the dropped data")
    assert conn.recv(10).ret == "ab"
    lab.wait_ss("server", lambda s: s.find(state="ESTAB"), what="ESTAB")
    cli.close()
    lab.wait_gone("client", lambda s: s.find(state="ESTAB"), 0.0, timeout=5, what="the client's ESTAB gone")
    lab.segments(PORT, dropped=True)
    monkeypatch.undo()
    assert [a for a in started if a and a[0] in ("ss", "nft")] == []
    rule.release()
