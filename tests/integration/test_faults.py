"""The fault rules (harness/faults.py) on a real link: what they drop, how it is recorded, how it ends."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from harness.errors import ExpectationSyntaxError
from harness.faults import TABLE, Faults
from harness.lab import Lab

PORT = 50000


@pytest.fixture
def lab_sysctls(lab_sysctls):
    """Name: lab_sysctls. Scope: function. Retransmissions after ~16 ms, so dropped segments come back fast."""
    return {**lab_sysctls, "net.ipv4.tcp_rto_min_us": 10_000}


def connected(lab):
    """(client socket, accepted server socket) over one fresh connection to PORT."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT)
    return cli, srv.accept()


def rules_in_kernel(lab, host: str) -> str:
    """The prerouting chain of the faults table in `host`'s namespace, as nft lists it."""
    return lab.hosts.hosts[host].run(["nft", "-a", "list", "chain", "inet", TABLE, "prerouting"]).stdout


def test_drop_takes_only_the_named_direction_flags_payload_and_count(lab, family):
    """client > server, ACK flag, with payload, twice: the first two data segments go, nothing else does."""
    cli, conn = connected(lab)
    rule = lab.faults.drop("client > server", ".", payload=True, count=2)
    cli.send("ab")
    assert conn.recv(10).ret == "ab"           # the third copy passes
    conn.send("cd")                            # the other direction, same flags: untouched
    assert cli.recv(10).ret == "cd"

    segs = lab.segments()
    dropped = [s for s in segs if s.dropped_by]
    assert [(s.src, s.seq, s.length) for s in dropped] == [("client", 1, 2)] * 2, "\n".join(map(str, segs))
    assert {s.dropped_by for s in dropped} == {rule.name}
    assert lab.faults.counters(rule) == len(dropped) == 2
    delivered = [s for s in segs if s.src == "client" and s.length and not s.dropped_by]
    assert [(s.seq, s.length) for s in delivered] == [(1, 2)], "exactly one copy of the data passes"
    assert all(not s.dropped_by for s in segs if s.src == "server" or s.length == 0)


def test_drop_by_flags_in_one_direction_with_a_count(lab, family):
    """server > client FIN once: the client's FIN (same flags, other way) passes, the server's FIN comes again."""
    cli, conn = connected(lab)
    rule = lab.faults.drop("server > client", "F.", count=1)
    cli.close()
    lab.wait_ss("client", lambda s: "FIN-WAIT-2" in s.states(), what="the client's FIN-WAIT-2")
    conn.close()
    lab.wait_ss("server", lambda s: s.states() == ["LISTEN"], what="the server's connection gone")

    lab.expect_segments("""
        client > server  S   0:0(0)
        server > client  S.  0:0(0) ack 1
        client > server  .   1:1(0) ack 1
        client > server  F.  1:1(0) ack 1
        server > client  .   1:1(0) ack 2
        server > client  F.  1:1(0) ack 2 (dropped)
        server > client  F.  1:1(0) ack 2
        client > server  .   2:2(0) ack 2
    """)
    segs = lab.segments()
    assert [i for i, s in enumerate(segs) if s.dropped_by] == [5]
    assert lab.faults.counters(rule) == 1


def test_payload_false_drops_pure_acks_only(lab, family):
    """server > client ACK without payload: the server's data segments pass, its pure ACKs do not."""
    cli, conn = connected(lab)
    rule = lab.faults.drop("server > client", ".", payload=False, count=1)
    conn.send("hello")                         # data from the server, with the ACK flag
    assert cli.recv(10).ret == "hello"
    cli.send("x")                              # its pure ACK is dropped once; the data was already delivered
    assert conn.recv(10).ret == "x"
    lab.wait_segment(lambda s: s.src == "server" and s.length == 0 and s.ack == 2 and not s.dropped_by,
                     timeout=2, what="the server's ACK of the client's byte, after the dropped one")

    segs = lab.segments()
    dropped = [s for s in segs if s.dropped_by]
    assert [(s.src, s.flags, s.length, s.ack) for s in dropped] == [("server", ".", 0, 2)], "\n".join(map(str, segs))
    assert lab.faults.counters(rule) == 1
    assert all(not s.dropped_by for s in segs if s.length)


