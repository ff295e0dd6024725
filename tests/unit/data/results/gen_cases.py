"""The cases whose artifacts make the fixture runs of test_results/test_report/test_compare.

Not a catalogue case and not collected by default (the name does not match test_*.py). To remake
the fixtures (as root), see README.txt next to this file.
"""

import pytest

from harness.judge import judge, verdict_if

PORT = 50000


@pytest.fixture
def lab_sysctls(lab_sysctls):
    return {**lab_sysctls, "net.ipv4.tcp_keepalive_time": "600"}


@judge("FIX-CLOSE", claims=[], text="the active closer ends in TIME-WAIT")
def closer_in_timewait(rec):
    states = rec.states("client", "after close")
    return verdict_if("TIME-WAIT" in states, f"client ss shows {states}")


@judge("FIX-DROP", claims=[], text="a lost SYN is retransmitted")
def syn_retransmitted(rec):
    syns = len(rec.segments(src="client", flags="S"))
    return verdict_if(syns == 2, f"{syns} SYNs before the handshake completed")


@judge("FIX-FAIL", claims=[], text="connect to a closed port is <refused> & 'reported'")
def refused_and_reported(rec):
    return verdict_if(False, f"connect failed with {rec.call('connect').result()} <script>",
                      setting="net.ipv4.example=1")


@judge("FIX-QUIET", claims=[], text="listen() alone sends nothing")
def listen_sends_nothing(rec):
    return verdict_if(not rec.segments(), f"{len(rec.segments())} segments; server ss "
                      f"{rec.snapshot('server', 'after listen').states()}")


@pytest.mark.article("004")
@pytest.mark.claim(closer_in_timewait)
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
    lab.wait_ss("client", lambda s: "TIME-WAIT" in s.states(), what="client TIME-WAIT", required=False)
    lab.ss("after close")


@pytest.mark.article("004")
@pytest.mark.claim(syn_retransmitted)
@pytest.mark.families("ipv4")
def test_drop(lab, family):
    """The first SYN is dropped; the retransmitted one completes the handshake."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    lab.faults.drop("client > server", "S", count=1)
    lab.client.socket().connect(lab.hosts.server, PORT)
    lab.ss("after connect")


@pytest.mark.article("003")
@pytest.mark.claim(refused_and_reported)
@pytest.mark.families("ipv4")
def test_fail(lab, family):
    """A refused connect, then a deliberate failure (text with HTML in it). The runs in this folder
    were made when a failed case was still judged (verdict differs); today it is not."""
    lab.client.socket().connect(lab.hosts.server, PORT, expect="ECONNREFUSED")
    assert 1 == 2, "deliberate failure <b>"


@pytest.mark.article("004")
@pytest.mark.claim(listen_sends_nothing)
@pytest.mark.families("ipv4")
def test_quiet(lab, family):
    """A listener and nothing else: no segment, one LISTEN row."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(3)
    lab.ss("after listen")


@pytest.mark.article("002")
@pytest.mark.experiment("FIX-SKIP")
@pytest.mark.families("ipv4")
@pytest.mark.skip(reason="skipped before its lab existed")
def test_skipped(lab, family):
    """Skipped at set-up: the plugin's own record (case.json with ids and outcome; outcome.json in older runs)."""
