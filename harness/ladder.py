"""Ladder diagrams of one case: client and server as two vertical lines, one arrow per segment.

`svg_ladder(record)` draws a case.json record (Lab.record) as inline SVG: events (segments, calls,
state changes, fault rules) go down the page in time order, one row each, so events a microsecond
apart stay readable; the left column gives each row's time in ms and a broken axis marks long
pauses. Arrows slant downwards from sender to receiver; a dropped segment is a dashed red arrow
ending in an X before the receiver. Each host's calls, state changes and the windows it advertises
(where 0 or changed, see segment.windows) are written beside its own line: a call goes to the side
of the host its program runs in (the call's role), whatever the program is called.
`text_ladder(segments)` is the same for a terminal.
"""

from __future__ import annotations

import zlib
from html import escape

from .results import segment_body
from .segment import windows

ROW = 22                 # px per event row
TIME_W = 86              # time column
SIDE_W = 300             # text beside each host line
GAP_W = 430              # between the two host lines
FONT = 11
CHAR_W = 6.7             # monospace advance at FONT px, for clipping side texts
X_CLIENT = TIME_W + SIDE_W
X_SERVER = X_CLIENT + GAP_W
WIDTH = X_SERVER + SIDE_W + 10
PAUSE = 0.1              # s: a gap this long (and 20x the median gap) is drawn as a broken axis
WINDOW_COLOUR = "#00796b"   # a segment's advertised window, beside its sender's line
COLOURS = {"call": "#111", "state": "#1f4e9c", "fault": "#b35900", "note": "#555"}


def side_of(name: str | None) -> str:
    """The host a program or role belongs to: 'server', 'server.child', 'server2' -> 'server'."""
    return "server" if (name or "").startswith("server") else "client"


def _addr_names(rec: dict) -> dict:
    return {a: role for role, addrs in (rec.get("hosts") or {}).items() for a in addrs.values() if a}