def test_port_drops_only_that_connections_segments(lab, family):
    """Final ACKs held for one client port only: that request stays SYN-RECV, another client completes."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    held, other = lab.client.socket(), lab.client.socket()
    held.bind(PORT + 1)
    rule = lab.faults.hold("client > server", ".", payload=False, port=PORT + 1)
    held.connect(lab.hosts.server, PORT)
    other.connect(lab.hosts.server, PORT)
    snap = lab.wait_ss("server", lambda s: s.find(state="ESTAB"), what="the other client's connection")
    assert [r.peer_port for r in snap.find(state="SYN-RECV")] == [PORT + 1], snap.text
    dropped = [s for s in lab.segments() if s.dropped_by]
    assert dropped and all(s.sport == PORT + 1 and s.flags == "." for s in dropped), "\n".join(map(str, dropped))
    assert lab.faults.counters(rule) == len(dropped)
    assert f"of port {PORT + 1}" in rule.describe()


def test_block_output_of_one_port_keeps_only_that_connections_segments_off_the_link(lab, family):
    """The client's SYNs to one port never leave its kernel; a connection to another port completes."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    lab.faults.block_output("client", "S", port=PORT + 1)
    lab.client.socket().connect(lab.hosts.server, PORT + 1, nonblocking=True, check=False)
    lab.client.socket().connect(lab.hosts.server, PORT)
    assert [s.dport for s in lab.segments() if s.flags == "S"] == [PORT]


def held_copy(lab, rule, *, after: float):
    """Wait for a dropped copy of the client's held data sent after `after`."""
    return lab.wait_segment(lambda s: s.dropped_by == rule.name and s.src == "client" and s.length and s.time > after,
                            timeout=2, what="a dropped copy of the held data")


def test_release_lets_the_retransmission_through(lab):
    """A rule without count drops every copy until release(); then a copy passes and the kernel rule is gone."""
    cli, conn = connected(lab)
    rule = lab.faults.hold("client > server", ".", payload=True)
    cli.send("ab")
    held_copy(lab, rule, after=held_copy(lab, rule, after=rule.added).time)
    before_read = time.monotonic()
    counted = lab.faults.counters(rule)
    after_read = time.monotonic()
    assert f'comment "{rule.name}"' in rules_in_kernel(lab, "server")
    releasing = time.monotonic()
    rule.release()
    assert f'comment "{rule.name}"' not in rules_in_kernel(lab, "server")
    assert conn.recv(10).ret == "ab"
    acked = lab.wait_segment(lambda s: s.src == "server" and s.ack == 3, timeout=2, what="the server's ACK of the data")

    copies = [s for s in lab.segments() if s.src == "client" and s.length]
    # nftables' counter lies between the copies captured before and after it was read.
    assert counted >= 2
    assert sum(1 for s in copies if s.time < before_read) <= counted <= sum(1 for s in copies if s.time < after_read)
    # Every copy before release() began was marked dropped; the copy the server ACKed came after it.
    assert all(s.dropped_by for s in copies if s.time < releasing)
    assert releasing < max(s.time for s in copies if s.time < acked.time)
    assert ("removed rule " + rule.name) in [text for _, _, text in lab.faults.events]


def test_a_copy_delivered_during_release_is_not_marked_dropped(lab, monkeypatch):
    """The copy that passes as soon as the kernel deletes the rule is not marked dropped, however slow nft returns."""
    cli, conn = connected(lab)
    rule = lab.faults.hold("client > server", ".", payload=True)
    cli.send("ab")
    held_copy(lab, rule, after=rule.added)
    nft = lab.faults.nft(rule.host)
    run = nft.run

    def nft_returning_late(script, **kw):
        out = run(script, **kw)
        if script and script.startswith("delete rule"):
            # The kernel no longer drops: a retransmitted copy passes before nft's caller regains control,
            # as happens whenever nft is slow on a busy machine.
            lab.wait_segment(lambda s: s.src == "server" and s.ack == 3, timeout=2, what="the ACK of a delivered copy")
        return out

    monkeypatch.setattr(nft, "run", nft_returning_late)
    rule.release()
    assert conn.recv(10).ret == "ab"

    segs = lab.segments()
    acked = next(i for i, s in enumerate(segs) if s.src == "server" and s.ack == 3)
    delivered = [s for s in segs[:acked] if s.src == "client" and s.length][-1]
    assert not delivered.dropped_by, f"the copy the server ACKed is marked dropped: {delivered}"


