"""Packet capture on the link for the whole case: a pcap for Wireshark and a list of Segments.

An AF_PACKET socket on the second end of the veth sees both directions (a routed lab's capture link
is the one its `Routed(capture=...)` names). The kernel queues
frames in the socket's buffer, so nothing needs to read during the case; `drain()` sends a marker
frame from the other end and reads until it arrives, so every segment sent before it is in the list
(no fixed sleep), and PACKET_STATISTICS proves no frame was dropped.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time

from . import background, nsutil
from .errors import StepTimeout, SocklabError
from .errors import hide_own_frames as __tracebackhide__  # noqa: F401 (read by pytest)
from .segment import Segment, flags_text
from .timefactor import scaled

ETH_P_ALL = 0x0003
MARKER_ETHERTYPE = 0x88B5          # IEEE 802 local experimental: never a real protocol on our link
SOL_PACKET, PACKET_STATISTICS = 263, 6
SO_TIMESTAMPNS = 35
RCVBUF = 32 << 20


class Frame:
    """One captured frame: raw bytes, monotonic and wall-clock times, and its TCP fields once parsed."""

    __slots__ = ("data", "mono", "wall", "_tcp")

    def __init__(self, data, mono, wall):
        self.data, self.mono, self.wall = data, mono, wall
        self._tcp = False                 # not parsed yet; None after parsing means "not TCP"

    def tcp(self):
        """(src, dst, sport, dport, seq, ack, flags, window, options, payload length) or None; parsed once."""
        if self._tcp is False:
            self._tcp = _parse_tcp(self.data)
        return self._tcp


def clock_offset(samples: int = 25) -> float:
    """CLOCK_REALTIME - CLOCK_MONOTONIC, from the tightest of `samples` monotonic-wall-monotonic
    readings: a thread switch or an interrupt between two reads (tens of µs on busy cores, which
    once put every packet of a case 20 µs after the transitions it caused) spoils one reading, not
    the tightest of 25."""
    best = None
    for _ in range(samples):
        before = time.monotonic()
        wall = time.time()
        after = time.monotonic()
        if best is None or after - before < best[0]:
            best = (after - before, wall - (before + after) / 2)
    return best[1]


class Capture:
    """`with Capture(topology) as cap:` ... `cap.drain()`, `cap.segments()`, `cap.write_pcap(path)`."""

    def __init__(self, topology, *, link: str | None = None):
        self.topology = topology
        self.other, self.tap = topology.link(link)
        self.frames: list[Frame] = []
        self.drops: list = []          # (rule name, predicate, t_from, t_to) from faults
        self._markers = 0
        self._sock = self._send = None

    def __enter__(self):
        self._sock = nsutil.run_in(self._open_tap, netns=self.tap.netns)
        self._send = nsutil.run_in(self._open_sender, netns=self.other.netns)
        # Packet times are wall-clock stamps from the kernel, converted to CLOCK_MONOTONIC so they
        # line up with calls and transitions (µs apart: a judge may ask which came first).
        self._offset = clock_offset()
        return self

    def __exit__(self, *exc):
        for s in (self._sock, self._send):
            if s is not None:
                background.release(s.close)     # packet_release() waits for an RCU grace period
        return False

    def _open_tap(self):
        # Protocol 0 at creation and the real one at bind(): the kernel then registers its packet hook
        # once instead of registering, unregistering (an RCU wait) and registering again.
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        s.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)     # SO_RCVBUFFORCE: room for a whole case
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.bind((self.tap.ifname, ETH_P_ALL))
        s.setblocking(False)
        return s

    def _open_sender(self):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)   # send-only: no receive hook at all
        s.bind((self.other.ifname, 0))
        return s

    # -- reading ----------------------------------------------------------------------------
    def _read_available(self, until_marker: bytes | None = None, deadline: float | None = None) -> bool:
        """Read queued frames; with `until_marker`, block until that marker frame arrives."""
        while True:
            try:
                data, anc, _flags, _addr = self._sock.recvmsg(65535, 256)
            except BlockingIOError:
                if until_marker is None:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                select.select([self._sock], [], [], left)
                continue
            wall = None
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", value[:16])
                    wall = sec + nsec / 1e9
            if wall is None:
                wall = time.time()
            if len(data) >= 14 and struct.unpack("!H", data[12:14])[0] == MARKER_ETHERTYPE:
                if until_marker is not None and data[14:14 + len(until_marker)] == until_marker:
                    return True
                continue
            self.frames.append(Frame(data, wall - self._offset, wall))

    def drain(self, timeout: float = 2.0) -> None:
        """Make sure every frame sent so far is read: send a marker across the link and wait for it."""
        self._markers += 1
        token = f"socklab-drain-{os.getpid()}-{self._markers}".encode()
        frame = self.tap.mac_bytes() + self.other.mac_bytes() + struct.pack("!H", MARKER_ETHERTYPE) + token
        self._send.send(frame.ljust(60, b"\0"))
        timeout = scaled(timeout)
        if not self._read_available(token, time.monotonic() + timeout):
            raise StepTimeout(f"capture: drain marker not seen on {self.tap.ifname} within {timeout} s "
                              f"(last frame at {self.frames[-1].mono if self.frames else 'none'})")
        self._check_no_loss()

    def _check_no_loss(self):
        stats = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        _packets, drops = struct.unpack("II", stats)
        if drops:
            raise SocklabError(f"capture: the kernel dropped {drops} frames on {self.tap.ifname}; "
                               "the segment list would be incomplete")

    def wait_frame(self, timeout: float) -> bool:
        """Block until a new frame crosses the tap (True, the frame read) or `timeout` passes (False)."""
        seen = len(self.frames)
        if self._read_available() or len(self.frames) > seen:
            return True
        select.select([self._sock], [], [], max(0.0, timeout))
        self._read_available()
        return len(self.frames) > seen

    def wait_for(self, predicate, *, timeout: float, what: str):
        """Wait until a segment satisfying `predicate` is on the link; return it (StepTimeout names `what`)."""
        timeout = scaled(timeout)
        start = time.monotonic()
        deadline, polls = start + timeout, 0
        while True:
            self._read_available()
            polls += 1
            for seg in self.segments():
                if predicate(seg):
                    return seg
            left = deadline - time.monotonic()
            if left <= 0:
                last = self.segments()[-1].text() if self.segments() else "no segment at all"
                # How the wait went, so a miss under load can be told from a segment that never came.
                newest = f"{self.frames[-1].mono - start:+.3f} s" if self.frames else "none"
                raise StepTimeout(f"capture: no segment {what} within {timeout} s; last seen: {last} "
                                  f"({polls} reads of {self.tap.ifname}, {len(self.frames)} frames, the newest "
                                  f"stamped {newest} from the wait's start)")
            select.select([self._sock], [], [], min(left, 0.05))

    # -- results ----------------------------------------------------------------------------
    def segments(self) -> list[Segment]:
        """TCP segments seen so far, in order, with relative seq/ack and the dropping rule if any."""
        return to_segments(self.frames, self.topology.host_by_address(), self.drops)

    def icmp(self) -> list[dict]:
        """The ICMP/ICMPv6 errors on the link so far (not echo, not neighbour discovery): time, sender,
        destination (roles), kind ('fragmentation needed', 'packet too big', ...) and the MTU it names."""
        self._read_available()
        names = self.topology.host_by_address()
        out = []
        for f in self.frames:
            err = _parse_icmp_error(f.data)
            if err:
                src, dst, kind, mtu = err
                out.append({"t": f.mono, "src": names.get(src, src), "dst": names.get(dst, dst), "kind": kind,
                            "mtu": mtu})
        return out

    def write_pcap(self, path: str) -> None:
        """Write every captured frame (ARP, ND and all) as a nanosecond pcap file Wireshark opens."""
        # The pcap format (nanosecond variant, magic a1b23c4d) is two fixed headers: written directly.
        with open(path, "wb") as out:
            out.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
            for f in self.frames:
                sec = int(f.wall)
                nsec = min(int(round((f.wall - sec) * 1e9)), 999_999_999)
                out.write(struct.pack("<IIII", sec, nsec, len(f.data), len(f.data)))
                out.write(f.data)


_IPV6_EXT = {0, 43, 60}        # hop-by-hop, routing, destination options: skipped to reach TCP
_OPTION_NAMES = {2: "mss", 3: "wscale", 4: "sackOK", 5: "sack", 8: "TS", 28: "UTO", 34: "TFO"}


def _parse_tcp(data: bytes):
    """(src, dst, sport, dport, seq, ack, flags, window, options, payload length) of an Ethernet
    frame carrying TCP over IPv4 or IPv6, else None. Plain struct reads: a case parses every frame
    once, and importing a packet library for it would cost more than the case's own steps."""
    if len(data) < 14:
        return None
    ethertype = (data[12] << 8) | data[13]
    if ethertype == 0x0800 and len(data) >= 34:
        ihl = (data[14] & 0x0F) * 4
        if data[23] != 6 or ihl < 20 or struct.unpack_from("!H", data, 20)[0] & 0x1FFF:
            return None             # not TCP, or a later fragment
        total = struct.unpack_from("!H", data, 16)[0]
        src, dst = socket.inet_ntop(socket.AF_INET, data[26:30]), socket.inet_ntop(socket.AF_INET, data[30:34])
        off, end = 14 + ihl, 14 + total
    elif ethertype == 0x86DD and len(data) >= 54:
        nxt, off = data[20], 54
        end = off + struct.unpack_from("!H", data, 18)[0]
        while nxt in _IPV6_EXT and off + 8 <= len(data):
            nxt, off = data[off], off + 8 * (data[off + 1] + 1)
        if nxt != 6:
            return None
        src, dst = socket.inet_ntop(socket.AF_INET6, data[22:38]), socket.inet_ntop(socket.AF_INET6, data[38:54])
    else:
        return None
    end = min(end, len(data))           # Ethernet padding beyond the IP length is not data
    if off + 20 > end:
        return None
    sport, dport, seq, ack, doff, bits, window = struct.unpack_from("!HHIIBBH", data, off)
    hlen = (doff >> 4) * 4
    return (src, dst, sport, dport, seq, ack, bits, window, _options(data[off + 20:off + hlen]),
            max(0, end - off - hlen))


