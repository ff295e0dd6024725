"""Kernel TCP state transitions from the `sock:inet_sock_set_state` tracepoint, per socket.

harness/tracefs.py owns the tracefs instance and hands over text; this module parses its lines
and groups them into one history per socket. A line as `trace_pipe` prints it (the instance's
clock, default options), here from the v6 server side of a loopback connection:

    sl w-1 x-4220    [001] ..s2.   352.049619: inet_sock_set_state: family=AF_INET6
      protocol=IPPROTO_TCP sport=50006 dport=43092 saddr=127.0.0.6 daddr=127.0.0.6
      saddrv6=::1 daddrv6=::1 oldstate=TCP_LISTEN newstate=TCP_SYN_RECV

(one line in the trace). The task name may hold spaces and dashes (`<idle>-0`, `ksoftirqd/1-22`);
it is whichever task was running when the state changed, often not the socket's owner.

Lost events: a lost event would silently shorten a history, so `parse_line` raises TraceEventsLost
for the kernel's `CPU:1 [LOST 742 EVENTS]` line, and `parse` raises it after reading everything,
with the parsed transitions attached (a report can still show them).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from .errors import SocklabError
from .errors import hide_own_frames as __tracebackhide__  # noqa: F401 (read by pytest)

TIMEWAIT_NOTE = """\
An orphaned socket (the application has closed it) that enters FIN_WAIT2, and any socket that
enters TIME_WAIT, is replaced by a small timewait socket; the full socket is destroyed, and the
tracepoint shows `-> CLOSE` at that moment. The timewait socket's own life (FIN_WAIT2 -> TIME_WAIT
when the peer's FIN arrives, expiry after 60 s) is not traced by it: harness/timewait.py follows it
with kprobe events where the kernel has them (Transition.source "timewait"), else only `ss` shows it
(as FIN-WAIT-2 or TIME-WAIT with timer:(timewait,...)).

