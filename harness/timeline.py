"""One timeline of a case: calls, segments, `ss` snapshots, state transitions and fault rules.

Every source stamps CLOCK_MONOTONIC (calls in the agents, packets converted from the kernel's
wall-clock stamps, the trace with trace_clock=mono, snapshots around the `ss` run), so merging is a
sort. The text form reads like a ladder: client events on the left, the wire in the middle, server
events on the right.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    time: float
    kind: str        # "call", "segment", "ss", "state", "fault", "note"
    side: str        # "client", "server", "wire" or a program name
    text: str

    def to_json(self, t0: float) -> dict:
        return {"t": round(self.time - t0, 6), "kind": self.kind, "side": self.side, "text": self.text}


class Timeline:
    """Events of one case in time order, relative to the case's start."""

    def __init__(self, start: float):
        self.start = start
        self.events: list[Event] = []

    def add(self, time: float, kind: str, side: str, text: str) -> None:
        self.events.append(Event(time, kind, side, text))

    def sorted(self) -> list[Event]:
        order = {"call": 0, "segment": 1, "state": 2, "ss": 3, "fault": 4, "note": 5}
        return sorted(self.events, key=lambda e: (e.time, order.get(e.kind, 9)))

    def text(self, width: int = 44) -> str:
        """Three columns: left host, wire, right host; times in ms from the start of the case."""
        lines = [f"{'time ms':>9}  {'client':<{width}} {'wire':<48} server", "-" * (width * 2 + 62)]
        for e in self.sorted():
            ms = f"{(e.time - self.start) * 1000:9.3f}"
            mark = {"call": "", "state": "state ", "ss": "ss ", "fault": "fault ", "note": ""}.get(e.kind, "")
            body = (mark + e.text)
            if e.kind == "segment":
                lines.append(f"{ms}  {'':<{width}} {body}")
            elif e.side.startswith("server") or e.side == "right":
                lines.append(f"{ms}  {'':<{width}} {'':<48} {body}")
            else:
                lines.append(f"{ms}  {body:<{width}}".rstrip())
        return "\n".join(lines) + "\n"

    def to_json(self) -> list[dict]:
        return [e.to_json(self.start) for e in self.sorted()]
