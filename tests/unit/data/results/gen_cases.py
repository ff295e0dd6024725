"""The cases whose artifacts make the fixture runs of test_results/test_report/test_compare.

Not a catalogue case and not collected by default (the name does not match test_*.py). To remake
the fixtures (as root), see README.txt next to this file.
"""

import pytest

PORT = 50000


@pytest.fixture
def lab_sysctls(lab_sysctls):
    return {**lab_sysctls, "net.ipv4.tcp_keepalive_time": "600"}


@pytest.mark.article("004")
@pytest.mark.experiment("FIX-CLOSE")
@pytest.mark.claim("the active closer ends in TIME-WAIT")
@pytest.mark.families("ipv4")
def test_close(lab, family):
    """Data, then the client closes first and the server second: the client sits in TIME-WAIT."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    accepting = srv.accept(wait=False)
    cli = lab.client.socket()
    cli.connect(lab.hosts.server, PORT)
    conn = accepting.wait()
    cli.send("hello")
    conn.recv(100)
    cli.close()
    lab.wait_segment(lambda s: s.src == "server" and s.ack == 7, what="the ACK of the client's FIN")
    conn.close()
    lab.wait_ss("client", lambda s: "TIME-WAIT" in s.states(), what="client TIME-WAIT")
    snap = lab.ss("after close")
    lab.verdict("TIME-WAIT" in snap["client"].states(), f"client ss shows {snap['client'].states()}")


@pytest.mark.article("004")
@pytest.mark.experiment("FIX-DROP")
@pytest.mark.claim("a lost SYN is retransmitted")
@pytest.mark.families("ipv4")
def test_drop(lab, family):
    """The first SYN is dropped; the retransmitted one completes the handshake."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    lab.faults.drop("client > server", "S", count=1)
    lab.client.socket().connect(lab.hosts.server, PORT)
    syns = len([s for s in lab.segments() if s.flags == "S"])
    lab.ss("after connect")
    lab.verdict(syns == 2, f"{syns} SYNs before the handshake completed")


@pytest.mark.article("003")
@pytest.mark.experiment("FIX-FAIL")
@pytest.mark.claim("connect to a closed port is <refused> & 'reported'")
@pytest.mark.families("ipv4")
def test_fail(lab, family):
    """A refused connect, a verdict that differs, then a deliberate failure (text with HTML in it)."""
    lab.client.socket().connect(lab.hosts.server, PORT, expect="ECONNREFUSED")
    lab.verdict(False, "connect failed with ECONNREFUSED <script>", setting="net.ipv4.example=1")
    assert 1 == 2, "deliberate failure <b>"


@pytest.mark.article("004")
@pytest.mark.experiment("FIX-QUIET")
@pytest.mark.claim("listen() alone sends nothing")
@pytest.mark.families("ipv4")
def test_quiet(lab, family):
    """A listener and nothing else: no segment, one LISTEN row."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(3)
    snap = lab.ss("after listen")
    lab.verdict(not lab.segments(), f"{len(lab.segments())} segments; server ss {snap['server'].states()}")


@pytest.mark.article("002")
@pytest.mark.experiment("FIX-SKIP")
@pytest.mark.families("ipv4")
@pytest.mark.skip(reason="skipped before its lab existed")
def test_skipped(lab, family):
    """Skipped at set-up: only outcome.json."""
