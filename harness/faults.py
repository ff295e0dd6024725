"""Faults on the path: drop or hold segments with nftables rules inside the case's namespaces.

This kernel has no netem, so a fault is an nftables rule. `drop("client > server", flags="S")` drops
the client's SYNs where they arrive (the server's prerouting hook), so each dropped segment still
crossed the link, is in the capture, and is marked with the rule's name. `hold` is `drop` followed
later by `release()`: the sender's retransmission then passes. `count=N` drops only the first N
matches (an nftables limit with a burst of N that never refills within a case). `block_output` keeps
a host's own kernel from sending matching segments at all (used by the injecting peer). `delay(role)`
holds a host's segments in its kernel's neighbour queue and sends them, in order, on `release()`:
a delay, not a drop, for orders no drop can force (simultaneous open and close).

Which captured segments were dropped comes from the kernel, not from timing: every rule counts into a
named nftables counter that outlives the rule, and the first N segments that match the rule's
predicate after it was added are the N it dropped. N is read (`nft -j`) once, when the rule is
removed; while the rule is in place the kernel drops every match up to its `count`, so marking the
capture's segments starts no process.
"""

from __future__ import annotations

import itertools
import re
import json
import time
from dataclasses import dataclass, field

from . import nsutil
from .nft import Nft
from .errors import BadArgument, CommandError, ExpectationSyntaxError, SetupError, UnknownRole
from .errors import hide_own_frames as __tracebackhide__  # noqa: F401 (read by pytest)

TABLE = "socklab"
NFT_FLAGS = {"F": "fin", "S": "syn", "R": "rst", "P": "psh", ".": "ack"}


@dataclass
class Rule:
    """One fault rule: which segments (direction, flags, payload), where, since when, how many."""

    name: str
    src: str
    dst: str
    flags: str | None
    payload: bool | None
    count: int | None
    hook: str
    host: object
    port: int | None = None             # only segments from or to this TCP port
    added: float = 0.0
    removed: float | None = None
    handles: list = field(default_factory=list)
    faults: object = None
    final_count: int | None = None      # packets the rule dropped, read once it is gone

    def matches(self, seg) -> bool:
        """The same test nftables applies, for marking captured segments as dropped."""
        if seg.src != self.src or seg.dst != self.dst:
            return False
        if self.flags is not None and _letters(seg.flags, self.flags) != set(self.flags):
            return False
        if self.payload is not None and (seg.length > 0) != self.payload:
            return False
        if self.port is not None and self.port not in (seg.sport, seg.dport):
            return False
        return True

    def active_at(self, t: float) -> bool:
        return self.added <= t

    def limit_count(self) -> float:
        """How many of the matching segments the kernel dropped: the counter's total once the rule is
        removed; while it is in place, every match up to its `count` (the nftables limit's burst)."""
        if self.final_count is not None:
            return self.final_count
        return self.count if self.count is not None else float("inf")

    def release(self) -> None:
        """Remove the rule: held segments pass on their next retransmission."""
        self.faults.remove(self)

    def describe(self) -> str:
        what = f"flags {self.flags}" if self.flags else "all segments"
        if self.payload is not None:
            what += " with payload" if self.payload else " without payload"
        n = f"first {self.count} " if self.count else ""
        if self.port is not None:
            what += f" of port {self.port}"
        where = "dropped on arrival" if self.hook == "prerouting" else "never sent"
        return f"rule {self.name}: {n}{self.src} > {self.dst} {what}, {where}"


def _letters(observed: str, spec: str) -> set:
    """Observed flag letters restricted to those the spec's mask looks at (PSH only if the spec names it)."""
    mask = set("FSR.") | ({"P"} if "P" in spec else set())
    return set(observed) & mask


