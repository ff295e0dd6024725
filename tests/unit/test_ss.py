"""harness.ss on real `ss -N NS -tanoi` output (iproute2 6.1, Linux 6.18), no privileges needed.

The files in data/ were printed by `ss -N sltestss-<pid> -tanoi` in a throwaway namespace:
- ss_empty.txt: the fresh namespace (header only).
- ss_states.txt: every TCP state at once. Listeners on 127.0.0.1, [::], a dual-stack `*`, [::1] and
  127.0.0.53%lo (SO_BINDTODEVICE); ESTAB pairs over 127.0.0.1, ::1 and v4-mapped, one with 1000
  unread bytes and one client with SO_KEEPALIVE; zero-window senders (persist timer) in ESTAB,
  FIN-WAIT-1 (closed with unsent data) and LAST-ACK (peer half-closed and not reading); TIME-WAIT
  (client closed first); an orphan FIN-WAIT-2 facing CLOSE-WAIT; SYN-SENT to 198.18.0.2 behind a
  veth whose peer is down; SYN-RECV and CLOSING held by nftables drops (handshake ACK; the ACKs
  of a simultaneous close); data to port 5008 dropped at input (retransmissions).
- ss_listen.txt: `ss -N NS -tanoi state listening`, which prints no State column.
"""

from collections import Counter
from pathlib import Path
import shutil
import subprocess

import pytest

from harness import ss
from harness.errors import CommandError, SetupError

DATA = Path(__file__).parent / "data"


def text(name):
    return (DATA / name).read_text()


@pytest.fixture(scope="module")
def rows():
    return ss.parse(text("ss_states.txt"))


def one(rows, **match):
    found = [r for r in rows if all(getattr(r, k) == v for k, v in match.items())]
    assert len(found) == 1, f"{match}: {found}"
    return found[0]


def test_empty_table_has_no_rows():
    assert text("ss_empty.txt").startswith("State")
    assert ss.parse(text("ss_empty.txt")) == []


def test_every_state_is_read_as_ss_prints_it(rows):
    assert Counter(r.state for r in rows) == Counter({
        "ESTAB": 10, "LISTEN": 9, "FIN-WAIT-2": 2, "CLOSING": 2, "SYN-SENT": 1, "SYN-RECV": 1,
        "FIN-WAIT-1": 1, "CLOSE-WAIT": 1, "LAST-ACK": 1, "TIME-WAIT": 1})


def test_raw_lines_are_kept_verbatim(rows):
    t = text("ss_states.txt")
    header = t.splitlines()[0]
    assert "\n".join([header] + [r.raw for r in rows]) + "\n" == t
    assert str(one(rows, local_port=38656)) == one(rows, local_port=38656).raw


def test_queues_ports_and_info_of_an_established_pair(rows):
    server = one(rows, state="ESTAB", local_port=5001, peer_port=38650)
    assert (server.recv_q, server.send_q) == (1000, 0)
    assert (server.local, server.peer) == ("127.0.0.1", "127.0.0.1")
    assert server.timer is None
    assert server.info["mss"] == 32768 and server.info["rcvmss"] == 1000
    client = one(rows, state="ESTAB", local_port=38650)
    assert client.timer == ss.Timer("keepalive", 7140.0, 0)          # timer:(keepalive,119min,0)
    assert client.info["ts"] is True and client.info["sack"] is True
    assert client.info["wscale"] == (10, 10)
    assert client.info["rto"] == 204 and client.info["cwnd"] == 11
    assert client.info["rtt"] == (0.069, 0.039)
    assert client.info["bytes_acked"] == 1001
    assert client.info["bbr"]["mrtt"] == 0.013                      # bbr:(bw:...,mrtt:0.013,...)
    assert client.info["bbr"]["bw"] == "21740306392bps"
    assert client.info["send"] == "45056000000bps"                  # "send 45056000000bps"
    assert client.info["pacing_rate"] == "97214450416bps"


