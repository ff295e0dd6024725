"""The sockets of a namespace read from the kernel's sock_diag (inet_diag).

What a wait polls: one netlink dump per address family, no `ss` process. The request and the answer
are the kernel's fixed structs (include/uapi/linux/inet_diag.h: inet_diag_req_v2, inet_diag_msg;
linux/tcp.h: tcp_info), packed and unpacked with `struct`: pyroute2's inet_diag classes decode a
socket's message field by field (1.06 ms of CPU a two-family dump of three sockets against 0.2 ms
here, and waits poll ~10 times a case), import asyncio and ssl with their module (40 ms a process),
and read tcp_info's two wscale nibbles as one (the unit tests check these structs against
pyroute2's classes on recorded answers). pyroute2's own DiagSocket runs each request through an
asyncio loop: ~10 ms a request, more than `ss` costs. The rows have the shape
`ss.parse()` gives (state spelled as ss spells it, queues, addresses, ports, timer), so a predicate
written against an `ss` snapshot works on either; the snapshot's text is the same rows laid out
like `ss -tanoi`, generated from the kernel's answer (verbatim `ss` text is what `lab.ss(label)`
keeps). A snapshot taken as_ss also keeps the kernel's answer (`Snapshot.dump`), which `ss` can
print later (ss.replay). The netlink socket is opened in a thread that entered the namespace
(nsutil.run_in) and answers for that namespace from any thread.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from . import nsutil
from .ss import Snapshot, SsRow, Timer

# inet_diag's idiag_state (the kernel's TCP_* numbers) -> ss's spelling (ss.c sstate_name).
SS_STATE = {1: "ESTAB", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2", 6: "TIME-WAIT",
            7: "UNCONN", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING", 12: "SYN-RECV"}
# idiag_timer -> ss's timer names (ss.c tmr_name); above 4 ss prints "unknown".
TIMER_NAME = {1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}
ALL_STATES = (1 << 13) - 1          # every state, request sockets (NEW_SYN_RECV) included
# The extensions `ss -tanoi` asks for (ss.c, show_tcpinfo): tcp_info (INET_DIAG_INFO = 2), Vegas
# info (3) and the congestion control's name (4); a recorded answer then renders as ss prints it.
SS_EXT = (1 << (2 - 1)) | (1 << (3 - 1)) | (1 << (4 - 1))
INFO_EXT = 1 << (2 - 1)             # what a poll needs: tcp_info only
NETLINK_SOCK_DIAG = 4
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3


SOCK_DIAG_BY_FAMILY = 20
# struct inet_diag_msg: family, state, timer, retrans; inet_diag_sockid (sport and dport big-endian,
# src[4] and dst[4] __be32, if, cookie[2]); expires, rqueue, wqueue, uid, inode.
_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")
_ATTR = struct.Struct("=HH")                            # struct nlattr: nla_len, nla_type
INET_DIAG_INFO, INET_DIAG_SKV6ONLY = 2, 11
# struct tcp_info up to tcpi_snd_wnd (Linux 5.4 on): 8 bytes of u8 (tcpi_state .. the wscale nibbles,
# tcpi_delivery_rate_app_limited), then u32 and u64 fields in order; a shorter one reads as zeros.
_TCP_INFO_FIELDS = (
    "state ca_state retransmits probes backoff options wscale app_limited "
    "rto ato snd_mss rcv_mss unacked sacked lost retrans fackets last_data_sent last_ack_sent "
    "last_data_recv last_ack_recv pmtu rcv_ssthresh rtt rttvar snd_ssthresh snd_cwnd advmss reordering "
    "rcv_rtt rcv_space total_retrans pacing_rate max_pacing_rate bytes_acked bytes_received segs_out "
    "segs_in notsent_bytes min_rtt data_segs_in data_segs_out delivery_rate busy_time rwnd_limited "
    "sndbuf_limited delivered delivered_ce bytes_sent bytes_retrans dsack_dups reord_seen rcv_ooopack "
    "snd_wnd").split()
_TCP_INFO = struct.Struct("=8B24I4Q6I4Q2I2Q4I")


class SockDiag:
    """`with SockDiag(netns) as diag: snap = diag.take(label)`: a sock_diag netlink socket opened inside
    `netns` (a netlink socket answers for the namespace it was created in), kept for repeated dumps."""

    def __init__(self, netns: str):
        self.netns = netns
        self._sock = None
        self._seq = 0

    def __enter__(self):
        self._sock = nsutil.run_in(_open, netns=self.netns)
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def take(self, *, label: str, as_ss: bool = False) -> Snapshot:
        """The TCP sockets of the namespace now, as a Snapshot (text generated; argv names sock_diag).
        as_ss=True asks for everything `ss -tanoi` asks for and keeps the kernel's answer in
        `Snapshot.dump` as `ss --diag=FILE` writes one, for ss.replay() to print as ss's own."""
        before = time.monotonic()
        raw: list[bytes] | None = [] if as_ss else None
        ext = SS_EXT if as_ss else INFO_EXT
        rows = [row(msg) for family in (socket.AF_INET, socket.AF_INET6) for msg in self._dump(family, ext, raw)]
        after = time.monotonic()       # ss's order: IPv4 sockets, then IPv6, each in the kernel's order
        return Snapshot(label=label, netns=self.netns, time=(before + after) / 2, text=render(rows), rows=rows,
                        before=before, after=after, argv=("sock_diag", self.netns),
                        dump=None if raw is None else b"".join(raw) + _DONE)

    def _dump(self, family: int, ext: int, raw: list | None) -> list:
        """The answer of one family's dump (each socket's inet_diag_msg with its attributes, as bytes);
        its netlink messages' bytes appended to `raw` when given."""
        self._seq += 1
        data = bytearray(_request(family, ext))
        struct.pack_into("=I", data, 8, self._seq)        # nlmsghdr's sequence number
        self._sock.send(data)
        out = []
        while True:
            buf = self._sock.recv(1 << 20)
            off = 0
            while off + 16 <= len(buf):
                length, kind, _flags, seq = struct.unpack_from("=IHHI", buf, off)
                if seq == self._seq:
                    if kind == NLMSG_DONE:
                        return out
                    if kind == NLMSG_ERROR:
                        err = -struct.unpack_from("=i", buf, off + 16)[0]
                        raise OSError(err, f"sock_diag dump in {self.netns}: {os.strerror(err)}")
                    if raw is not None:
                        raw.append(buf[off:off + ((length + 3) & ~3)])
                    out.append(bytes(buf[off + 16:off + length]))
                off += (length + 3) & ~3


