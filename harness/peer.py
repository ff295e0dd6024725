"""A scripted TCP peer: crafted segments from one host of the lab, for what no kernel sends on demand.

`Peer(host, other, capture, faults, family=...)` takes over `host` (its namespace, interface, MAC and
addresses) and speaks TCP with `other`, the far end of the path, using scapy-built frames sent
through an AF_PACKET socket opened inside that namespace: a SYN without an MSS option, an RST in
SYN_RECEIVED, a FIN+ACK that acknowledges a FIN at once. It reads the other side's segments from
`capture` and keeps its host's kernel quiet with `faults`. A case builds one with `lab.peer(role)`.

While the peer runs, the host's own kernel must not answer for it: it has no socket for the peer's
connection and would reset it (RST to the other side's SYN+ACK, data or FIN). So `start()` adds
`faults.block_output(role, "R")` and `(role, "R.")`: nftables output rules in that namespace that
drop every RST its kernel sends. Frames the peer sends do not pass the IP output hook and are never
blocked. The rules stay until the end of the case, so nothing from that kernel pollutes the capture.

Sequence numbers are relative, as `lab.segments()` shows them: the peer's own to its ISN, the
kernel's to the ISN learned from its SYN or SYN+ACK. The peer's segments are in the capture like any
other ("client > server ..."), so `lab.expect_segments` checks a peer's case in the same notation:

    with lab.peer("client") as peer:
        peer.syn(50000)                                   # a SYN without options
        peer.expect("server > client  S.  0:0(0) ack 1")
        peer.send(".")                                    # seq 1, ack 1
"""

from __future__ import annotations

import contextlib
import random
import socket
import time

from . import background, nsutil
from .errors import ExpectationFailed, ExpectationSyntaxError, StepError, StepTimeout
from .notation import GAP, parse_segments

# tcpdump's flag letters -> scapy's (ECE is "E" in both, CWR is tcpdump "W", scapy "C").
SCAPY_FLAGS = {"F": "F", "S": "S", "R": "R", "P": "P", ".": "A", "U": "U", "E": "E", "W": "C"}
PEER_PORT = 20000     # below the ephemeral range: no connect() of the same host collides with it
# Importing scapy costs ~0.45 s of CPU in each process that sends a crafted frame (it reads the
# routes and the services and manuf tables). The cases that use a Peer carry
# @pytest.mark.xdist_group(SCAPY_GROUP), so under xdist they share one worker and one import
# (the plugin runs xdist with --dist loadgroup unless told otherwise).
SCAPY_GROUP = "scapy"


