"""harness.capture on the real link: nothing lost, drain() complete, the pcap, non-TCP frames,
relative sequence numbers and packet times on the calls' clock."""

from __future__ import annotations

import select
import struct
import sys
import re
import time

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import ICMPv6MLReport2, ICMPv6ND_NA, ICMPv6ND_NS, IPv6
from scapy.layers.l2 import ARP
from scapy.utils import rdpcap

from harness.capture import MARKER_ETHERTYPE
from harness.errors import StepTimeout
from harness.segment import flags_text

PORT = 50000
PCAP_NSEC_MAGIC = 0xA1B23C4D


def connected(lab, family=None):
    srv = lab.server.socket(family)
    srv.bind(PORT)
    srv.listen(5)
    cli = lab.client.socket(family)
    cli.connect(lab.hosts.server, PORT)
    return srv, cli, srv.accept()


def test_no_segment_is_lost(lab, family):
    """300 small sends with TCP_NODELAY: the capture holds every data segment the kernel counted as sent
    (retransmissions included), their bytes add up to the kernel's count, and every byte 1..3000 is there."""
    _, cli, conn = connected(lab)
    cli.setsockopt("TCP_NODELAY", 1)
    for i in range(300):
        cli.send(f"{i:010d}")
    received = 0
    while received < 3000:
        received += len(conn.recv(65536).ret)
    # Once all is acknowledged nothing is retransmitted any more: the kernel's counters are final.
    lab.wait_segment(lambda s: s.src == "server" and s.ack == 3001, timeout=2, what="the ACK of all 3000 bytes")
    info = lab.ss("after 300 sends")["client"].find(peer_port=PORT)[0].info
    data = [s for s in lab.segments(PORT) if s.src == "client" and s.length]
    assert len(data) == info["data_segs_out"], f"captured {len(data)} data segments, the kernel sent {info}"
    assert sum(s.length for s in data) == info["bytes_sent"]
    covered = set()
    for s in data:
        covered.update(range(s.seq, s.end))
    assert covered == set(range(1, 3001))
    assert len(data) > 1


def test_drain_includes_the_last_segment(lab, family):
    """Right after a step returns, lab.segments() holds the segment it sent, in either direction."""
    _, cli, conn = connected(lab)
    for i in range(20):
        for sock, side in ((cli, "client"), (conn, "server")):
            sock.send("x")
            sent = [(s.seq, s.length) for s in lab.segments(PORT) if s.src == side and s.length]
            assert (1 + i, 1) in sent, f"{side}'s byte {1 + i} not in the capture right after send(): {sent[-3:]}"
    received = ""
    while len(received) < 20:    # unread data would turn the close into a reset
        received += cli.recv(100).ret
    close = cli.close()
    fin = [s for s in lab.segments(PORT) if s.src == "client" and s.has("F")]
    assert len(fin) == 1 and fin[0].time <= close.t1


def test_wait_segment_times_out_naming_what_it_awaited_and_the_last_segment(lab, family):
    """lab.wait_segment() on a segment that never comes: StepTimeout with the awaited thing and the last seen."""
    connected(lab)
    t = time.monotonic()
    with pytest.raises(StepTimeout) as exc:
        lab.wait_segment(lambda s: s.has("R"), timeout=0.2, what="with RST")
    assert 0.2 <= time.monotonic() - t < 1.0
    last = lab.segments()[-1]
    msg = str(exc.value)
    assert msg.startswith(f"capture: no segment with RST within 0.2 s; last seen: {last.text()} ("), msg
    assert re.search(r"\(\d+ reads of sl\w+, \d+ frames, the newest stamped [-+]\d+\.\d{3} s from the wait's start\) "
                     rf"\(last segment at {re.escape(lab.clock(last.time))}, given up at \+", msg), msg