def _options(raw: bytes) -> tuple:
    """TCP options in wire order: (("mss", 1460), ("sackOK", None), ("TS", (val, ecr)), ("nop", None), ...)."""
    out, i = [], 0
    while i < len(raw):
        kind = raw[i]
        if kind == 0:
            out.append(("eol", None))
            break
        if kind == 1:
            out.append(("nop", None))
            i += 1
            continue
        if i + 1 >= len(raw) or raw[i + 1] < 2:
            break                       # a malformed length ends the list, as in the kernel
        body = raw[i + 2:i + raw[i + 1]]
        i += raw[i + 1]
        name = _OPTION_NAMES.get(kind, str(kind))
        if kind in (2, 28) and len(body) == 2:
            value = struct.unpack("!H", body)[0]
        elif kind == 3 and len(body) == 1:
            value = body[0]
        elif kind == 4:
            value = None
        elif kind == 8 and len(body) == 8:
            value = struct.unpack("!II", body)
        elif kind == 5 and len(body) % 8 == 0:
            edges = struct.unpack(f"!{len(body) // 4}I", body)
            value = tuple(zip(edges[::2], edges[1::2]))
        else:
            value = bytes(body).hex()   # a Fast Open cookie (empty: a cookie request), unknown options
        out.append((name, value))
    return tuple(out)


