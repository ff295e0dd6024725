"""The sockets of a namespace read from the kernel's sock_diag (inet_diag) through pyroute2.

What a wait polls: one netlink dump per address family, no `ss` process. The requests and answers
are pyroute2's inet_diag message classes, sent over a plain netlink socket (pyroute2's own
DiagSocket runs each request through an asyncio loop: ~10 ms a request, more than `ss` costs). The rows have the shape
`ss.parse()` gives (state spelled as ss spells it, queues, addresses, ports, timer), so a predicate
written against an `ss` snapshot works on either; the snapshot's text is the same rows laid out
like `ss -tanoi`, generated from the kernel's answer (verbatim `ss` text is what `lab.ss(label)`
keeps). A snapshot taken as_ss also keeps the kernel's answer (`Snapshot.dump`), which `ss` can
print later (ss.replay). The netlink socket is opened in a thread that entered the namespace
(nsutil.run_in) and answers for that namespace from any thread.
"""

from __future__ import annotations

import functools
import importlib
import os
import socket
import struct
import sys
import threading
import time

from . import nsutil, pyroute2_import  # noqa: F401  (pyroute2's modules without its __init__)
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


DIAG_MODULE = "pyroute2.netlink.diag"


def import_ahead() -> None:
    """Start importing pyroute2's inet_diag messages in a thread, once per process: 40 ms (its socket
    layer imports asyncio and ssl) that the first case of a process then spends while it waits for
    the kernel (a delayed ACK, a program's start), not in its first wait on sockets. A thread that
    needs the module before the import ends waits for it (the import system's module lock)."""
    global _ahead
    if _ahead is None and DIAG_MODULE not in sys.modules:
        _ahead = threading.Thread(target=importlib.import_module, args=(DIAG_MODULE,), daemon=True,
                                  name="socklab-import-diag")
        _ahead.start()


_ahead: threading.Thread | None = None


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
        """The decoded answer of one family's dump; its messages' bytes appended to `raw` when given."""
        from pyroute2.netlink.diag import inet_diag_msg
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
                    msg = inet_diag_msg(buf[off:off + length])
                    msg.decode()
                    out.append(msg)
                off += (length + 3) & ~3


# The end of a recorded answer: ss stops reading $TCPDIAG_FILE at NLMSG_DONE.
_DONE = struct.pack("=IHHIIi", 20, NLMSG_DONE, 0, 0, 0, 0)


@functools.lru_cache(maxsize=None)
def _request(family: int, ext: int) -> bytes:
    """The dump request of one address family, encoded by pyroute2 once (sequence number 0)."""
    from pyroute2.netlink.diag import SOCK_DIAG_BY_FAMILY, inet_diag_req
    req = inet_diag_req()
    req["header"]["type"] = SOCK_DIAG_BY_FAMILY
    req["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    req["header"]["sequence_number"] = 0
    req["sdiag_family"], req["sdiag_protocol"] = family, socket.IPPROTO_TCP
    req["idiag_states"], req["idiag_ext"] = ALL_STATES, ext
    req.encode()
    return bytes(req.data)


def _open():
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    s.bind((0, 0))
    return s


def take(netns: str, *, label: str) -> Snapshot:
    """One sock_diag snapshot of `netns` (opens and closes its own netlink socket)."""
    with SockDiag(netns) as diag:
        return diag.take(label=label)


def row(msg) -> SsRow:
    """One inet_diag message as an ss row."""
    state = SS_STATE.get(msg["idiag_state"], "UNKNOWN")
    local, peer = msg["idiag_src"], msg["idiag_dst"]
    if msg["idiag_family"] == socket.AF_INET6 and msg.get_attr("INET_DIAG_SKV6ONLY") == 0:
        local = "*" if local == "::" else local            # ss prints a dual-stack wildcard as "*"
        peer = "*" if peer == "::" else peer
    timer = None
    if msg["idiag_timer"]:
        timer = Timer(TIMER_NAME.get(msg["idiag_timer"], "unknown"), msg["idiag_expires"] / 1000,
                      msg["idiag_retrans"])
    r = SsRow(state=state, recv_q=msg["idiag_rqueue"], send_q=msg["idiag_wqueue"],
              local=local, local_port=msg["idiag_sport"] or None, peer=peer, peer_port=msg["idiag_dport"] or None,
              timer=timer, info=_info(msg.get_attr("INET_DIAG_INFO"), msg["idiag_state"]))
    r.raw = render_row(r)
    return r


def _info(ti, state: int) -> dict:
    """The parts of tcp_info `ss -i` prints, under ss's names and in its units (ms, bytes)."""
    if ti is None or state == 10:       # a listener's tcp_info is empty; ss prints only the cc there
        return {}
    opts = ti["tcpi_options"]
    info: dict = {}
    if opts & 1:
        info["ts"] = True
    if opts & 2:
        info["sack"] = True
    if opts & 4:
        info["wscale"] = (ti["tcpi_snd_wscale"], ti["tcpi_rcv_wscale"])
    info.update({"rto": ti["tcpi_rto"] / 1000, "rtt": (ti["tcpi_rtt"] / 1000, ti["tcpi_rttvar"] / 1000),
                 "ato": ti["tcpi_ato"] / 1000, "mss": ti["tcpi_snd_mss"], "pmtu": ti["tcpi_pmtu"],
                 "rcvmss": ti["tcpi_rcv_mss"], "advmss": ti["tcpi_advmss"], "cwnd": ti["tcpi_snd_cwnd"]})
    for key, field in (("backoff", "tcpi_backoff"), ("bytes_acked", "tcpi_bytes_acked"),
                       ("bytes_received", "tcpi_bytes_received"), ("segs_out", "tcpi_segs_out"),
                       ("segs_in", "tcpi_segs_in"), ("unacked", "tcpi_unacked"), ("lost", "tcpi_lost"),
                       ("notsent", "tcpi_notsent_bytes"), ("snd_wnd", "tcpi_snd_wnd")):
        if ti.get(field):
            info[key] = ti[field]
    if ti["tcpi_retrans"] or ti["tcpi_total_retrans"]:
        info["retrans"] = (ti["tcpi_retrans"], ti["tcpi_total_retrans"])
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