def test_time_wait_and_orphan_fin_wait_2_have_timewait_timers_and_no_info(rows):
    tw = one(rows, state="TIME-WAIT")
    assert (tw.local_port, tw.peer_port) == (38656, 5001)
    assert tw.timer == ss.Timer("timewait", 58.0, 0)
    assert tw.info == {}
    orphan = one(rows, state="FIN-WAIT-2", local="::1")
    assert orphan.timer == ss.Timer("timewait", 58.0, 0) and orphan.info == {}
    assert one(rows, state="CLOSE-WAIT").peer_port == orphan.local_port


def test_syn_sent_and_syn_recv_after_one_retransmission(rows):
    sent = one(rows, state="SYN-SENT")
    assert (sent.local, sent.local_port, sent.peer, sent.peer_port) == ("198.18.0.1", 35164, "198.18.0.2", 80)
    assert sent.send_q == 1
    assert sent.timer == ss.Timer("on", 0.74, 1)
    assert sent.info["rto"] == 1000 and sent.info["mss"] == 524
    assert sent.info["unacked"] == 1 and sent.info["lost"] == 1 and sent.info["app_limited"] is True
    recv = one(rows, state="SYN-RECV")
    assert recv.timer == ss.Timer("on", 1.74, 1)                    # printed "1.740ms": 1.74 s
    assert recv.info == {}


def test_retransmitting_sender(rows):
    r = one(rows, state="ESTAB", local_port=47558)
    assert r.send_q == 100 and r.peer_port == 5008
    assert r.timer == ss.Timer("on", 0.4, 2)
    assert r.info["retrans"] == (1, 3)
    assert r.info["bytes_retrans"] == 300 and r.info["backoff"] == 2 and r.info["cwnd"] == 1


def test_zero_window_senders_show_the_persist_timer(rows):
    for state, port in (("FIN-WAIT-1", 53140), ("LAST-ACK", 5005), ("ESTAB", 58988)):
        r = one(rows, state=state, local_port=port)
        assert r.timer == ss.Timer("persist", 0.252, 1)
        assert r.send_q in (2803712, 2803713)
        assert r.info["rwnd_limited"].endswith("ms(100.0%)")


def test_closing_pair(rows):
    closing = [r for r in rows if r.state == "CLOSING"]
    assert {(r.local_port, r.peer_port) for r in closing} == {(55442, 5007), (5007, 55442)}
    for r in closing:
        assert (r.recv_q, r.send_q) == (1, 1)
        assert r.timer == ss.Timer("on", 0.164, 0) and r.info["unacked"] == 1


def test_ipv6_wildcard_and_device_addresses(rows):
    assert one(rows, state="ESTAB", local_port=58988).local == "::1"
    v6only = one(rows, state="LISTEN", local_port=5003)
    assert (v6only.local, v6only.peer, v6only.peer_port) == ("::", "::", None)
    dual = one(rows, state="LISTEN", local_port=5002)
    assert (dual.local, dual.peer, dual.peer_port) == ("*", "*", None)
    assert one(rows, state="LISTEN", local_port=5007).local == "::1"
    mapped = one(rows, state="ESTAB", local_port=5002, peer_port=50388)
    assert (mapped.local, mapped.peer) == ("::ffff:127.0.0.1", "::ffff:127.0.0.1")
    resolver = one(rows, local_port=53)
    assert (resolver.local, resolver.local_dev, resolver.peer, resolver.peer_port) == ("127.0.0.53", "lo", "0.0.0.0", None)
    assert resolver.info == {"bbr": True, "cwnd": 10}


def test_table_without_state_column():
    t = text("ss_listen.txt")
    assert t.startswith("Recv-Q")
    assert [r.state for r in ss.parse(t)] == [None] * 9
    rows = ss.parse(t, state=ss.single_state(["state", "listening"]))
    assert [r.state for r in rows] == ["LISTEN"] * 9
    assert [(r.local, r.local_port) for r in rows][:2] == [("127.0.0.53", 53), ("127.0.0.1", 5008)]