Measured on Linux 6.18 (tests/unit/data/trace_main.txt): newstate=TCP_TIME_WAIT never appears.
  active closer, close():            ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE
      FIN_WAIT2 -> CLOSE comes 4 us after FIN_WAIT1 -> FIN_WAIT2, when the ACK of our FIN arrives,
      even while the peer is still in CLOSE_WAIT (its later FIN reaches the timewait socket, untraced)
  active closer, shutdown(SHUT_WR):  ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE
      (not orphaned: FIN_WAIT2 is a real state, and -> CLOSE comes when the peer's FIN arrives)
  simultaneous close:                ESTABLISHED -> FIN_WAIT1 -> CLOSING -> CLOSE   (both sides)
  passive closer:                    ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE
"""

# Kernel state names without the TCP_ prefix, in the kernel's numbering (1..12).
STATES = ("ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE",
          "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV")

_LINE_RE = re.compile(
    r"^\s*(?P<comm>.*)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:(?P<flags>\S+)\s+)?"
    r"(?P<time>\d+\.\d+):\s+inet_sock_set_state:\s+(?P<fields>.*?)\s*$")
_LOST_RE = re.compile(r"^\s*CPU:(?P<cpu>\d+) \[LOST(?: (?P<count>\d+))? EVENTS\]")
_ENTRIES_RE = re.compile(r"^# entries-in-buffer/entries-written: (?P<kept>\d+)/(?P<written>\d+)")


class TraceEventsLost(SocklabError):
    """The trace buffer overflowed: some state transitions are missing, so histories are incomplete."""

    def __init__(self, count: int | None, cpus=(), lines=(), transitions=None):
        self.count, self.cpus, self.lines = count, tuple(cpus), tuple(lines)
        self.transitions = transitions if transitions is not None else []
        where = f" on CPU {', '.join(map(str, self.cpus))}" if self.cpus else ""
        super().__init__(
            f"the trace lost {count if count is not None else 'some'} events{where} "
            f"({'; '.join(self.lines)}): state histories are incomplete; read trace_pipe more often "
            f"or enlarge the instance's buffer_size_kb")


@dataclass(frozen=True)
class Transition:
    """One state change of one socket, as the tracepoint reported it."""

    time: float         # CLOCK_MONOTONIC seconds (printed time + the instance's offset), microsecond resolution
    family: int         # 4 or 6 (the socket's family: a v4-mapped peer of a v6 socket is 6)
    local: str          # "198.18.0.1", "::1", "::ffff:127.0.0.1"; as the kernel printed it
    local_port: int     # 0 in a client's first event (CLOSE -> SYN_SENT): bound right after
    peer: str           # "0.0.0.0" / "::" for a listener
    peer_port: int
    old: str            # kernel names without TCP_: "SYN_SENT", "FIN_WAIT1", ...
    new: str
    comm: str = ""      # the task running when it happened (may be another process, "<idle>")
    pid: int = 0
    raw: str = ""
    source: str = "trace"   # "trace" (the tracepoint) or "timewait" (harness/timewait.py's probes)

    def __str__(self) -> str:
        return f"{self.time:.6f} {_endpoint(self.local, self.local_port)} > " \
               f"{_endpoint(self.peer, self.peer_port)}  {self.old} -> {self.new}"


@dataclass
class SocketHistory:
    """The transitions of one socket, keyed by (local, local_port, peer, peer_port)."""

    key: tuple
    transitions: list[Transition] = field(default_factory=list)

    def states(self) -> list[str]:
        """The first old state, then each new one: ['CLOSE', 'SYN_SENT', 'ESTABLISHED', ...]."""
        if not self.transitions:
            return []
        return [self.transitions[0].old] + [t.new for t in self.transitions]

    def sources(self) -> list[str]:
        """Where each transition of states()[1:] came from: "trace" or "timewait"."""
        return [t.source for t in self.transitions]

    def __str__(self) -> str:
        local, lport, peer, pport = self.key
        return f"{_endpoint(local, lport)} > {_endpoint(peer, pport)}  {' -> '.join(self.states())}"


def parse_line(line: str, offset: float = 0.0) -> Transition | None:
    """The transition on one trace line; None for other lines; TraceEventsLost for a LOST line.
    `offset`: added to the printed time to make it CLOCK_MONOTONIC (tracefs.Instance.offset)."""
    lost = _LOST_RE.match(line)
    if lost:
        count = int(lost["count"]) if lost["count"] else None
        raise TraceEventsLost(count, [int(lost["cpu"])], [line.strip()])
    entries = _ENTRIES_RE.match(line)
    if entries and int(entries["written"]) > int(entries["kept"]):
        raise TraceEventsLost(int(entries["written"]) - int(entries["kept"]), (), [line.strip()])
    m = _LINE_RE.match(line)
    if not m:
        return None
    f = dict(item.split("=", 1) for item in m["fields"].split() if "=" in item)
    if f.get("protocol") != "IPPROTO_TCP":
        return None     # the tracepoint also serves SCTP and MPTCP sockets
    try:
        v6 = f["family"] == "AF_INET6"
        local, peer = (f["saddrv6"], f["daddrv6"]) if v6 else (f["saddr"], f["daddr"])
        return Transition(time=float(m["time"]) + offset, family=6 if v6 else 4,
                          local=local, local_port=int(f["sport"]), peer=peer, peer_port=int(f["dport"]),
                          old=f["oldstate"].removeprefix("TCP_"), new=f["newstate"].removeprefix("TCP_"),
                          comm=m["comm"].strip(), pid=int(m["pid"]), raw=line.rstrip("\n"))
    except (KeyError, ValueError):
        return None     # an event format we do not know: not a transition we can place


def lines_of(lines, addresses, netns=()) -> list[str]:
    """The trace lines that can concern a case whose hosts have `addresses` and namespace inodes
    `netns`: a cheap text test before parsing, since a tracefs instance sees every namespace's
    events (with 6 cases at once, 5 in 6 lines are other cases'). Keeps every line that is not an
    event (LOST markers, headers), state events naming one of the addresses, a listener's child
    event (older kernels give it the listener's, possibly wildcard, address: grouping decides),
    and timewait probe events of the namespaces. A superset: the parsers still filter exactly."""
    words = tuple(str(a) for a in addresses)
    inodes = tuple(f"netns={n}" for n in netns)
    out = []
    for line in lines:
        if "inet_sock_set_state:" in line:
            if "oldstate=TCP_LISTEN" in line or any(w in line for w in words):
                out.append(line)
        elif " tw_" in line and "netns=" in line:
            if not inodes or any(line.endswith(n) or (n + " ") in line for n in inodes):
                out.append(line)
        else:
            out.append(line)
    return out


def parse(text: str, offset: float = 0.0) -> list[Transition]:
    """Every transition in `text`, in order; raises TraceEventsLost at the end if any were lost."""
    out, lost_lines, cpus, total = [], [], [], 0
    for line in text.splitlines():
        try:
            t = parse_line(line, offset)
        except TraceEventsLost as exc:
            lost_lines += exc.lines
            cpus += [c for c in exc.cpus if c not in cpus]
            total = None if exc.count is None or total is None else total + exc.count
            continue
        if t is not None:
            out.append(t)
    if lost_lines:
        raise TraceEventsLost(total, cpus, lost_lines, out)
    return out


def group_by_socket(transitions, addresses: set[str], connects=()) -> list[SocketHistory]:
    """One history per socket, for sockets with an address in `addresses`; in order of first event.

    A wildcard listener (0.0.0.0 / ::) is kept only when `addresses` holds that wildcard. A
    client's first event carries local port 0: when `connects` ((t0, t1, local address, local port)
    of the connect() calls) has the call during which it happened, it joins that port's history;
    otherwise the earliest later history with the same local address and peer that starts in
    SYN_SENT. After a transition to CLOSE, the next event with the same 4-tuple starts a new
    history (the port was reused).

    On older kernels (seen on 6.1 and 6.12, not on 6.18 or 7.3) a new connection's
    `LISTEN -> SYN_RECV` event is emitted while the child socket still carries the listener's
    addresses (dport=0, daddr=0, saddr the listener's, 0.0.0.0 for a wildcard one): it joins the
    earliest later history on that local port whose first event leaves SYN_RECV, never the listener's.
    """
    wanted = {_ip(a) for a in addresses}
    mine = sorted((t for t in transitions if _ip(t.local) in wanted or _ip(t.peer) in wanted
                   or (_is_child_first(t) and _ip(t.local).is_unspecified)), key=lambda t: t.time)
    histories: list[SocketHistory] = []
    unbound: list[SocketHistory] = []       # client first events (port 0)
    children: list[Transition] = []         # new connections' first events on 6.1 and 6.12
    current: dict[tuple, SocketHistory] = {}
    for t in mine:
        if _is_child_first(t):
            children.append(t)
            continue
        if t.local_port == 0 and t.new == "SYN_SENT":
            hist = SocketHistory((t.local, 0, t.peer, t.peer_port), [t])
            histories.append(hist)
            unbound.append(hist)
            continue
        key = (t.local, t.local_port, t.peer, t.peer_port)
        hist = current.get(key)
        if hist is None or hist.transitions[-1].new == "CLOSE":
            hist = current[key] = SocketHistory(key, [])
            histories.append(hist)
        hist.transitions.append(t)
    for first in unbound:
        t0 = first.transitions[0]
        port = next((p for a, b, local, p in connects
                     if p and a <= t0.time <= b and _ip(local) == _ip(t0.local)), None)
        for hist in histories:
            head = hist.transitions[0]
            if (hist is not first and hist.key[1] != 0 and head.old == "SYN_SENT" and head.time >= t0.time
                    and (port is None or hist.key[1] == port)
                    and (hist.key[0], hist.key[2], hist.key[3]) == (t0.local, t0.peer, t0.peer_port)):
                hist.transitions.insert(0, t0)
                histories.remove(first)
                break
    claimed: set[int] = set()
    for t0 in children:
        hist = next((h for h in histories
                     if id(h) not in claimed and h.key[1] == t0.local_port and h.key[3] != 0
                     and h.transitions[0].old == "SYN_RECV" and h.transitions[0].time >= t0.time
                     and (_ip(t0.local).is_unspecified or _ip(t0.local) == _ip(h.key[0]))), None)
        if hist is not None:
            hist.transitions.insert(0, t0)
            claimed.add(id(hist))
        elif _ip(t0.local) in wanted:       # its connection's later events are not in the trace
            histories.append(SocketHistory((t0.local, t0.local_port, t0.peer, 0), [t0]))
    histories.sort(key=lambda h: h.transitions[0].time)
    return histories


def _is_child_first(t: Transition) -> bool:
    """A new connection's first event as 6.1 and 6.12 emit it: with the listener's addresses."""
    return t.old == "LISTEN" and t.new == "SYN_RECV" and t.peer_port == 0 and _ip(t.peer).is_unspecified


def _ip(text: str):
    """An address for comparison; a v4-mapped IPv6 address compares equal to its IPv4 form."""
    addr = ipaddress.ip_address(text)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
