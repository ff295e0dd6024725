"""Faults on the path: drop or hold segments with nftables rules inside the case's namespaces.

This kernel has no netem, so a fault is an nftables rule. `drop("client > server", flags="S")` drops
the client's SYNs where they arrive (the server's prerouting hook), so each dropped segment still
crossed the link, is in the capture, and is marked with the rule's name. `hold` is `drop` followed
later by `release()`: the sender's retransmission then passes. `count=N` drops only the first N
matches (an nftables limit with a burst of N that never refills within a case). `block_output` keeps
a host's own kernel from sending matching segments at all (used by the injecting peer).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from .errors import CommandError, ExpectationSyntaxError, SetupError
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
    added: float = 0.0
    removed: float | None = None
    handles: list = field(default_factory=list)
    faults: object = None

    def matches(self, seg) -> bool:
        """The same test nftables applies, for marking captured segments as dropped."""
        if seg.src != self.src or seg.dst != self.dst:
            return False
        if self.flags is not None and _letters(seg.flags, self.flags) != set(self.flags):
            return False
        if self.payload is not None and (seg.length > 0) != self.payload:
            return False
        return True

    def active_at(self, t: float) -> bool:
        return self.added <= t and (self.removed is None or t <= self.removed)

    def limit_count(self) -> float:
        return self.count if self.count is not None else float("inf")

    def release(self) -> None:
        """Remove the rule: held segments pass on their next retransmission."""
        self.faults.remove(self)

    def describe(self) -> str:
        what = f"flags {self.flags}" if self.flags else "all segments"
        if self.payload is not None:
            what += " with payload" if self.payload else " without payload"
        n = f"first {self.count} " if self.count else ""
        where = "dropped on arrival" if self.hook == "prerouting" else "never sent"
        return f"rule {self.name}: {n}{self.src} > {self.dst} {what}, {where}"


def _letters(observed: str, spec: str) -> set:
    """Observed flag letters restricted to those the spec's mask looks at (PSH only if the spec names it)."""
    mask = set("FSR.") | ({"P"} if "P" in spec else set())
    return set(observed) & mask