@pytest.mark.parametrize("args, state", [
    (["state", "listening"], "LISTEN"),
    (["state", "time-wait"], "TIME-WAIT"),
    (["state", "established", "state", "fin-wait-1"], None),
    (["state", "connected"], None),
    (["exclude", "listening"], None),
    ([], None),
], ids=["listening", "time-wait", "two-states", "group", "exclude", "none"])
def test_single_state(args, state):
    assert ss.single_state(args) == state


@pytest.mark.parametrize("printed, seconds", [
    ("119min", 7140.0), ("5min30sec", 330.0), ("59sec", 59.0), ("1.740ms", 1.74),
    ("9.501sec", 9.501), ("400ms", 0.4), ("024ms", 0.024), ("", 0.0),
])
def test_parse_duration(printed, seconds):
    assert ss.parse_duration(printed) == pytest.approx(seconds)


@pytest.mark.parametrize("printed, parts", [
    ("127.0.0.1:5001", ("127.0.0.1", 5001, None)),
    ("0.0.0.0:*", ("0.0.0.0", None, None)),
    ("[::]:*", ("::", None, None)),
    ("*:*", ("*", None, None)),
    ("[::ffff:127.0.0.1]:5002", ("::ffff:127.0.0.1", 5002, None)),
    ("127.0.0.53%lo:53", ("127.0.0.53", 53, "lo")),
    ("[fe80::1]%eth0:22", ("fe80::1", 22, "eth0")),
    ("*%lo:53", ("*", 53, "lo")),
])
def test_split_endpoint(printed, parts):
    assert ss.split_endpoint(printed) == parts


def test_unknown_info_is_kept_not_fatal():
    info = ss.parse_info("ts sack cubic wscale:7,7 retrans:0/2 bbr:(bw:1bps,mrtt:0.5) send 10bps "
                         "skmem:(r0,rb131072) users:((\"a b\",pid=1,fd=3)) <-> odd:x:y")
    assert info["cubic"] is True and info["wscale"] == (7, 7) and info["retrans"] == (0, 2)
    assert info["bbr"] == {"bw": "1bps", "mrtt": 0.5} and info["send"] == "10bps"
    assert info["skmem"] == "(r0,rb131072)" and info["users"] == '(("a b",pid=1,fd=3))'
    assert info["<->"] is True and info["odd"] == "x:y"


def test_lines_that_are_not_rows_do_not_crash():
    t = text("ss_states.txt").splitlines()
    garbled = "\n".join([t[0], "something ss never printed", t[1], t[2], "ESTAB x y"]) + "\n"
    rows = ss.parse(garbled)
    assert len(rows) == 1 and rows[0].local_port == 53
    assert rows[0].info["unparsed"] == ["something ss never printed", "ESTAB x y"]


def test_an_unknown_timer_spelling_stays_in_info():
    header = text("ss_states.txt").splitlines()[0]
    [row] = ss.parse(header + "\nESTAB 0 0 198.18.0.1:41000 198.18.0.2:50000 timer:(on,1.5s,0)\n\t cubic\n")
    assert row.timer is None and row.info == {"timer": "(on,1.5s,0)", "cubic": True}


class FakeRun:
    """Stands in for subprocess.Popen: every process it starts ends with the same result."""
    def __init__(self, returncode=0, stdout="", stderr=""):
        self.result = (returncode, stdout, stderr)
        self.argv = None
        self.events = []

    def __call__(self, argv, **kwargs):
        self.argv = argv
        self.events.append(("start", argv[2]))
        fake = self

        class Proc:
            returncode = None

            def communicate(self):
                fake.events.append(("wait", argv[2]))
                self.returncode = fake.result[0]
                return fake.result[1:]

            def poll(self):
                return self.returncode

        return Proc()


