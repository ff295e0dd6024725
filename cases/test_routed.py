"""Experiments with a router between client and server (client - router - server, two prefixes).

Article 000 on the MSS: "for a non-local IP this MSS may be only 536 bytes, and this value will
become smaller if the MSS of the intermediate transmission network is smaller". HS-MSS-ROUTED
reaches a server through the router and compares it with an on-link peer (the router itself);
PMTU-SHRINK gives the router's server-side link a smaller MTU and watches the data segments shrink.
The topology is the `lab_topology` fixture (README "A router between the hosts").
"""

import pytest

from harness.peer import SCAPY_GROUP
from harness.judge import Verdict, judge, verdict_if
from harness.record import CaseRecord
from harness.topology import Routed

PORT = 50000            # the routed server
ONLINK_PORT = 50001     # the on-link peer: a server in the router's namespace
WRITE = 6000            # several full-size segments
SMALL_MTU = 1280        # the smaller network in the middle (the IPv6 minimum, so both families use it)
RFC_DEFAULT_MSS = {"ipv4": 536, "ipv6": 1220}   # RFC 1122 4.2.2.6; IPv6: minimum MTU 1280 - 60


def _data_sizes(rec: CaseRecord, port: int, src: str) -> list[int]:
    return [s.len for s in rec.segments(port, src=src, payload=True)]


def _synack_mss(rec: CaseRecord, port: int, src: str):
    synack = next(iter(rec.segments(port, src=src, flags="S.")), None)
    return synack.option("mss") if synack else None


def _row(rec: CaseRecord, role: str, label: str, peer_port: int):
    return next(iter(rec.snapshot(role, label).find(state="ESTAB", peer_port=peer_port)), None)


# -- HS-MSS-ROUTED --------------------------------------------------------------------------------

@judge("HS-MSS-ROUTED", claims=[18],
       text="for a peer that is not on the local network the MSS may be only 536 bytes (the default MSS), "
            "less than for an on-link peer")
def routed_mss(rec: CaseRecord) -> Verdict:
    routed = {"syn": next((s.option("mss") for s in rec.segments(PORT, src="client", flags="S")), None),
              "synack": _synack_mss(rec, PORT, "server"), "data": max(_data_sizes(rec, PORT, "server"), default=0)}
    onlink = {"syn": next((s.option("mss") for s in rec.segments(ONLINK_PORT, src="client", flags="S")), None),
              "synack": _synack_mss(rec, ONLINK_PORT, "router"),
              "data": max(_data_sizes(rec, ONLINK_PORT, "router"), default=0)}
    r_row, o_row = _row(rec, "client", "after the writes", PORT), _row(rec, "client", "after the writes", ONLINK_PORT)
    r_mss = r_row.info.get("mss") if r_row else None
    o_mss = o_row.info.get("mss") if o_row else None
    r_adv = r_row.info.get("advmss") if r_row else None
    o_adv = o_row.info.get("advmss") if o_row else None
    default = RFC_DEFAULT_MSS[rec.family]
    announced = [m for m in (routed["syn"], routed["synack"]) if m]
    holds = bool(announced) and (min(announced) <= default or (r_mss is not None and r_mss <= default))
    return verdict_if(holds, f"through the router the SYN announced MSS {routed['syn']} and the SYN+ACK "
                             f"{routed['synack']}, the server's data segments were up to {routed['data']} bytes, "
                             f"ss mss:{r_mss} advmss:{r_adv}; to the on-link peer: SYN {onlink['syn']}, SYN+ACK {onlink['synack']}, "
                             f"data up to {onlink['data']} bytes, ss mss:{o_mss} advmss:{o_adv} (the {rec.family} default MSS is "
                             f"{default})")