class Faults:
    """The fault rules of one case's `topology`; rules that drop on arrival are handed to `capture`,
    which marks the segments they dropped. Every rule is removed at the end of the case."""

    _ids = itertools.count(1)

    def __init__(self, topology, capture):
        self.topology, self.capture = topology, capture
        self.rules: list[Rule] = []
        self.delays: list[Delay] = []
        self.events: list[tuple[float, str, str]] = []
        self._tables: set[str] = set()
        self._nfts: dict[str, Nft] = {}

    def drop(self, direction: str, flags: str | None = None, *, payload: bool | None = None,
             count: int | None = None, port: int | None = None, name: str | None = None) -> Rule:
        """Drop segments travelling `direction` ('client > server') on arrival; see the module doc.
        `port`: only those of one connection, the segments from or to that TCP port."""
        src, dst = _parse_direction(direction, self.topology.hosts)
        _check_port(port)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise BadArgument(f"faults.drop({direction!r}, {flags!r}): count={count!r}: give a positive number "
                              f"of segments to drop, or leave count out to drop every match")
        return self._add(Rule(name or f"drop{next(self._ids)}", src, dst, _check_flags(flags), payload, count,
                              "prerouting", self.topology.hosts[dst], port))

    hold = drop

    def delay(self, role: str) -> "Delay":
        """Hold every segment host `role` sends in its neighbour queue until the Delay's release()."""
        host = _host(self.topology.hosts, role, "faults.delay")
        d = Delay(self, host, self.topology.next_hop(host))
        d.start()
        self.delays.append(d)
        return d

    def block_output(self, role: str, flags: str | None = None, *, port: int | None = None,
                     name: str | None = None) -> Rule:
        """Keep host `role`'s kernel from sending matching segments (they never reach the link); `port`:
        only one connection's (e.g. to end a retransmitting attempt at a defined point)."""
        host = _host(self.topology.hosts, role, "faults.block_output")
        peer = self.topology.peer_of(host).role
        _check_port(port)
        return self._add(Rule(name or f"block{next(self._ids)}", role, peer, _check_flags(flags), None, None,
                              "output", host, port))

    def _add(self, rule: Rule) -> Rule:
        rule.faults = self
        self._ensure_table(rule.host, rule.hook)
        lines = [f"add counter inet {TABLE} {rule.name}"]
        if rule.count is not None:
            lines.append(f"add limit inet {TABLE} {rule.name} {{ rate 1/day burst {rule.count} packets }}")
        for match in _matches(rule):
            action = (f'limit name "{rule.name}" ' if rule.count is not None else "") + f'counter name "{rule.name}" drop'
            lines.append(f'add rule inet {TABLE} {rule.hook} {match} {action} comment "{rule.name}"')
        out = self.nft(rule.host).run("\n".join(lines) + "\n", echo=True)
        rule.handles = [int(l.rsplit("# handle", 1)[1]) for l in out.splitlines() if "# handle" in l and " rule " in l]
        rule.added = time.monotonic()
        self.rules.append(rule)
        self.events.append((rule.added, rule.dst if rule.hook == "prerouting" else rule.src, "added " + rule.describe()))
        if rule.hook == "prerouting":
            self.capture.drops.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        if rule.removed is not None:
            return
        cmds = [f"delete rule inet {TABLE} {rule.hook} handle {h}" for h in rule.handles]
        self.nft(rule.host).run("\n".join(cmds) + "\n")
        # stamped once the kernel has taken the deletion: until then the rule still drops (a FIN's
        # retransmission 1.7 ms after the removal began had its ACK dropped, beside a loaded run)
        rule.removed = time.monotonic()
        rule.final_count = self.counters(rule)   # the named counter outlives the rule: the exact total
        self.events.append((rule.removed, rule.dst if rule.hook == "prerouting" else rule.src, f"removed rule {rule.name}"))

    def clear(self) -> None:
        """Remove every rule still in place (the namespaces' removal would too; this records when)."""
        for d in self.delays:
            try:
                d.release()
            except CommandError:
                pass
        for rule in self.rules:
            if rule.removed is None:
                try:
                    self.remove(rule)
                except CommandError:
                    pass   # the namespace is going away with the rule in it
        for nft in self._nfts.values():
            nft.close()

    def counters(self, rule: Rule) -> int:
        """How many segments the kernel dropped under `rule`, from its named nftables counter."""
        command = f"list counter inet {TABLE} {rule.name}"
        out = self.nft(rule.host).run(command, json=True)
        for item in json.loads(out).get("nftables", []):
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise CommandError(["nft", "-j", *command.split()], 0, out, "no counter in nft's answer")

    def _ensure_table(self, host, hook):
        key = f"{host.role}/{hook}"
        if key in self._tables:
            return
        prio = -300 if hook == "prerouting" else 0
        self.nft(host).run(f"add table inet {TABLE}\nadd chain inet {TABLE} {hook} "
                           f"{{ type filter hook {hook} priority {prio}; policy accept; }}\n")
        self._tables.add(key)

    def nft(self, host) -> Nft:
        """nft in `host`'s namespace (one libnftables context per host; harness/nft.py)."""
        if host.netns not in self._nfts:
            self._nfts[host.netns] = Nft(host)
        return self._nfts[host.netns]