def test_take_runs_ss_in_the_namespace_and_keeps_the_text(monkeypatch):
    fake = FakeRun(stdout=text("ss_listen.txt"))
    monkeypatch.setattr(ss.subprocess, "Popen", fake)
    snap = ss.take("sltest-a", label="after listen()", extra_args=("state", "listening"))
    assert fake.argv == ["ss", "-N", "sltest-a", "-tanoi", "state", "listening"]
    assert snap.text == text("ss_listen.txt") and str(snap) == snap.text
    assert (snap.label, snap.netns) == ("after listen()", "sltest-a")
    assert snap.before <= snap.time <= snap.after
    assert snap.states() == ["LISTEN"] * 9
    assert [r.peer for r in snap.find(local_port=5003)] == ["::"]
    assert snap.find(state="ESTAB") == []


def test_a_snapshot_of_several_hosts_runs_their_ss_at_once(monkeypatch):
    fake = FakeRun(stdout=text("ss_listen.txt"))
    monkeypatch.setattr(ss.subprocess, "Popen", fake)
    snaps = ss.take_all(["sltest-a", "sltest-b"], label="both", extra_args=("state", "listening"))
    assert fake.events == [("start", "sltest-a"), ("start", "sltest-b"), ("wait", "sltest-a"), ("wait", "sltest-b")]
    assert [(s.netns, s.label, s.states()) for s in snaps] == [("sltest-a", "both", ["LISTEN"] * 9),
                                                               ("sltest-b", "both", ["LISTEN"] * 9)]


def test_snapshot_find(monkeypatch):
    monkeypatch.setattr(ss.subprocess, "Popen", FakeRun(stdout=text("ss_states.txt")))
    snap = ss.take("sltest-a", label="all")
    assert len(snap.find(local_port=5001)) == 2                     # listener and accepted socket
    assert [r.state for r in snap.find(peer_port=5001)] == ["ESTAB", "TIME-WAIT"]
    assert [r.local_port for r in snap.find(peer_port=5001, state="TIME-WAIT")] == [38656]


def test_take_failure_carries_the_command(monkeypatch):
    monkeypatch.setattr(ss.subprocess, "Popen", FakeRun(1, "", "Cannot open network namespace\n"))
    with pytest.raises(CommandError) as exc:
        ss.take("nope", label="x")
    assert exc.value.argv == ["ss", "-N", "nope", "-tanoi"]
    assert exc.value.returncode == 1 and "Cannot open" in exc.value.stderr


def test_missing_ss_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SetupError, match="apt-get install -y iproute2"):
        ss.take("sltest-a", label="x")


def test_real_ss_in_a_missing_namespace_raises_command_error():
    if shutil.which("ss") is None:
        pytest.skip("ss not installed")
    with pytest.raises(CommandError) as exc:
        ss.take("sltest-no-such-namespace", label="x")
    assert exc.value.returncode != 0 and exc.value.argv[:3] == ["ss", "-N", "sltest-no-such-namespace"]


def test_rows_without_info_lines():
    """`ss -tano` (no -i): the same rows, timers kept, info empty."""
    plain = "".join(l for l in text("ss_states.txt").splitlines(keepends=True) if not l.startswith("\t"))
    rows = ss.parse(plain)
    assert len(rows) == 29 and all(r.info == {} for r in rows)
    assert one(rows, state="TIME-WAIT").timer == ss.Timer("timewait", 58.0, 0)


def test_find_tells_apart_peers_on_one_port_by_address():
    """Two connections from the same port number of two addresses: only the address tells them apart."""
    text = ("State      Recv-Q Send-Q Local Address:Port Peer Address:Port\n"
            "ESTAB      0      0      [2001:db8::2]:50000 [2001:db8::1]:50100\n"
            "ESTAB      28     0      [2001:db8::2]:50000 [2001:db8:0:0:16::1]:50100\n")
    snap = ss.Snapshot(label="x", netns="n", time=0.0, text=text, rows=ss.parse(text))
    assert [r.recv_q for r in snap.find(local_port=50000, peer_port=50100)] == [0, 28]
    assert [r.recv_q for r in snap.find(local_port=50000, peer_port=50100, peer="2001:db8::16:0:0:1")] == [28]
    assert [r.recv_q for r in snap.find(peer_port=50100, peer="2001:db8::1")] == [0]