def test_rules_are_removed_at_the_end_of_a_case(privileged):
    """Every rule still in place when a lab closes is deleted from the kernel before its namespace goes."""
    with Lab(family="ipv4") as lab:
        kept = lab.faults.drop("client > server", "S")
        released = lab.faults.drop("server > client", "R", count=1)
        released.release()
        assert f'comment "{kept.name}"' in rules_in_kernel(lab, "server")
        assert f'comment "{released.name}"' not in rules_in_kernel(lab, "client")
        assert kept.removed is None
    # Faults.remove() sets `removed` only once `nft delete` succeeded, i.e. while the namespace existed.
    assert kept.removed is not None and released.removed is not None
    removals = [text for _, _, text in lab.faults.events if text.startswith("removed rule")]
    assert removals == [f"removed rule {released.name}", f"removed rule {kept.name}"]


def test_nft_runs_in_process_and_its_contexts_end_with_the_case(privileged):
    """With the nftables binding (bootstrap installs it) the rules go in through libnftables, no nft
    process; each host's context is freed once the lab has closed (by a background thread; its
    netlink socket would keep the namespace alive), and nft's refusal is a CommandError carrying
    nft's own message."""
    import gc
    import weakref
    from harness import background, nft
    from harness.errors import CommandError
    if nft.binding() is None:
        pytest.skip("no nftables binding here (apt-get install python3-nftables): faults run the nft program")
    with Lab(family="ipv4") as lab:
        lab.faults.drop("client > server", "S")
        ctx = weakref.ref(lab.faults.nft(lab.hosts.hosts["server"])._ctx)
        assert ctx() is not None
        with pytest.raises(CommandError, match="No such file or directory|does not exist"):
            lab.faults.nft(lab.hosts.hosts["server"]).run("delete table inet no_such_table\n")
    background.flush()
    gc.collect()
    assert ctx() is None


@pytest.mark.parametrize("direction, flags, wanted", [
    ("client > client", None, "expected '<host> > <host>'"),
    ("client -> server", None, "expected '<host> > <host>'"),
    ("client > router", None, "hosts ['client', 'server']"),
    ("client > server", "SX", "expected tcpdump flag letters F S R P . , found 'X'"),
    ("client > server", "syn", "found 's'"),
], ids=["same-host", "arrow", "unknown-host", "bad-letter", "word"])
def test_a_bad_direction_or_flag_letter_is_a_clear_error(direction, flags, wanted):
    """A malformed rule raises ExpectationSyntaxError naming what was expected, before any nft command."""
    hosts = {"client": object(), "server": object()}     # parsing needs only the host names
    faults = Faults(SimpleNamespace(hosts=hosts), capture=None)
    with pytest.raises(ExpectationSyntaxError) as info:
        faults.drop(direction, flags)
    assert wanted in str(info.value)
    assert faults.rules == []


def test_without_the_binding_the_nft_program_does_the_same(privileged, monkeypatch):
    """Where python3-nftables is not installed, each command runs `nft` inside the namespace: the same
    rules, handles and counters."""
    from harness import nft
    monkeypatch.setattr(nft, "binding", lambda: None)
    with Lab(family="ipv4") as lab:
        rule = lab.faults.drop("client > server", "S", count=1)
        assert rule.handles and f'comment "{rule.name}"' in rules_in_kernel(lab, "server")
        assert lab.faults.nft(lab.hosts.hosts["server"])._ctx is None
        cli = lab.client.socket()
        cli.connect(lab.hosts.server, PORT, check=False, timeout=2)
        rule.release()
        assert rule.final_count == 1


def test_a_hosts_nft_context_is_freed_in_the_background(lab):
    """Closing libnftables' netlink socket waits for nf_tables' destroy work (an RCU grace period
    after rules were removed): the case's teardown hands the context's last reference to a
    background thread."""
    import threading
    import weakref

    from harness import background
    from harness.nft import Nft
    nft = Nft(lab.topology.hosts["client"])
    nft.run("add table inet socklab_test")
    nft.run("delete table inet socklab_test")
    if nft._ctx is None:
        pytest.skip("no libnftables binding here: nft runs as a program")
    freed = []
    weakref.finalize(nft._ctx, lambda: freed.append(threading.current_thread().name))
    nft.close()
    background.flush()
    assert len(freed) == 1 and freed[0].startswith("socklab-release"), freed