ICMP_ERRORS = {(4, 3, 4): "fragmentation needed", (4, 3, None): "destination unreachable",
               (4, 11, None): "time exceeded", (6, 2, None): "packet too big", (6, 1, None): "destination unreachable",
               (6, 3, None): "time exceeded"}


def _parse_icmp_error(data: bytes):
    """(src, dst, kind, mtu) of an ICMP or ICMPv6 error frame, else None."""
    if len(data) < 14:
        return None
    ethertype = struct.unpack("!H", data[12:14])[0]
    if ethertype == 0x0800 and len(data) >= 34 and data[23] == 1:
        ihl = (data[14] & 0x0F) * 4
        icmp = data[14 + ihl:]
        if len(icmp) < 8:
            return None
        kind = ICMP_ERRORS.get((4, icmp[0], icmp[1])) or ICMP_ERRORS.get((4, icmp[0], None))
        mtu = struct.unpack("!H", icmp[6:8])[0] if (icmp[0], icmp[1]) == (3, 4) else None
        src, dst = socket.inet_ntop(socket.AF_INET, data[26:30]), socket.inet_ntop(socket.AF_INET, data[30:34])
    elif ethertype == 0x86DD and len(data) >= 62 and data[20] == 58:
        icmp = data[54:]
        kind = ICMP_ERRORS.get((6, icmp[0], None))
        mtu = struct.unpack("!I", icmp[4:8])[0] if icmp[0] == 2 else None
        src, dst = socket.inet_ntop(socket.AF_INET6, data[22:38]), socket.inet_ntop(socket.AF_INET6, data[38:54])
    else:
        return None
    return (src, dst, kind, mtu) if kind else None


def to_segments(frames, roles_by_addr: dict, drops=()) -> list[Segment]:
    """Parse frames into Segments; sequence numbers relative to each flow direction's ISN."""
    isn: dict = {}
    out = []
    for f in frames:
        fields = f.tcp()
        if fields is None:
            continue
        src, dst, sport, dport, seq, ack_no, bits, win, options, payload = fields
        fwd, rev = (src, sport, dst, dport), (dst, dport, src, sport)
        if bits & 0x02 and isn.get(fwd) != seq:
            isn[fwd] = seq              # a SYN with a new ISN starts a new connection on this 4-tuple
        base = isn.setdefault(fwd, seq)
        ack = None
        if bits & 0x10:
            ack = (ack_no - isn[rev]) % (1 << 32) if rev in isn else ack_no
        out.append(Segment(time=f.mono, src=roles_by_addr.get(src, src), dst=roles_by_addr.get(dst, dst),
                           flags=flags_text(bits), seq=(seq - base) % (1 << 32), length=payload, ack=ack, win=win,
                           options=options, sport=sport, dport=dport, raw_seq=seq, raw_ack=ack_no))
    return _mark_drops(out, drops)


def _mark_drops(segments, drops):
    """Mark the segments a fault rule dropped, by the rule's own predicate and active window."""
    if not drops:
        return segments
    out = []
    counts = {}
    for seg in segments:
        for rule in drops:
            if rule.active_at(seg.time) and rule.matches(seg) and counts.get(rule.name, 0) < rule.limit_count():
                counts[rule.name] = counts.get(rule.name, 0) + 1
                seg = seg.with_drop(rule.name)
                break
        out.append(seg)
    return out