class Peer(contextlib.AbstractContextManager):
    """One scripted TCP endpoint on host `role`; see the module docstring."""

    def __init__(self, host, other, capture, faults, *, family: str = "ipv4", hop=None, note=None, clock=None,
                 sport: int = PEER_PORT, isn: int | None = None, window: int = 65535):
        """`host` is the peer's Host, `other` the far end of the TCP path, `hop` the next hop on
        `host`'s link (default `other`; the router in a routed lab). `note(text, side=)` puts what
        the peer sends on the case's timeline and `clock(t=None)` spells times in messages."""
        self.host, self.other, self.hop = host, other, hop or other
        self.role = host.role
        self.capture, self.faults, self.family = capture, faults, family
        self.note = note or (lambda text, side=None: None)
        self.clock = clock or (lambda t=None: f"{time.monotonic() if t is None else t:.3f} s")
        self.sport, self.dport = sport, None
        self.isn = random.getrandbits(32) if isn is None else isn
        self.kernel_isn: int | None = None
        self.window = window
        self.snd_nxt = 0          # relative: the next sequence number the peer sends
        self.rcv_nxt = 0          # relative: the next sequence number expected from the kernel side
        self.last = None          # the last kernel segment expect() accepted
        self.rules: list = []     # the block_output rules start() added
        self._consumed: set = set()
        self._sock = None

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> "Peer":
        """Keep the host's kernel from resetting the peer's connection and open the sending socket."""
        self.rules = [self.faults.block_output(self.role, flags) for flags in ("R", "R.")]
        self._sock = nsutil.run_in(self._open, netns=self.host.netns)
        return self

    def _open(self):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)    # send-only: no receive hook
        s.bind((self.host.ifname, 0))
        return s

    def close(self) -> None:
        """Close the sending socket (in the background: AF_PACKET close waits for an RCU grace period)."""
        if self._sock is not None:
            background.release(self._sock.close)
            self._sock = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False

    # -- sending ------------------------------------------------------------------------------
    def syn(self, port: int, *, options=(), window: int | None = None):
        """Send the opening SYN to `port` on the other host; options in scapy's form, e.g. [("MSS", 1460)]."""
        self.dport = port
        return self.send("S", seq=0, options=options, window=window)

    def send(self, flags: str, *, seq: int | None = None, ack: int | None = None, payload: bytes = b"",
             options=(), window: int | None = None):
        """Send one segment; seq and ack are relative and default to snd_nxt and rcv_nxt."""
        for ch in flags:
            if ch not in SCAPY_FLAGS:
                raise ExpectationSyntaxError(f"expected tcpdump flag letters {''.join(SCAPY_FLAGS)}, found {ch!r}",
                                             flags, 1, flags.index(ch) + 1)
        if self._sock is None:
            raise StepError("peer: send() on a peer that is not started: use `with lab.peer() as peer:`")
        if self.dport is None:
            raise StepError("peer: send() before the connection has ports: call syn(port) or "
                            "expect() the other side's SYN first")
        seq = self.snd_nxt if seq is None else seq
        if "." in flags:
            ack = self.rcv_nxt if ack is None else ack
            if self.kernel_isn is None:
                raise StepError(f"peer: send({flags!r}, ack={ack}) before the kernel's ISN is known: "
                                "expect() its SYN or SYN+ACK first")
        elif ack is not None:
            raise StepError(f"peer: send({flags!r}, ack={ack}): an ack number needs the ACK flag '.' in flags")
        frame = self._frame(flags, seq, ack, bytes(payload), options, self.window if window is None else window)
        text = f"{flags} {seq}:{seq + len(payload)}({len(payload)})" + ("" if ack is None else f" ack {ack}")
        self.note(f"peer sends {self.role} > {self.other.role}  {text}", side=self.role)
        self._sock.send(frame)
        self.snd_nxt = max(self.snd_nxt, seq + len(payload) + ("S" in flags) + ("F" in flags))
        return text

    def _frame(self, flags, seq, ack, payload, options, window) -> bytes:
        IP, TCP, IPv6, Ether = _scapy_layers()

        src, dst = self.host.addr(self.family), self.other.addr(self.family)
        ip = IPv6(src=src, dst=dst, hlim=64) if self.family == "ipv6" else IP(src=src, dst=dst, ttl=64, flags="DF")
        tcp = TCP(sport=self.sport, dport=self.dport, flags="".join(SCAPY_FLAGS[c] for c in flags),
                  seq=(self.isn + seq) % (1 << 32), ack=0 if ack is None else (self.kernel_isn + ack) % (1 << 32),
                  window=window, options=list(options))
        return bytes(Ether(src=self.host.mac, dst=self.hop.mac) / ip / tcp / payload)

    # -- receiving ----------------------------------------------------------------------------
    def expect(self, line: str, *, timeout: float = 2.0):
        """Wait for the next kernel-side segment of the connection; it must match one notation line."""
        pattern = _one_line(line)
        try:
            seg = self.capture.wait_for(self._unconsumed, timeout=timeout, what=f"matching {line.strip()!r}")
        except StepTimeout:
            seen = [s for s in self.capture.segments() if self.sport in (s.sport, s.dport)]
            last = seen[-1].text() if seen else "none"
            at = f" at {self.clock(seen[-1].time)}" if seen else ""
            raise StepTimeout(f"peer: no segment from {self.other.role} for {pattern.text()!r} within {timeout} s "
                              f"(given up at {self.clock()}); "
                              f"last from {self.other.role}: {self.last.text() if self.last else 'none yet'}; "
                              f"last on the connection: {last}{at}") from None
        self._consumed.add(_key(seg))
        why = pattern.mismatch(seg)
        if why:
            raise ExpectationFailed(f"peer: the next segment from {self.other.role} did not match\n"
                                    f"  expected: {pattern.text()}\n  observed: {seg.text()}\n  {why}")
        if "S" in seg.flags:
            self.kernel_isn = seg.raw_seq
            self.dport = self.dport or seg.sport
        self.rcv_nxt = max(self.rcv_nxt, self.ack_of(seg))
        self.last = seg
        return seg

    def _unconsumed(self, seg) -> bool:
        if seg.src != self.other.role or seg.dport != self.sport or _key(seg) in self._consumed:
            return False
        return self.dport is None or seg.sport == self.dport

    @staticmethod
    def ack_of(segment) -> int:
        """The relative ack number that acknowledges all of `segment` (SYN and FIN count one each)."""
        return segment.seq + segment.length + ("S" in segment.flags) + ("F" in segment.flags)


def _scapy_layers():
    """scapy's IP, TCP, IPv6 and Ether, imported on first use without reading the routing tables
    (`conf.route_autoload`, `route6_autoload`): a frame here gets every address and MAC from the
    peer, and the tables scapy would read are the worker's, not the case's namespaces'. The import
    took 290 ms instead of 420 ms on this machine (2026-11-30), a few seconds in a TCG guest. scapy
    code of a case's own that needs routes calls `conf.route.resync()` inside its namespace."""
    from scapy.config import conf
    if conf.route is None:              # scapy.route not imported yet: its tables would load now
        conf.route_autoload = conf.route6_autoload = False
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    return IP, TCP, IPv6, Ether


def _key(seg) -> tuple:
    """What tells one captured segment from every other (Segment objects are rebuilt on each read)."""
    return seg.time, seg.raw_seq, seg.raw_ack, seg.flags, seg.length


def _one_line(line: str):
    items = parse_segments(line).items
    if len(items) != 1 or items[0] is GAP:
        raise ExpectationSyntaxError(f"peer.expect() takes exactly one segment line (no '...'), found {len(items)} "
                                     "items", line, 1, 1)
    return items[0]