class Faults:
    """The fault rules of one lab; every rule is removed at the end of the case."""

    _ids = itertools.count(1)

    def __init__(self, lab):
        self.lab = lab
        self.rules: list[Rule] = []
        self.events: list[tuple[float, str, str]] = []
        self._tables: set[str] = set()

    def drop(self, direction: str, flags: str | None = None, *, payload: bool | None = None,
             count: int | None = None, name: str | None = None) -> Rule:
        """Drop segments travelling `direction` ('client > server') on arrival; see the module doc."""
        src, dst = _parse_direction(direction, self.lab.topology.hosts)
        return self._add(Rule(name or f"drop{next(self._ids)}", src, dst, _check_flags(flags), payload, count,
                              "prerouting", self.lab.topology.hosts[dst]))

    hold = drop

    def block_output(self, role: str, flags: str | None = None, *, name: str | None = None) -> Rule:
        """Keep host `role`'s kernel from sending matching segments (they never reach the link)."""
        peer = self.lab.topology.peer_of(self.lab.topology.hosts[role]).role
        return self._add(Rule(name or f"block{next(self._ids)}", role, peer, _check_flags(flags), None, None,
                              "output", self.lab.topology.hosts[role]))

    def _add(self, rule: Rule) -> Rule:
        rule.faults = self
        self._ensure_table(rule.host, rule.hook)
        lines = []
        if rule.count is not None:
            lines.append(f"add limit inet {TABLE} {rule.name} {{ rate 1/day burst {rule.count} packets }}")
        for match in _matches(rule):
            action = (f'limit name "{rule.name}" ' if rule.count is not None else "") + "counter drop"
            lines.append(f'add rule inet {TABLE} {rule.hook} {match} {action} comment "{rule.name}"')
        out = self._nft(rule.host, "\n".join(lines) + "\n", echo=True)
        rule.handles = [int(l.rsplit("# handle", 1)[1]) for l in out.splitlines() if "# handle" in l and " rule " in l]
        rule.added = time.monotonic()
        self.rules.append(rule)
        self.events.append((rule.added, rule.dst if rule.hook == "prerouting" else rule.src, "added " + rule.describe()))
        if rule.hook == "prerouting":
            self.lab.capture.drops.append(rule)
        return rule

    def remove(self, rule: Rule) -> None:
        if rule.removed is not None:
            return
        cmds = [f"delete rule inet {TABLE} {rule.hook} handle {h}" for h in rule.handles]
        self._nft(rule.host, "\n".join(cmds) + "\n")
        rule.removed = time.monotonic()
        self.events.append((rule.removed, rule.dst if rule.hook == "prerouting" else rule.src, f"removed rule {rule.name}"))

    def clear(self) -> None:
        """Remove every rule still in place (the namespaces' removal would too; this records when)."""
        for rule in self.rules:
            if rule.removed is None:
                try:
                    self.remove(rule)
                except CommandError:
                    pass   # the namespace is going away with the rule in it

    def counters(self, rule: Rule) -> int:
        """How many segments the kernel's rule matched, from nftables' own counter."""
        out = self._nft(rule.host, None, args=["-a", "list", "chain", "inet", TABLE, rule.hook])
        total = 0
        for line in out.splitlines():
            if f'comment "{rule.name}"' in line and "counter packets" in line:
                total += int(line.split("counter packets", 1)[1].split()[0])
        return total

    def _ensure_table(self, host, hook):
        key = f"{host.role}/{hook}"
        if key in self._tables:
            return
        prio = -300 if hook == "prerouting" else 0
        self._nft(host, f"add table inet {TABLE}\nadd chain inet {TABLE} {hook} "
                        f"{{ type filter hook {hook} priority {prio}; policy accept; }}\n")
        self._tables.add(key)

    def _nft(self, host, script, *, echo=False, args=None):
        argv = ["nft"] + (args or (["--echo", "--handle", "-f", "-"] if echo else ["-f", "-"]))
        try:
            return host.run(argv, input=script).stdout
        except SetupError:
            raise SetupError("nft not found: faults need nftables (apt-get install -y nftables)") from None


def _parse_direction(text: str, hosts) -> tuple[str, str]:
    parts = [p.strip() for p in text.split(">")]
    if len(parts) != 2 or parts[0] not in hosts or parts[1] not in hosts or parts[0] == parts[1]:
        raise ExpectationSyntaxError(f"expected '<host> > <host>' with hosts {sorted(hosts)}, found {text!r}",
                                     text, 1, 1)
    return parts[0], parts[1]


def _check_flags(flags: str | None) -> str | None:
    if flags is None:
        return None
    for i, ch in enumerate(flags):
        if ch not in NFT_FLAGS:
            raise ExpectationSyntaxError(f"expected tcpdump flag letters F S R P . , found {ch!r}", flags, 1, i + 1)
    return flags


def _matches(rule: Rule) -> list[str]:
    """nftables match expressions for the rule (several when the payload test depends on doff)."""
    base = ""
    if rule.flags is not None:
        mask = ["fin", "syn", "rst", "ack"] + (["psh"] if "P" in rule.flags else [])
        want = [NFT_FLAGS[c] for c in rule.flags] or ["0x0"]
        base = f"tcp flags & ({' | '.join(mask)}) == ({' | '.join(want)})"
    else:
        base = "meta l4proto tcp"
    if rule.payload is None:
        return [base]
    # nftables cannot subtract header lengths, so one rule per TCP header length (doff 5..15).
    op = ">" if rule.payload else "=="
    out = []
    for doff in range(5, 16):
        out.append(f"meta nfproto ipv4 tcp doff {doff} ip length {op} {20 + 4 * doff} {base}")
        out.append(f"meta nfproto ipv6 tcp doff {doff} ip6 length {op} {4 * doff} {base}")
    return out