# The end of a recorded answer: ss stops reading $TCPDIAG_FILE at NLMSG_DONE.
_DONE = struct.pack("=IHHIIi", 20, NLMSG_DONE, 0, 0, 0, 0)


def _request(family: int, ext: int) -> bytes:
    """The dump request of one address family (sequence number 0): struct nlmsghdr, then struct
    inet_diag_req_v2 (family, protocol, extensions, pad, states, and a zero inet_diag_sockid: every
    socket)."""
    return struct.pack("=IHHIIBBBBI48x", 72, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 0, 0,
                       family, socket.IPPROTO_TCP, ext, 0, ALL_STATES)


def _open():
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    s.bind((0, 0))
    return s


def take(netns: str, *, label: str) -> Snapshot:
    """One sock_diag snapshot of `netns` (opens and closes its own netlink socket)."""
    with SockDiag(netns) as diag:
        return diag.take(label=label)


def decode(msg: bytes) -> dict:
    """One socket's inet_diag_msg (the netlink payload) as a dict: the struct's fields under their
    kernel names without the idiag_ prefix (addresses as text, ports as numbers), and the
    attributes a row needs: `info` (tcp_info as a dict, tcpi_ dropped) and `v6only`, None when the
    kernel did not send them."""
    (family, state, timer, retrans, sport, dport, src, dst, _if, _cookie, expires, rqueue, wqueue,
     _uid, _inode) = _MSG.unpack_from(msg)
    n = 4 if family == socket.AF_INET else 16
    d = {"family": family, "state": state, "timer": timer, "retrans": retrans,
         "sport": int.from_bytes(sport, "big"), "dport": int.from_bytes(dport, "big"),
         "src": socket.inet_ntop(family, src[:n]), "dst": socket.inet_ntop(family, dst[:n]),
         "expires": expires, "rqueue": rqueue, "wqueue": wqueue, "info": None, "v6only": None}
    off = _MSG.size
    while off + 4 <= len(msg):
        length, kind = _ATTR.unpack_from(msg, off)
        if length < 4:
            break
        value = msg[off + 4:off + length]
        kind &= 0x3FFF                                  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
        if kind == INET_DIAG_INFO:
            fields = _TCP_INFO.unpack(value[:_TCP_INFO.size].ljust(_TCP_INFO.size, b"\0"))
            d["info"] = dict(zip(_TCP_INFO_FIELDS, fields))
        elif kind == INET_DIAG_SKV6ONLY and value:
            d["v6only"] = value[0]
        off += (length + 3) & ~3
    return d


