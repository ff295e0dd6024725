"""Pcap normalisation without privileges: real captured frames -> Segments with relative numbers."""

import json
from pathlib import Path

from scapy.utils import RawPcapReader

from harness.capture import Frame, to_segments

CASES = Path(__file__).parent / "data" / "results" / "base" / "cases"


def load(case):
    """Frames of a real case's pcap and its host address -> role map (from its case.json)."""
    rec = json.loads((CASES / case / "case.json").read_text())
    roles = {}
    for role, h in rec["hosts"].items():
        roles[h["ipv4"]] = role
        roles[h["ipv6"]] = role
    frames = [Frame(data, meta.sec + meta.usec / 1e9, meta.sec + meta.usec / 1e9)
              for data, meta in RawPcapReader(str(CASES / case / "packets.pcap"))]
    return frames, roles, rec


def test_close_case_relative_numbers_both_directions():
    frames, roles, rec = load("tests_unit_data_results_gen_cases.py__test_close_ipv4")
    segs = to_segments(frames, roles)
    assert [s.text(options=False) for s in segs] == [s["text"].split(" <")[0] for s in rec["segments"]]
    syn, synack, ack = segs[:3]
    assert (syn.src, syn.flags, syn.seq, syn.ack) == ("client", "S", 0, None)
    assert (synack.src, synack.flags, synack.seq, synack.ack) == ("server", "S.", 0, 1)
    assert (ack.flags, ack.seq, ack.ack) == (".", 1, 1)
    # raw numbers are kept for cross-reference with the pcap
    assert synack.raw_ack == (syn.raw_seq + 1) % 2**32


def test_options_are_parsed_in_order():
    frames, roles, _ = load("cases_test_setup.py__test_listen_without_accept_completes_handshake_ipv4")
    syn = to_segments(frames, roles)[0]
    assert [k for k, _ in syn.options] == ["mss", "sackOK", "TS", "nop", "wscale"]
    assert syn.option("mss") == 1460 and syn.option("wscale") is not None
    assert syn.option("TS")[1] == 0          # the SYN's TS echo reply is zero


def test_non_tcp_frames_stay_out_of_the_segment_list():
    frames, roles, rec = load("cases_test_setup.py__test_connect_to_bound_port_without_listen_is_refused_ipv4")
    segs = to_segments(frames, roles)
    assert len(segs) == len(rec["segments"]) == 2
    assert [s.flags for s in segs] == ["S", "R."]
    assert (segs[1].seq, segs[1].ack) == (0, 1)


def test_a_retransmitted_syn_keeps_relative_seq_zero():
    frames, roles, _ = load("tests_unit_data_results_gen_cases.py__test_drop_ipv4")
    segs = to_segments(frames, roles)
    syns = [s for s in segs if s.flags == "S"]
    assert len(syns) >= 2 and all(s.seq == 0 for s in syns)


def test_record_keeps_absolute_numbers():
    """The case record's segments carry the absolute seq/ack as on the wire (raw_seq, raw_ack) next to
    the relative ones, and a case.json written and read again keeps them."""
    from harness.record import CaseRecord, SegmentRecord
    frames, roles, _ = load("tests_unit_data_results_gen_cases.py__test_close_ipv4")
    syn, synack = to_segments(frames, roles)[:2]
    rec = CaseRecord(name="t", segments_=[SegmentRecord(t=0.0, src=s.src, dst=s.dst, flags=s.flags, seq=s.seq,
                                                        len=s.length, ack=s.ack, raw_seq=s.raw_seq, raw_ack=s.raw_ack)
                                          for s in (syn, synack)])
    back = CaseRecord.from_json(json.loads(json.dumps(rec.to_json())))
    assert [(s.seq, s.raw_seq) for s in back.segments_] == [(0, syn.raw_seq), (0, synack.raw_seq)]
    assert back.segments_[1].raw_ack == (syn.raw_seq + 1) % 2**32
    old = rec.to_json()
    for s in old["segments"]:
        del s["raw_seq"], s["raw_ack"]
    assert CaseRecord.from_json(old).segments_[0].raw_seq is None     # records written before the field


