"""A TCP segment as the harness sees it: direction, tcpdump flags, relative seq/ack, options."""

from __future__ import annotations

from dataclasses import dataclass, replace

# tcpdump prints flags in this order, with "." for ACK last (e.g. "S.", "FP.", "R.").
FLAG_ORDER = (("F", 0x01), ("S", 0x02), ("R", 0x04), ("P", 0x08), ("U", 0x20), ("E", 0x40), ("W", 0x80))
ACK = 0x10


def flags_text(bits: int) -> str:
    """tcpdump's spelling of a TCP flags byte: 0x12 -> 'S.', 0x10 -> '.'."""
    text = "".join(ch for ch, bit in FLAG_ORDER if bits & bit)
    return text + "." if bits & ACK else text


@dataclass(frozen=True)
class Segment:
    """One TCP segment on the link, with sequence numbers relative to each side's ISN (ISN = 0)."""

    time: float                 # CLOCK_MONOTONIC seconds, comparable with calls and transitions
    src: str                    # "client" or "server" (the host the segment left)
    dst: str
    flags: str                  # tcpdump notation: "S", "S.", ".", "P.", "F.", "FP.", "R", "R."
    seq: int                    # relative sequence number of the first byte (SYN = 0)
    length: int                 # payload bytes
    ack: int | None = None      # relative acknowledgment number, None when the ACK flag is off
    win: int = 0                # raw window field (unscaled)
    options: tuple = ()         # (("mss", 1460), ("sackOK", None), ("TS", (val, ecr)), ("nop", None), ("wscale", 7))
    sport: int = 0
    dport: int = 0
    dropped_by: str | None = None   # name of the fault rule that dropped it on arrival, if any
    raw_seq: int = 0            # absolute numbers, kept for the pcap cross-reference only
    raw_ack: int = 0

    @property
    def end(self) -> int:
        """tcpdump's 'start:end(len)' end: seq plus payload length."""
        return self.seq + self.length

    def option(self, name, default=None):
        """Value of the first option called `name` ("mss", "wscale", "TS", "sackOK", ...)."""
        for key, value in self.options:
            if key == name:
                return value
        return default

    def has(self, flag: str) -> bool:
        """True when the segment carries the flag letter ("S", "F", "R", "P", or "." for ACK)."""
        return flag in self.flags

    def with_drop(self, rule: str) -> "Segment":
        return replace(self, dropped_by=rule)

    def options_text(self) -> str:
        parts = []
        for key, value in self.options:
            if key == "TS":
                parts.append(f"TS val {value[0]} ecr {value[1]}")
            elif value is None:
                parts.append(key)
            elif key == "sack":
                parts.append("sack " + " ".join(f"{a}:{b}" for a, b in value))
            else:
                parts.append(f"{key} {value}")
        return ",".join(parts)

    def text(self, *, options: bool = True, win: bool = False) -> str:
        """The segment in the expectation notation, e.g. 'client > server  S. 0:0(0) ack 1 <mss 1460>'."""
        out = f"{self.src} > {self.dst}  {self.flags:<3} {self.seq}:{self.end}({self.length})"
        if self.ack is not None:
            out += f" ack {self.ack}"
        if win:
            out += f" win {self.win}"
        if options and self.options:
            out += f" <{self.options_text()}>"
        if self.dropped_by:
            out += " (dropped)"
        return out

    def __str__(self) -> str:
        return self.text()


def _field(seg, name):
    """A field of a Segment or of a case.json segment dict (where `length` is `len`)."""
    if isinstance(seg, dict):
        return seg.get({"length": "len"}.get(name, name))
    return getattr(seg, name, None)


def _wscale(seg):
    for opt in _field(seg, "options") or ():
        if opt and opt[0] == "wscale":
            return opt[1]
    return None


def windows(segs) -> list[str | None]:
    """For each segment (Segment or case.json dict) in order: its window in words where it is 0 or
    changes from that sender's previous segment on the same connection, else None.

    'win 0', 'win 64240' (a SYN's, or no scaling agreed), 'win 64128 (raw 501 << 7)': `Segment.win` is
    the raw header field; the scale is the sender's SYN wscale option when both SYNs carried one
    (RFC 7323), and a SYN's own window is never scaled.
    """
    syn_scale: dict = {}          # (connection, sender) -> wscale of its SYN (None: none offered)
    last: dict = {}
    out = []
    for seg in segs:
        src, flags, raw = _field(seg, "src"), _field(seg, "flags") or "", _field(seg, "win")
        conn = frozenset((_field(seg, "sport"), _field(seg, "dport")))
        peer = next((k[1] for k in syn_scale if k[0] == conn and k[1] != src), None)
        if "S" in flags:
            syn_scale[(conn, src)] = _wscale(seg)
        if raw is None:
            out.append(None)
            continue
        mine, theirs = syn_scale.get((conn, src)), syn_scale.get((conn, peer)) if peer else None
        shift = mine if ("S" not in flags and mine is not None and theirs is not None) else None
        value = raw << shift if shift is not None else raw
        changed = last.get((conn, src)) != value
        last[(conn, src)] = value
        if value == 0:
            out.append("win 0")
        elif changed:
            out.append(f"win {value}" + (f" (raw {raw} << {shift})" if shift is not None else ""))
        else:
            out.append(None)
    return out


def match(src: str | None = None, flags: str | None = None, *, seq: int | None = None, ack: int | None = None,
          length: int | None = None, port: int | None = None):
    """A predicate for lab.wait_segment: direction, exact flag set, and seq/ack/length/port where given."""
    def matches(seg: Segment) -> bool:
        return ((src is None or seg.src == src) and (flags is None or set(seg.flags) == set(flags))
                and (seq is None or seg.seq == seq) and (ack is None or seg.ack == ack)
                and (length is None or seg.length == length) and (port is None or port in (seg.sport, seg.dport)))
    return matches