def row(msg: bytes) -> SsRow:
    """One inet_diag message as an ss row."""
    m = decode(msg)
    local, peer = m["src"], m["dst"]
    if m["family"] == socket.AF_INET6 and m["v6only"] == 0:
        local = "*" if local == "::" else local            # ss prints a dual-stack wildcard as "*"
        peer = "*" if peer == "::" else peer
    timer = None
    if m["timer"]:
        timer = Timer(TIMER_NAME.get(m["timer"], "unknown"), m["expires"] / 1000, m["retrans"])
    r = SsRow(state=SS_STATE.get(m["state"], "UNKNOWN"), recv_q=m["rqueue"], send_q=m["wqueue"],
              local=local, local_port=m["sport"] or None, peer=peer, peer_port=m["dport"] or None,
              timer=timer, info=_info(m["info"], m["state"]))
    r.raw = render_row(r)
    return r


def _info(ti: dict | None, state: int) -> dict:
    """The parts of tcp_info `ss -i` prints, under ss's names and in its units (ms, bytes)."""
    if ti is None or state == 10:       # a listener's tcp_info is empty; ss prints only the cc there
        return {}
    opts = ti["options"]
    info: dict = {}
    if opts & 1:
        info["ts"] = True
    if opts & 2:
        info["sack"] = True
    if opts & 4:        # __u8 tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4: the first bit-field is the low nibble
        info["wscale"] = (ti["wscale"] & 0xF, ti["wscale"] >> 4)
    info.update({"rto": ti["rto"] / 1000, "rtt": (ti["rtt"] / 1000, ti["rttvar"] / 1000),
                 "ato": ti["ato"] / 1000, "mss": ti["snd_mss"], "pmtu": ti["pmtu"],
                 "rcvmss": ti["rcv_mss"], "advmss": ti["advmss"], "cwnd": ti["snd_cwnd"]})
    if 0 < ti["snd_ssthresh"] < 0xFFFF:
        info["ssthresh"] = ti["snd_ssthresh"]
    # ss's counters, each printed only when not zero (iproute2 misc/ss.c, tcp_stats_print); what ss
    # prints besides is moving times (lastsnd, lastrcv, lastack, busy) and rates, left out here
    for key, field in (("backoff", "backoff"), ("bytes_sent", "bytes_sent"), ("bytes_retrans", "bytes_retrans"),
                       ("bytes_acked", "bytes_acked"), ("bytes_received", "bytes_received"),
                       ("segs_out", "segs_out"), ("segs_in", "segs_in"), ("data_segs_out", "data_segs_out"),
                       ("data_segs_in", "data_segs_in"), ("delivered", "delivered"),
                       ("delivered_ce", "delivered_ce"), ("unacked", "unacked"), ("lost", "lost"),
                       ("sacked", "sacked"), ("dsack_dups", "dsack_dups"), ("fackets", "fackets"),
                       ("reord_seen", "reord_seen"), ("rcv_space", "rcv_space"),
                       ("rcv_ssthresh", "rcv_ssthresh"), ("notsent", "notsent_bytes"), ("snd_wnd", "snd_wnd")):
        if ti[field]:
            info[key] = ti[field]
    if ti["app_limited"] & 1:           # __u8 tcpi_delivery_rate_app_limited:1 (low bit)
        info["app_limited"] = True
    if ti["retrans"] or ti["total_retrans"]:
        info["retrans"] = (ti["retrans"], ti["total_retrans"])
    if ti["reordering"] != 3:
        info["reordering"] = ti["reordering"]
    if ti["rcv_rtt"]:
        info["rcv_rtt"] = ti["rcv_rtt"] / 1000
    if ti["min_rtt"] and ti["min_rtt"] != 0xFFFFFFFF:
        info["minrtt"] = ti["min_rtt"] / 1000
    return info


def _endpoint(addr: str, port: int | None) -> str:
    host = f"[{addr}]" if ":" in addr else addr
    return f"{host}:{port if port else '*'}"


def render_row(r: SsRow) -> str:
    """The row laid out like one `ss -tanoi` entry (state, queues, endpoints, timer; info line)."""
    line = f"{r.state:<10} {r.recv_q:<6} {r.send_q:<6} {_endpoint(r.local, r.local_port):>24} " \
           f"{_endpoint(r.peer, r.peer_port):<24}"
    if r.timer is not None:
        line += f" timer:({r.timer.name},{r.timer.remaining * 1000:.0f}ms,{r.timer.retrans})"
    words = []
    for key, value in r.info.items():
        if value is True:
            words.append(key)
        elif isinstance(value, tuple):
            words.append(f"{key}:{value[0]:g}{'/' if key in ('rtt', 'retrans') else ','}{value[1]:g}")
        else:
            words.append(f"{key}:{value:g}" if isinstance(value, float) else f"{key}:{value}")
    return line.rstrip() + "\n\t " + " ".join(words)


def render(rows) -> str:
    """A whole dump laid out like `ss -tanoi` (header line first)."""
    header = f"{'State':<10} {'Recv-Q':<6} {'Send-Q':<6} {'Local Address:Port':>24} {'Peer Address:Port':<24}"
    return "\n".join([header] + [r.raw for r in rows]) + "\n"