def test_icmp_errors_are_recognised_with_their_mtu():
    """'fragmentation needed' (ICMP 3/4) and ICMPv6 'packet too big' carry the next hop's MTU; an echo
    request and a neighbour solicitation are not errors."""
    from scapy.layers.inet import ICMP, IP, TCP
    from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NS, ICMPv6PacketTooBig, IPv6
    from scapy.layers.l2 import Ether
    from harness.capture import _parse_icmp_error
    inner = IP(src="198.18.0.1", dst="198.18.0.6") / TCP()
    frag = bytes(Ether() / IP(src="198.18.0.2", dst="198.18.0.1") / ICMP(type=3, code=4, nexthopmtu=1280) / inner)
    assert _parse_icmp_error(frag) == ("198.18.0.2", "198.18.0.1", "fragmentation needed", 1280)
    ptb = bytes(Ether() / IPv6(src="2001:db8::2", dst="2001:db8::1") / ICMPv6PacketTooBig(mtu=1280)
                / IPv6(src="2001:db8::1", dst="2001:db8:1::2") / TCP())
    assert _parse_icmp_error(ptb) == ("2001:db8::2", "2001:db8::1", "packet too big", 1280)
    assert _parse_icmp_error(bytes(Ether() / IP() / ICMP(type=8))) is None
    assert _parse_icmp_error(bytes(Ether() / IPv6() / ICMPv6EchoRequest())) is None
    assert _parse_icmp_error(bytes(Ether() / IPv6() / ICMPv6ND_NS(tgt="2001:db8::1"))) is None
    assert _parse_icmp_error(bytes(Ether() / IP() / TCP())) is None


def test_option_bytes_become_text():
    """A Fast Open cookie (bytes in scapy) is kept as hex text, so case.json stays JSON; an empty
    cookie (a cookie request) is the empty string."""
    from harness.capture import _options
    opts = _options(b"\x02\x04\x05\xb4" + b"\x22\x0a\x01\x02\xab\xcd\x00\x00\x00\x07" + b"\x22\x02")
    assert opts == (("mss", 1460), ("TFO", "0102abcd00000007"), ("TFO", ""))
    json.dumps(opts)