def call_text(call: dict, addrs: dict | None = None) -> str:
    """'connect(3, server, 50000) = 0' or '... ECONNREFUSED': a call as a short line."""
    addrs = addrs or {}
    args = []
    for k, v in (call.get("args") or {}).items():
        if k in ("family", "type") and call.get("op") != "socket":
            continue
        if v is None or v is False or v == [] or v == {}:
            continue
        if isinstance(v, str) and v in addrs:
            v = addrs[v]
        elif isinstance(v, str) and len(v) > 12:
            v = f"<{len(v)} bytes>"
        args.append(k if v is True else str(v))
    ret = call.get("ret")
    if call.get("errno"):
        res = call["errno"]
    elif call.get("error"):
        res = f"error {call['error']}"
    elif isinstance(ret, dict):
        res = "= " + ", ".join(f"{k} {':'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                               for k, v in ret.items())
    elif isinstance(ret, str):
        res = f"= {ret!r}" if len(ret) <= 12 else f"= <{len(ret)} bytes>"
    else:
        res = f"= {ret}"
    prog = call.get("program", "")
    prefix = "" if prog in ("client", "server") else f"{prog}: "     # another program on that side names itself
    text = f"{prefix}{call.get('op')}({', '.join(args)}) {res}"
    for addr, role in addrs.items():
        text = text.replace(f"'{addr}'", role).replace(addr, role)
    return text


def events(rec: dict) -> list[dict]:
    """Segments, calls, state changes and fault rules of a record in time order, as drawable events."""
    addrs = _addr_names(rec)
    conns = connections(rec)
    out = []
    segs = rec.get("segments", [])
    for s, win in zip(segs, windows(segs)):
        tag = f"#{conns[_pair(s)][0]} " if len(conns) > 1 else ""
        out.append({"t": s["t"], "kind": "segment", "side": s["src"], "text": tag + segment_body(s), "seg": s,
                    "win": win})
    for c in rec.get("calls", []):
        t = c.get("t1") if c.get("background") else c.get("t0")
        side = c.get("role") if c.get("role") in ("client", "server") else side_of(c.get("program"))
        out.append({"t": t or 0.0, "kind": "call", "side": side, "text": call_text(c, addrs)})
    for h in rec.get("transitions", []):
        states, times = h.get("states", []), h.get("times", [])
        listener = not h.get("peer_port") and h.get("peer_role") == "wire"
        port = f"{h.get('local_port')}" + (" (listener)" if listener else f">{h.get('peer_port')}")
        for i, t in enumerate(times):
            if i + 1 < len(states):
                out.append({"t": t, "kind": "state", "side": side_of(h.get("local_role")),
                            "text": f"{port} {states[i]} \u2192 {states[i + 1]}"})
    for f in rec.get("faults", []):
        out.append({"t": f["t"], "kind": "fault", "side": side_of(f.get("role")), "text": f["text"]})
    order = {"call": 0, "segment": 1, "state": 2, "fault": 3}
    return sorted(out, key=lambda e: (e["t"], order[e["kind"]]))


def _pair(seg: dict) -> frozenset:
    return frozenset((seg.get("sport"), seg.get("dport")))


def connections(rec: dict) -> dict:
    """{port pair: (number, 'client:41000 <-> server:50000')} in order of each connection's first segment."""
    out: dict = {}
    for s in rec.get("segments", []):
        if _pair(s) not in out:
            ports = {s["src"]: s.get("sport"), s["dst"]: s.get("dport")}
            out[_pair(s)] = (len(out) + 1, f"client:{ports.get('client')} \u2194 server:{ports.get('server')}")
    return out


def _pauses(times: list[float]) -> set[int]:
    """Indexes i where the gap before event i is long enough to draw as a broken axis."""
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    if not gaps:
        return set()
    median = gaps[len(gaps) // 2]
    return {i for i in range(1, len(times)) if times[i] - times[i - 1] >= max(PAUSE, 20 * median)}


def _clip(text: str, width: float) -> str:
    n = int(width / CHAR_W)
    return text if len(text) <= n else text[:max(1, n - 1)] + "\u2026"


def _text(x, y, text, *, anchor="start", colour="#111", size=FONT, title=None, weight=None):
    w = f' font-weight="{weight}"' if weight else ""
    tip = f"<title>{escape(title)}</title>" if title else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{colour}" font-size="{size}"{w}>'
            f"{tip}{escape(text)}</text>")


def svg_ladder(rec: dict, *, title: str | None = None) -> str:
    """The ladder diagram of a case.json record as a standalone <svg> element (inline-safe)."""
    evs = events(rec)
    mark = f"ah{zlib.crc32((title or rec.get('name') or '').encode()):08x}"
    pauses = _pauses([e["t"] for e in evs])
    conns = sorted(connections(rec).values()) if len(connections(rec)) > 1 else []
    top = 40 + len(conns) * ROW
    ys, y = [], top
    for i in range(len(evs)):
        y += ROW + (ROW if i in pauses else 0)
        ys.append(y)
    height = (ys[-1] if ys else top) + ROW + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="{WIDTH}" height="{height}" '
             f'viewBox="0 0 {WIDTH} {height}" font-family="monospace" font-size="{FONT}">']
    if title:
        parts.append(f"<title>{escape(title)}</title>")
    parts += [f'<defs><marker id="{mark}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
              'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#222"/></marker></defs>',
              _text(6, 16, "time ms", colour="#555"),
              _text(X_CLIENT, 16, "client", anchor="middle", weight="bold", size=13),
              _text(X_SERVER, 16, "server", anchor="middle", weight="bold", size=13)]
    for k, (n, text) in enumerate(conns):
        parts.append(_text((X_CLIENT + X_SERVER) / 2, 40 + k * ROW, f"#{n}  {text}", anchor="middle", colour="#555"))
    bottom = height - 6
    for x in (X_CLIENT, X_SERVER):
        parts.append(f'<line x1="{x}" y1="24" x2="{x}" y2="{bottom}" stroke="#444" stroke-width="2"/>')
    if not evs:
        parts.append(_text((X_CLIENT + X_SERVER) / 2, top + ROW, "(no events recorded)", anchor="middle", colour="#777"))
    for i, (e, y) in enumerate(zip(evs, ys)):
        if i in pauses:
            gap_y = y - ROW
            gap_ms = (e["t"] - evs[i - 1]["t"]) * 1000
            parts.append(f'<line x1="4" y1="{gap_y}" x2="{WIDTH - 4}" y2="{gap_y}" stroke="#bbb" stroke-dasharray="2,4"/>')
            parts.append(f'<rect x="2" y="{gap_y - 8}" width="{TIME_W - 6}" height="16" fill="#fff"/>')
            parts.append(_text(TIME_W - 8, gap_y + 4, f"+{gap_ms:.0f} ms", anchor="end", colour="#888"))
        parts.append(_text(TIME_W - 8, y + 4, f"{e['t'] * 1000:.3f}", anchor="end", colour="#666"))
        if e["kind"] == "segment":
            parts.append(_arrow(e, y, mark))
        else:
            colour = COLOURS.get(e["kind"], "#111")
            if e["side"] == "server":
                parts.append(_text(X_SERVER + 8, y + 4, _clip(e["text"], SIDE_W - 14), colour=colour, title=e["text"]))
            else:
                parts.append(_text(X_CLIENT - 8, y + 4, _clip(e["text"], SIDE_W - TIME_W / 2),
                                   anchor="end", colour=colour, title=e["text"]))
            dot_x = X_SERVER if e["side"] == "server" else X_CLIENT
            parts.append(f'<circle cx="{dot_x}" cy="{y}" r="3" fill="{colour}"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def _arrow(e: dict, y: float, mark: str) -> str:
    seg = e["seg"]
    rightwards = _rightwards(seg["src"], seg["dst"])
    x1, x2 = (X_CLIENT, X_SERVER) if rightwards else (X_SERVER, X_CLIENT)
    y1, y2 = y - ROW * 0.3, y + ROW * 0.3
    label = e["text"]
    tip = seg.get("text") or label
    out = [_text((X_CLIENT + X_SERVER) / 2, y1 - 2, _clip(label, GAP_W - 10), anchor="middle",
                 colour="#c00" if seg.get("dropped_by") else "#111", title=tip)]
    if e.get("win"):        # the window the sender advertised, on the sender's side
        if rightwards:
            out.append(_text(X_CLIENT - 8, y + 4, e["win"], anchor="end", colour=WINDOW_COLOUR))
        else:
            out.append(_text(X_SERVER + 8, y + 4, e["win"], colour=WINDOW_COLOUR))
    if seg.get("dropped_by"):
        xe = x1 + (x2 - x1) * 0.85
        ye = y1 + (y2 - y1) * 0.85
        out.append(f'<line x1="{x1}" y1="{y1:.1f}" x2="{xe:.1f}" y2="{ye:.1f}" stroke="#c00" stroke-width="1.5" '
                   f'stroke-dasharray="6,4"><title>{escape("dropped by " + seg["dropped_by"])}</title></line>')
        out.append(f'<path d="M{xe - 5:.1f},{ye - 5:.1f} L{xe + 5:.1f},{ye + 5:.1f} M{xe - 5:.1f},{ye + 5:.1f} '
                   f'L{xe + 5:.1f},{ye - 5:.1f}" stroke="#c00" stroke-width="2"/>')
    else:
        out.append(f'<line x1="{x1}" y1="{y1:.1f}" x2="{x2}" y2="{y2:.1f}" stroke="#222" stroke-width="1.3" '
                   f'marker-end="url(#{mark})"/>')
    return "\n".join(out)


def _rightwards(src: str, dst: str) -> bool:
    """Arrows point right towards the server: client > server, router > server (a routed lab's router
    on the client's side of the diagram), client > router."""
    return dst == "server" or (src == "client" and dst != "client")


def text_ladder(segments) -> str:
    """Segments as a terminal ladder; takes case.json segment dicts (with times) or normalised lines."""
    rows = []
    for s in segments:
        if isinstance(s, dict):
            label = segment_body(s)
            rows.append((f"{s['t'] * 1000:10.3f}  " if "t" in s else "", _rightwards(s["src"], s["dst"]), label,
                         bool(s.get("dropped_by"))))
        else:
            head, _, rest = s.partition("  ")
            src, _, dst = head.partition(" > ")
            dropped = " (dropped)" in rest
            rows.append(("", _rightwards(src, dst.strip()), " ".join(rest.replace(" (dropped)", "").split()), dropped))
    if not rows:
        return "(no segments)\n"
    lane = max(len(r[2]) for r in rows) + 10
    pad = " " * len(rows[0][0])
    lines = [f"{pad}client{' ' * (lane - 5)}server"]
    for prefix, right, label, dropped in rows:
        body = f" {label} "
        if right:
            line = "--" + body + "-" * (lane - len(body) - 4)
            line = line[:-2] + " X  " if dropped else line + "->"
        else:
            line = "<-" + body + "-" * (lane - len(body) - 4) + "--"
            line = " X" + line[2:] if dropped else line
        lines.append(f"{prefix}|{line}|" + ("  (dropped)" if dropped else ""))
    return "\n".join(lines) + "\n"