@pytest.mark.xdist_group(SCAPY_GROUP)
@pytest.mark.claim(routed_mss)
@pytest.mark.parametrize("lab_topology", [Routed(capture="client")], ids=["routed"])
def test_mss_to_a_routed_peer_and_an_on_link_peer(lab, family):
    """The client connects to the server through the router and to the router itself (on-link); both
    peers write 6000 bytes: MSS options, data segment sizes and ss mss, side by side."""
    srv = lab.server.socket()
    srv.bind(PORT)
    srv.listen(5)
    near = lab.program("router", "router").socket()
    near.bind(ONLINK_PORT)
    near.listen(5)
    accepting = {"server": srv.accept(wait=False), "router": near.accept(wait=False)}
    far_cli, near_cli = lab.client.socket(), lab.client.socket()
    far_cli.connect(lab.hosts.server, PORT)
    near_cli.connect(lab.hosts.router, ONLINK_PORT)
    for who, cli in (("server", far_cli), ("router", near_cli)):
        conn = accepting[who].wait()
        conn.sendall(size=WRITE)
        lab.read(cli, WRITE, at_least=WRITE)
    lab.ss("after the writes")


# -- PMTU-SHRINK ----------------------------------------------------------------------------------

@judge("PMTU-SHRINK", claims=[19],
       text="the MSS becomes smaller when a network in the middle has a smaller MTU: the sender's data "
            "segments shrink")
def pmtu_shrink(rec: CaseRecord) -> Verdict:
    data = rec.segments(PORT, src="client", payload=True)
    errors = [e for e in rec.fact("icmp errors") if e.get("mtu")]
    full = max((s.len for s in data), default=0)
    # The shrink shows where data sent in a full-size segment is sent again in a smaller one; from
    # there on no segment may be full-size again.
    shrunk_at = next((i for i, s in enumerate(data)
                      if s.len < full and any(e.seq == s.seq and e.len == full for e in data[:i])), None)
    after = [s.len for s in data[shrunk_at:]] if shrunk_at is not None else []
    rec.call("recv", role="server")                 # Unobservable if the server never read
    received = sum(len(c.ret) for c in rec.calls_of("recv", role="server") if c.ok and isinstance(c.ret, str))
    row = _row(rec, "client", "after the transfer", PORT)
    info = row.info if row else {}
    holds = bool(after) and max(after) < full and received == WRITE
    told = (f"{errors[0]['src']} sent '{errors[0]['kind']}' naming MTU {errors[0]['mtu']}" if errors
            else "no ICMP error naming an MTU reached the client")
    shrink = (f"the data of {data[shrunk_at].seq}:{data[shrunk_at].seq + full} was sent again in "
              f"{data[shrunk_at].len} bytes and from then on {len(after)} data segments were up to {max(after)} bytes"
              if after else "no data was sent again in smaller segments")
    return verdict_if(holds, f"the client's data segments were up to {full} bytes; {told}; {shrink}; the server "
                             f"read {received} of {WRITE} bytes; ss on the client: pmtu:{info.get('pmtu')} "
                             f"mss:{info.get('mss')} advmss:{info.get('advmss')}")


@pytest.mark.claim(pmtu_shrink)
@pytest.mark.parametrize("lab_topology", [Routed(server_link_mtu=SMALL_MTU, capture="client")],
                         ids=[f"middle-mtu{SMALL_MTU}"])
def test_data_segments_shrink_behind_a_smaller_link(lab, family):
    """Both ends have MTU 1500, the router's link towards the server 1280: the client's full-size data
    segment draws ICMP 'fragmentation needed' / ICMPv6 'packet too big' and is sent again smaller;
    the rest of the data follows in smaller segments. The first write is one full-size segment, so
    what the client resends does not depend on how the ICMP error and the server's ACKs interleave."""
    _, conn, cli = lab.establish(PORT)
    first = cli.getsockopt("TCP_MAXSEG")           # the client's segment size before anything is known
    cli.send(size=first)
    lab.read(conn, first, at_least=first)          # never arrives where the path MTU is not learnt
    cli.sendall(size=WRITE - first)
    lab.read(conn, WRITE - first, at_least=WRITE - first)
    lab.wait_segment(lambda s: s.src == "server" and s.ack == WRITE + 1, timeout=5, required=False,
                     what=f"the server's ACK of byte {WRITE}")
    lab.observe("icmp errors", [{**e, "t": round(e["t"] - lab.start, 6)} for e in lab.capture.icmp()])
    lab.ss("after the transfer")
