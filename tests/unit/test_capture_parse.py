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
    opts = _options([("MSS", 1460), ("TFO", b"\x01\x02\xab\xcd\x00\x00\x00\x07"), ("TFO", b"")])
    assert opts == (("mss", 1460), ("TFO", "0102abcd00000007"), ("TFO", ""))
    json.dumps(opts)