def test_pcap_opens_with_scapy_and_holds_the_same_tcp_frames(lab, family, tmp_path):
    """The pcap (nanosecond, Ethernet) reads back with rdpcap: same TCP frames, order and times, no marker."""
    _, cli, conn = connected(lab)
    cli.send("hello")
    conn.recv(10)
    conn.send("world!")
    cli.recv(10)
    cli.close()
    segs = lab.segments()
    path = tmp_path / "packets.pcap"
    lab.capture.write_pcap(str(path))
    with open(path, "rb") as fh:
        magic, _, _, _, _, _, linktype = struct.unpack("<IHHiIII", fh.read(24))
    assert (magic, linktype) == (PCAP_NSEC_MAGIC, 1)
    packets = rdpcap(str(path))
    assert len(packets) == len(lab.capture.frames)
    assert all(bytes(p)[12:14] != struct.pack("!H", MARKER_ETHERTYPE) for p in packets)
    tcp = [p for p in packets if p.haslayer(TCP)]
    assert len(tcp) == len(segs) >= 8
    offsets = []
    for p, s in zip(tcp, segs):
        ip = p[IP] if p.haslayer(IP) else p[IPv6]
        t = p[TCP]
        assert (ip.src, ip.dst) == (lab.hosts.hosts[s.src].addr(family), lab.hosts.hosts[s.dst].addr(family))
        assert (t.sport, t.dport, t.seq, flags_text(int(t.flags))) == (s.sport, s.dport, s.raw_seq, s.flags)
        if s.ack is not None:
            assert t.ack == s.raw_ack
        assert len(bytes(t.payload)) - _padding(ip, t) == s.length
        offsets.append(float(p.time) - s.time)
    # pcap times are wall clock, segment times monotonic: one constant offset between them.
    assert max(offsets) - min(offsets) < 2e-6


def _padding(ip, tcp):
    """Ethernet padding scapy leaves in the payload of short IPv4 frames."""
    if isinstance(ip, IP):
        return len(bytes(tcp.payload)) - (ip.len - ip.ihl * 4 - tcp.dataofs * 4)
    return 0


MLD_JOIN = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
group = socket.inet_pton(socket.AF_INET6, sys.argv[1])
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group + struct.pack("@I", socket.if_nametoindex(sys.argv[2])))
"""


def _frames_with(lab, layer, timeout=3.0):
    """Wait until the capture holds a frame with the scapy `layer`; return those frames."""
    from scapy.layers.l2 import Ether
    deadline = time.monotonic() + timeout
    while True:
        lab.capture.drain()
        found = [f for f in lab.capture.frames if Ether(f.data).haslayer(layer)]
        if found or time.monotonic() > deadline:
            return found
        select.select([], [], [], 0.02)


def test_arp_nd_and_mld_are_in_the_pcap_but_not_in_the_segments(lab, tmp_path):
    """Without static neighbours the client resolves by ARP and ND; a group join sends MLD: all kept in
    the pcap, none of them a segment. (Uses both families itself, so it takes no `family`.)"""
    client, server = lab.hosts.client, lab.hosts.server
    for addr in (server.ipv4, server.ipv6):
        client.run(["ip", "neigh", "del", addr, "dev", client.ifname])
    for family in ("ipv4", "ipv6"):
        connected(lab, family)
    client.run([sys.executable, "-c", MLD_JOIN, "ff02::1:3", client.ifname])
    assert _frames_with(lab, ICMPv6MLReport2), "no MLDv2 report captured"
    segs = lab.segments()
    path = tmp_path / "packets.pcap"
    lab.capture.write_pcap(str(path))
    packets = rdpcap(str(path))
    arp = [p[ARP] for p in packets if p.haslayer(ARP)]
    assert {(a.op, a.psrc, a.pdst) for a in arp} >= {(1, client.ipv4, server.ipv4), (2, server.ipv4, client.ipv4)}
    assert any(p[ICMPv6ND_NS].tgt == server.ipv6 for p in packets if p.haslayer(ICMPv6ND_NS))
    assert any(p[ICMPv6ND_NA].tgt == server.ipv6 for p in packets if p.haslayer(ICMPv6ND_NA))
    assert any(p.haslayer(ICMPv6MLReport2) for p in packets)
    tcp = [p for p in packets if p.haslayer(TCP)]
    assert len(segs) == len(tcp) == 6
    assert len(packets) > len(tcp)


def test_relative_sequence_numbers_in_both_directions(lab, family):
    """seq/ack are relative to each side's ISN (SYN = 0), in both directions, and restart per connection."""
    _, cli, conn = connected(lab)
    cli.send("12345")
    assert conn.recv(10).ret == "12345"
    conn.send("abcdefg")
    assert cli.recv(10).ret == "abcdefg"
    lab.wait_segment(lambda s: s.src == "client" and s.ack == 8, timeout=2, what="the client's ACK of 7 bytes")
    cli2 = lab.client.socket()
    cli2.connect(lab.hosts.server, PORT)
    segs = lab.segments(PORT)
    isn = {}
    for s in segs:
        if s.has("S"):
            isn[(s.src, s.sport)] = s.raw_seq
            assert s.seq == 0
        assert s.seq == (s.raw_seq - isn[(s.src, s.sport)]) % (1 << 32)
        if s.ack is not None:
            assert s.ack == (s.raw_ack - isn[(s.dst, s.dport)]) % (1 << 32)
    first = {}      # first transmissions only: a (tail loss probe) retransmission may carry a newer ack
    for s in segs:
        if s.length:
            first.setdefault((s.src, s.seq, s.length), s)
    assert {(s.src, s.seq, s.length, s.ack) for s in first.values()} == {("client", 1, 5, 1), ("server", 1, 7, 6)}
    assert len({s.sport for s in segs if s.src == "client"}) == 2     # two connections, each from 0