def scapy_fields(data):
    """The TCP fields as scapy decodes them: the reference the harness's struct parser must agree with."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    pkt = Ether(data)
    ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
    if ip is None or not pkt.haslayer(TCP):
        return None
    tcp = pkt[TCP]
    header = ip.ihl * 4 if isinstance(ip, IP) else 0
    length = (ip.len if isinstance(ip, IP) else ip.plen) - header - tcp.dataofs * 4
    names = {"MSS": "mss", "WScale": "wscale", "SAckOK": "sackOK", "Timestamp": "TS", "NOP": "nop", "EOL": "eol",
             "SAck": "sack"}
    opts = []
    for name, value in tcp.options:
        key = names.get(name, str(name))
        value = None if key in ("sackOK", "nop", "eol") else value
        value = tuple(zip(value[::2], value[1::2])) if key == "sack" else value
        value = value.hex() if isinstance(value, (bytes, bytearray)) else value
        opts.append((key, tuple(value) if key == "TS" else value))
    return (str(ip.src), str(ip.dst), tcp.sport, tcp.dport, tcp.seq, tcp.ack, int(tcp.flags), tcp.window,
            tuple(opts), min(len(bytes(tcp.payload)), length))


def test_struct_parser_agrees_with_scapy_on_every_captured_frame():
    from harness.capture import _parse_tcp
    seen = 0
    for pcap in sorted(CASES.glob("*/packets.pcap")):
        for data, _meta in RawPcapReader(str(pcap)):
            assert _parse_tcp(data) == scapy_fields(data), f"{pcap.parent.name}: {data.hex()}"
            seen += _parse_tcp(data) is not None
    assert seen >= 20


def test_struct_parser_agrees_with_scapy_on_built_frames():
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
    from scapy.layers.l2 import Ether
    from harness.capture import _parse_tcp
    opts = [("MSS", 1400), ("SAckOK", b""), ("Timestamp", (5, 6)), ("NOP", None), ("WScale", 7)]
    sack = [("NOP", None), ("NOP", None), ("SAck", (100, 200, 300, 400))]
    frames = [Ether() / IP(src="198.18.0.1", dst="198.18.0.2") / TCP(flags="S", seq=7, options=opts),
              Ether() / IP(src="198.18.0.1", dst="198.18.0.2") / TCP(flags="A", ack=9, options=sack) / b"x",
              Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(flags="FPA", seq=2**32 - 1) / (b"y" * 30),
              Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrDestOpt() / TCP(flags="R"),
              Ether() / IP(src="198.18.0.1", dst="198.18.0.2") / b"not tcp"]
    for pkt in frames:
        data = bytes(pkt).ljust(60, b"\0")          # short frames carry Ethernet padding
        assert _parse_tcp(data) == scapy_fields(data), pkt.summary()
    assert _parse_tcp(bytes(frames[1]))[-1] == 1 and _parse_tcp(bytes(frames[3]))[6] == 0x04


def test_written_pcap_reads_back_with_scapy(tmp_path):
    from harness.capture import Capture
    frames, _, _ = load("tests_unit_data_results_gen_cases.py__test_close_ipv4")
    cap = Capture.__new__(Capture)
    cap.frames = frames
    cap.write_pcap(str(tmp_path / "out.pcap"))
    back = [(data, meta.sec, meta.usec) for data, meta in RawPcapReader(str(tmp_path / "out.pcap"))]
    assert [d for d, _, _ in back] == [f.data for f in frames]
    assert all(abs(sec + nsec / 1e9 - f.wall) < 1e-6 for (_, sec, nsec), f in zip(back, frames))


def test_a_syn_reusing_a_four_tuple_starts_a_new_connection_at_zero():
    """A second connection on the same 4-tuple (new ISN) is numbered from its own ISN, both directions."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    c, s = "198.18.0.1", "198.18.0.2"

    def frame(src, dst, sport, dport, flags, seq, ack=0):
        return Frame(bytes(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags,
                                                                 seq=seq, ack=ack)), 0.0, 0.0)
    first = [frame(c, s, 40000, 50000, "S", 1000), frame(s, c, 50000, 40000, "SA", 7000, 1001),
             frame(c, s, 40000, 50000, "A", 1001, 7001), frame(c, s, 40000, 50000, "R", 1001)]
    second = [frame(c, s, 40000, 50000, "S", 90000), frame(s, c, 50000, 40000, "SA", 3000, 90001),
              frame(c, s, 40000, 50000, "A", 90001, 3001)]
    segs = to_segments(first + second, {c: "client", s: "server"})
    assert [(x.flags, x.seq, x.ack) for x in segs[4:]] == [("S", 0, None), ("S.", 0, 1), (".", 1, 1)]


def test_clock_offset_takes_the_tightest_reading(monkeypatch):
    """A reading spoiled by a pause between the wall clock and the second monotonic read (40 us here:
    a 20 us error) does not become the offset; the tightest reading does."""
    import harness.capture as capture
    readings = [10.0, 1010.0, 10.0 + 40e-6,          # spoiled
                20.0, 1020.0, 20.0 + 1e-7]           # tight
    ticks = iter(readings * 2)
    monkeypatch.setattr(capture.time, "monotonic", lambda: next(ticks))
    monkeypatch.setattr(capture.time, "time", lambda: next(ticks))
    assert abs(capture.clock_offset(samples=1) - 1000.0) > 1e-5      # the spoiled one alone: 20 us off
    ticks = iter(readings)
    assert abs(capture.clock_offset(samples=2) - 1000.0) < 1e-6