class Delay:
    """Segments of one host held in its kernel's neighbour queue, sent in order on release().

    The host's permanent neighbour entries for its peer are removed and address resolution (ARP,
    IPv6 neighbour solicitation and advertisement) is dropped on its link, so the kernel queues what
    it sends (up to 3 s, then it gives up on the neighbour). release() puts the entries back and the
    kernel sends the queue at once: the first copies, not retransmissions, and nothing is dropped.
    Usable as a context manager: `with lab.faults.delay("client") as held: ...; held.release()`.
    """

    TABLE = "socklab_delay"

    def __init__(self, faults: Faults, host, peer):
        self.faults, self.host, self.peer = faults, host, peer
        self.released = True
        self.started = self.ended = None

    def start(self):
        self.faults.nft(self.host).run(
            f"table netdev {self.TABLE} {{\n"
            f"  chain resolution {{\n"
            f"    type filter hook ingress device \"{self.host.ifname}\" priority -500; policy accept;\n"
            f"    ether type arp drop\n"
            f"    icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} drop\n"
            f"  }}\n}}\n")
        self.released = False
        nsutil.run_in(self._neighbours, "del", netns=self.host.netns)
        self.started = time.monotonic()
        self.faults.events.append((self.started, self.host.role, f"delay: {self.host.role}'s segments wait in its neighbour queue"))

    def _neighbours(self, op):
        from .rtnl import Batch
        if op == "del":
            Batch().neigh_del(self.host.ifindex, self.peer.ipv4).neigh_del(self.host.ifindex, self.peer.ipv6).send()
        else:
            Batch().neighbours(self.host, self.peer, replace=True).send()

    def release(self) -> None:
        """Send the held segments now, in the order the kernel queued them."""
        if self.released:
            return
        self.released = True
        self.ended = time.monotonic()           # the queue leaves during the call below: stamp it first
        nsutil.run_in(self._neighbours, "replace", netns=self.host.netns)
        self.faults.nft(self.host).run(f"delete table netdev {self.TABLE}\n")
        self.faults.events.append((self.ended, self.host.role, f"release: {self.host.role}'s held segments are sent"))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def _host(hosts, role, where):
    if role not in hosts:
        raise UnknownRole(f"{where}: unknown role {role!r}; this lab's hosts are {', '.join(sorted(hosts))}")
    return hosts[role]


def _parse_direction(text: str, hosts) -> tuple[str, str]:
    parts = [p.strip() for p in str(text).split(">")]
    if len(parts) == 2 and all(re.fullmatch(r"\w+", p) for p in parts) and parts[0] != parts[1]:
        for p in parts:
            if p not in hosts:
                raise ExpectationSyntaxError(f"unknown role {p!r}: expected '<host> > <host>' with hosts "
                                             f"{sorted(hosts)}, found {text!r}", text, 1, str(text).index(p) + 1)
    if len(parts) != 2 or parts[0] not in hosts or parts[1] not in hosts or parts[0] == parts[1]:
        raise ExpectationSyntaxError(f"expected '<host> > <host>' with hosts {sorted(hosts)}, found {text!r}",
                                     text, 1, 1)
    return parts[0], parts[1]


def _check_port(port) -> None:
    if port is not None and not (isinstance(port, int) and 0 < port < 65536):
        raise ExpectationSyntaxError(f"expected a TCP port 1..65535, found {port!r}", str(port), 1, 1)


def _check_flags(flags: str | None) -> str | None:
    if flags is None:
        return None
    for i, ch in enumerate(flags):
        if ch not in NFT_FLAGS:
            raise ExpectationSyntaxError(f"expected tcpdump flag letters F S R P . , found {ch!r}", flags, 1, i + 1)
    return flags


def _without_port(rule: Rule) -> Rule:
    from dataclasses import replace
    return replace(rule, port=None)


def _matches(rule: Rule) -> list[str]:
    """nftables match expressions for the rule (several when the payload test depends on doff)."""
    base = ""
    if rule.flags is not None:
        mask = ["fin", "syn", "rst", "ack"] + (["psh"] if "P" in rule.flags else [])
        want = [NFT_FLAGS[c] for c in rule.flags] or ["0x0"]
        base = f"tcp flags & ({' | '.join(mask)}) == ({' | '.join(want)})"
    else:
        base = "meta l4proto tcp"
    if rule.port is not None:     # from or to the port: one rule for each
        return [f"tcp {end} {rule.port} {m}" for m in _matches(_without_port(rule)) for end in ("sport", "dport")]
    if rule.payload is None:
        return [base]
    # nftables cannot subtract header lengths, so one rule per TCP header length (doff 5..15).
    op = ">" if rule.payload else "=="
    out = []
    for doff in range(5, 16):
        out.append(f"meta nfproto ipv4 tcp doff {doff} ip length {op} {20 + 4 * doff} {base}")
        out.append(f"meta nfproto ipv6 tcp doff {doff} ip6 length {op} {4 * doff} {base}")
    return out