def test_segment_times_fall_between_the_calls_that_caused_them(lab, family):
    """Packet times are on the calls' clock: the SYN, SYN+ACK and ACK inside connect(), data inside send()."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    cli = lab.client.socket()
    connect = cli.connect(lab.hosts.server, PORT)
    conn = srv.accept()
    cli.setsockopt("TCP_NODELAY", 1)
    send = cli.send("data")
    reply = conn.send("back")
    assert cli.recv(10).ret == "back"
    close = cli.close()
    segs = lab.segments(PORT)
    syn, synack, ack = segs[:3]
    assert (syn.flags, synack.flags, ack.flags) == ("S", "S.", ".")
    for seg in (syn, synack, ack):
        assert connect.t0 <= seg.time <= connect.t1, (seg.text(), connect.t0, seg.time, connect.t1)
    sent = [s for s in segs if s.src == "client" and s.length == 4]
    back = [s for s in segs if s.src == "server" and s.length == 4]
    fin = [s for s in segs if s.src == "client" and s.has("F")]
    assert sent and back and fin      # the first of each (a retransmission would come later)
    assert send.t0 <= sent[0].time <= send.t1
    assert reply.t0 <= back[0].time <= reply.t1
    assert close.t0 <= fin[0].time <= close.t1


def test_windows_are_written_where_zero_and_where_they_change(tmp_path, family):
    """A receiver that never reads closes its window: segments.txt and timeline.txt say `win 0`, and the
    windows before it scaled with the raw field and the shift of the sender's SYN (both SYNs carry wscale)."""
    from harness import background
    from harness.lab import Lab
    with Lab(family=family, artifacts_dir=str(tmp_path)) as lab:
        srv = lab.server.socket()
        srv.setsockopt("SO_RCVBUF", 1)
        srv.bind(PORT)
        srv.listen(5)
        cli = lab.client.socket()
        cli.connect(lab.hosts.server, PORT)
        srv.accept()
        cli.send(size=20000)
        lab.wait_segment(lambda s: s.src == "server" and s.win == 0, what="a zero window from the server")
        segs = lab.segments(PORT)
    background.flush()
    syn = next(s for s in segs if s.flags == "S")
    shift = dict(syn.options)["wscale"]
    assert shift > 0                                                # the client's buffers are not shrunk
    lines = (tmp_path / "segments.txt").read_text().splitlines()
    assert lines[0].endswith(f"win {syn.win}"), lines[0]             # a SYN's window is never scaled
    first_ack = next(i for i, s in enumerate(segs) if s.src == "client" and "S" not in s.flags)
    raw = segs[first_ack].win
    assert lines[first_ack].endswith(f"win {raw << shift} (raw {raw} << {shift})"), lines[first_ack]
    zero = [i for i, s in enumerate(segs) if s.src == "server" and s.win == 0]
    assert zero and all(lines[i].endswith("win 0") for i in zero), "\n".join(lines)
    timeline = (tmp_path / "timeline.txt").read_text()
    assert timeline.count(" win 0") == len(zero), timeline
    # a window that stays the same is not repeated: unchanged client windows carry no annotation
    same = [i for i, s in enumerate(segs) if i and s.src == "client" and s.flags == "." and s.win == segs[i - 1].win
            and segs[i - 1].src == "client" and segs[i - 1].flags == "."]
    assert all("win" not in lines[i] for i in same)
