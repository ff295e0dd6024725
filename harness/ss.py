"""`ss` snapshots: the verbatim text of `ss -tanoi` in a namespace, and its rows parsed.

The text is the record (reports show it as printed); the parsed rows are for expectations. Parsing
follows what iproute2 6.1 prints when its stdout is a pipe (no line wrapping):

    State  Recv-Q Send-Q Local Address:Port Peer Address:Port Process
    ESTAB  0      0          127.0.0.1:48336   127.0.0.1:5001  timer:(keepalive,119min,0)
    <TAB> ts sack bbr wscale:10,10 rto:204 rtt:0.027/0.015 mss:35328 ... snd_wnd:70656

- A row is one line; its `-i` info is on the following line(s) starting with whitespace. Sockets
  without TCP info (TIME-WAIT, SYN-RECV, an orphan's FIN-WAIT-2) still get an empty info line.
- The State column is absent when the filter selects a single state (`state listening`); the
  rows then carry the state `take()` derives from that filter, or None.
- Addresses are kept without IPv6 brackets and without the `%dev` suffix ("::1", "127.0.0.53"),
  as the socket API and the trace spell them; the device goes to `local_dev` / `peer_dev`. The
  wildcard address stays "*" (dual-stack listener), "0.0.0.0" or "::" as printed; a `*` port is None.
- Nothing unexpected raises: unknown pieces land in `info` (see `parse_info`), and the raw text
  always stays in `Snapshot.text`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import time
from dataclasses import dataclass, field

from .errors import CommandError, SetupError
from .errors import hide_own_frames as __tracebackhide__  # noqa: F401 (read by pytest)

SS_ARGS = ("-tanoi",)

# ss's names for the `state` filter that select exactly one state (and so hide the State column).
_FILTER_STATE = {
    "established": "ESTAB", "syn-sent": "SYN-SENT", "syn-recv": "SYN-RECV",
    "fin-wait-1": "FIN-WAIT-1", "fin-wait-2": "FIN-WAIT-2", "time-wait": "TIME-WAIT",
    "closed": "UNCONN", "close-wait": "CLOSE-WAIT", "last-ack": "LAST-ACK",
    "listening": "LISTEN", "closing": "CLOSING",
}

# Info words that ss prints as "name value" instead of "name:value".
_SPACED_KEYS = ("send", "pacing_rate", "delivery_rate")

_TIMER_RE = re.compile(r"timer:\((?P<name>[^,()]*),(?P<time>[^,()]*),(?P<retrans>-?\d+)\)$")
# print_ms_timer(): "119min", "5min30sec", "59sec", "9.500ms" (= 9.5 s; newer ss: "9.500sec"), "024ms", "".
_DURATION_RE = re.compile(r"(?:(?P<min>\d+)min)?(?:(?P<sec>\d+)(?:sec|\.(?P<frac>\d+)(?:ms|sec)))?(?:(?P<ms>\d+)ms)?")
_INT_RE = re.compile(r"-?\d+")
_FLOAT_RE = re.compile(r"-?\d+\.\d*(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Timer:
    """ss's `timer:(name,remaining,retrans)`: e.g. Timer("timewait", 59.0, 0)."""

    name: str           # "on" (retransmit/SYN), "keepalive", "timewait", "persist", "off", "unknown"
    remaining: float    # seconds until it fires, at ss's millisecond resolution
    retrans: int        # retransmissions ("on") or unanswered probes (keepalive, persist)


@dataclass
class SsRow:
    """One socket as `ss -tanoi` printed it."""

    state: str | None   # as ss prints it: ESTAB, LISTEN, SYN-SENT, TIME-WAIT, ...
    recv_q: int
    send_q: int
    local: str          # "127.0.0.1", "::1", "::ffff:127.0.0.1", "*", "0.0.0.0", "::"
    local_port: int | None
    peer: str
    peer_port: int | None   # None for "*"
    timer: Timer | None = None
    info: dict = field(default_factory=dict)
    raw: str = ""       # the row's lines exactly as printed
    local_dev: str | None = None    # "lo" for "127.0.0.53%lo:53"
    peer_dev: str | None = None

    def __str__(self) -> str:
        return self.raw

    def timer_age(self, snap: "Snapshot", started: float) -> tuple[float, float]:
        """(low, high): the length the kernel gave this row's timer, if it started at monotonic time
        `started` (e.g. the segment that armed it), from this one reading in `snap`. `ss` prints
        whole seconds at and above one second ("59sec", "1min"), so what was left lies in
        [remaining, remaining + 1 s) there and within a jiffy below (and in a sock_diag snapshot);
        and it was read between the snapshot's start and end."""
        if self.timer is None:
            raise ValueError(f"no timer on this socket: {self.raw}")
        exact = snap.argv[:1] == ("sock_diag",)       # the kernel's milliseconds, not ss's text
        slack = 0.01 if exact or self.timer.remaining < 1.0 else 1.0     # 0.01: a jiffy at HZ=100
        return (self.timer.remaining + snap.before - started,
                self.timer.remaining + slack + snap.after - started)

    def timer_text(self) -> str:
        """The timer as ss printed it, e.g. 'timer:(timewait,59sec,0)', or 'no timer'."""
        found = re.search(r"timer:\([^)]*\)", self.raw)
        return found.group() if found else "no timer"


@dataclass
class Snapshot:
    """The sockets of one namespace at one moment: `ss` text as printed, and its rows."""

    label: str
    netns: str
    time: float         # CLOCK_MONOTONIC midpoint of the `ss` run
    text: str
    rows: list[SsRow] = field(default_factory=list)
    before: float = 0.0     # monotonic time just before and just after the run
    after: float = 0.0
    argv: tuple = ()
    dump: bytes | None = None   # a sock_diag snapshot's answer from the kernel, as `ss --diag` writes one
    replayed: bool = False      # text printed by `ss` from `dump` after the moment (see mode())
    print_when_written: bool = False    # mode "end": `ss` prints `dump` as the case is written

    def states(self) -> list[str]:
        """The rows' states in ss's order, e.g. ['LISTEN', 'ESTAB', 'TIME-WAIT']."""
        return [row.state for row in self.rows]

    def find(self, local_port=None, peer_port=None, state=None, peer=None) -> list[SsRow]:
        """Rows matching every given field (ss spelling for `state`, e.g. 'FIN-WAIT-2'; `peer` an address)."""
        return [row for row in self.rows
                if (local_port is None or row.local_port == local_port)
                and (peer_port is None or row.peer_port == peer_port)
                and (state is None or row.state == state)
                and (peer is None or _same_address(row.peer, peer))]

    def __str__(self) -> str:
        return self.text


def _same_address(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.strip("[]")) == ipaddress.ip_address(b.strip("[]"))
    except ValueError:
        return a == b


MODES = ("end", "live", "replay")


def mode() -> str:
    """When `ss -tanoi` prints a named snapshot (lab.ss), from SOCKLAB_SS:

    - "end" (the default): at the snapshot the harness keeps the kernel's sock_diag answer (in this
      process, about a millisecond) and reads the rows from it; `ss` prints that answer as the case's
      artifacts are written, off the case's steps. An `ss` process took 5 ms on the quiet machine
      and 150-440 ms beside a full test run and a TCG guest, long enough to outlast a 1 s SYN timer
      between a case's steps.
    - "live": an `ss` process at the snapshot asks the kernel itself.
    - "replay": the answer is kept for `ss` to print after the whole run (socklab matrix's guests,
      where an `ss` process costs 130-170 ms; artifacts.replay_ss on the host).
    """
    value = os.environ.get("SOCKLAB_SS") or "end"
    if value not in MODES:
        raise SetupError(f"SOCKLAB_SS={value!r}: not one of {', '.join(MODES)} (see harness/ss.py mode())")
    return value


def take(netns: str, *, label: str, extra_args=()) -> Snapshot:
    """Run `ss -N netns -tanoi [extra_args]` and return its text and parsed rows."""
    return take_all([netns], label=label, extra_args=extra_args)[0]


def take_all(netnses: list[str], *, label: str, extra_args=()) -> list[Snapshot]:
    """take() in each namespace, the `ss` processes running at once (one per host of a snapshot: the
    hosts are seen at nearly the same moment, and the caller waits for the slowest, not the sum)."""
    started = []
    try:
        for netns in netnses:
            argv = ["ss", "-N", netns, *SS_ARGS, *extra_args]
            before = time.monotonic()
            try:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        encoding="utf-8", errors="replace")
            except FileNotFoundError as exc:
                raise SetupError("`ss` is not installed; install it with: apt-get install -y iproute2") from exc
            started.append((netns, argv, before, proc))
        snaps = []
        for netns, argv, before, proc in started:
            out, err = proc.communicate()
            after = time.monotonic()
            if proc.returncode != 0:
                raise CommandError(argv, proc.returncode, out, err)
            snaps.append(Snapshot(label=label, netns=netns, time=(before + after) / 2, text=out,
                                  rows=parse(out, state=single_state(extra_args)),
                                  before=before, after=after, argv=tuple(argv)))
        return snaps
    finally:
        for _netns, _argv, _before, proc in started:
            if proc.poll() is None:     # an error above: none is left running
                proc.kill()
                proc.wait()


def replay(dump_path: str) -> str:
    """What `ss -tanoi` prints for a kernel answer recorded earlier (a sock_diag snapshot's `dump`,
    written to a file): ss reads it from $TCPDIAG_FILE instead of asking the kernel (see mode())."""
    return replay_all([dump_path])[0]


def replay_all(dump_paths: list[str]) -> list[str]:
    """What `ss -tanoi` prints for each recorded answer, each by its own `ss` (column widths are
    ss's for that answer alone), all from one shell: one process started from this (large,
    threaded) one instead of one per answer."""
    if not dump_paths:
        return []
    script = 'for f; do TCPDIAG_FILE="$f" ss ' + " ".join(SS_ARGS) + ' || exit; printf "\\0"; done'
    argv = ["sh", "-c", script, "socklab-ss-replay", *dump_paths]
    proc = subprocess.run(argv, capture_output=True, text=True, encoding="utf-8", errors="replace",
                          env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")})
    texts = proc.stdout.split("\0")[:-1]
    if proc.returncode != 0 or proc.stderr.strip() or len(texts) != len(dump_paths):
        if "ss: not found" in proc.stderr or "ss: command not found" in proc.stderr:
            raise SetupError("`ss` is not installed; install it with: apt-get install -y iproute2")
        raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
    return texts


def single_state(args) -> str | None:
    """The ss state name when `args` filter on exactly one state (ss then omits its State column)."""
    args = list(args)
    if any(a in ("exclude", "excl") for a in args):
        return None
    picked = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "state"]
    if len(picked) == 1:
        return _FILTER_STATE.get(picked[0])
    return None


def parse(text: str, *, state: str | None = None) -> list[SsRow]:
    """Rows of `ss -tan[oi]` output; `state` is used for rows printed without a State column."""
    rows: list[SsRow] = []
    lines: list[str] = []           # the current row's lines
    has_netid = False
    stray: list[str] = []           # lines that fit nowhere, kept in the next (or last) row's info

    def flush():
        if lines:
            rows.append(_row(lines, state, has_netid))
            if stray:
                rows[-1].info.setdefault("unparsed", []).extend(stray)
                stray.clear()

    for line in text.splitlines():
        if not line.strip():
            if lines and line:          # the empty `-i` line of a socket without info
                lines.append(line)
            continue
        if line[0] in " \t":
            if lines:
                lines.append(line)
            else:
                stray.append(line.strip())
            continue
        first = line.split(None, 1)[0]
        if first in ("State", "Netid", "Recv-Q"):
            has_netid = first == "Netid"
            continue
        flush()
        lines = [line]
        if not _looks_like_row(line, has_netid):
            lines = []
            stray.append(line.strip())
    flush()
    if stray and rows:
        rows[-1].info.setdefault("unparsed", []).extend(stray)
    return rows


def _looks_like_row(line: str, has_netid: bool) -> bool:
    words = line.split()[1 if has_netid else 0:]
    if len(words) >= 5 and _INT_RE.fullmatch(words[1]) and _INT_RE.fullmatch(words[2]):
        return True         # State Recv-Q Send-Q Local Peer
    return len(words) >= 4 and bool(_INT_RE.fullmatch(words[0]) and _INT_RE.fullmatch(words[1]))


def _row(lines: list[str], default_state: str | None, has_netid: bool) -> SsRow:
    words = lines[0].split()
    info: dict = {}
    if has_netid:
        info["netid"] = words.pop(0)
    if _INT_RE.fullmatch(words[0]):
        state = default_state       # single-state filter: no State column
    else:
        state = words.pop(0)
    recv_q, send_q, local, peer = int(words[0]), int(words[1]), words[2], words[3]
    rest = " ".join(words[4:] + [l.strip() for l in lines[1:]])
    timer, tokens = None, []
    for token in split_tokens(rest):
        m = _TIMER_RE.match(token)
        if m and timer is None and _DURATION_RE.fullmatch(m["time"]):
            timer = Timer(m["name"], parse_duration(m["time"]), int(m["retrans"]))
        else:
            tokens.append(token)        # an unknown timer spelling stays in info["timer"]
    info.update(_info(tokens))
    laddr, lport, ldev = split_endpoint(local)
    paddr, pport, pdev = split_endpoint(peer)
    return SsRow(state=state, recv_q=recv_q, send_q=send_q, local=laddr, local_port=lport,
                 peer=paddr, peer_port=pport, timer=timer, info=info, raw="\n".join(lines),
                 local_dev=ldev, peer_dev=pdev)


def split_endpoint(text: str) -> tuple[str, int | None, str | None]:
    """'[::1]:5002' -> ('::1', 5002, None); '127.0.0.53%lo:53' -> ('127.0.0.53', 53, 'lo'); '*:*' -> ('*', None, None)."""
    host, _, port = text.rpartition(":")
    if not host:                    # no colon at all: keep what was printed
        host, port = text, "*"
    dev = None
    if host.startswith("["):
        end = host.find("]")
        if end > 0:
            host, suffix = host[1:end], host[end + 1:]
            if suffix.startswith("%"):
                dev = suffix[1:]
    elif "%" in host:
        host, _, dev = host.partition("%")
    return host, (int(port) if port.isdigit() else None), dev


def parse_duration(text: str) -> float:
    """Seconds from ss's print_ms_timer() text: '59sec' 59.0, '024ms' 0.024, '9.500ms' 9.5, '2min' 120.0."""
    m = _DURATION_RE.fullmatch(text)
    if not m:
        raise ValueError(f"not an ss timer duration: {text!r}")
    seconds = 60 * int(m["min"] or 0) + int(m["sec"] or 0) + int(m["ms"] or 0) / 1000
    if m["frac"]:
        seconds += int(m["frac"]) / 10 ** len(m["frac"])
    return seconds


def split_tokens(text: str) -> list[str]:
    """Split on blanks outside parentheses: 'a bbr:(bw:1,mrtt:2) b' -> ['a', 'bbr:(bw:1,mrtt:2)', 'b']."""
    return _TOKEN_RE.findall(text)


# A token: runs of non-blank characters and parenthesised groups (blanks allowed inside; an unclosed
# group runs to the end of the text).
_TOKEN_RE = re.compile(r"(?:\([^()]*\)?|[^\s(])+")


def parse_info(text: str) -> dict:
    """The `-i` line as a dict (values typed by `_value`); flag words such as `ts sack cubic` map to True."""
    return _info(split_tokens(text))


def _info(tokens: list[str]) -> dict:
    info: dict = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token in _SPACED_KEYS and i + 1 < len(tokens):     # "send 115143111111bps"
            info[token] = tokens[i + 1]
            i += 2
            continue
        key, sep, value = token.partition(":")
        if sep and key and not key.startswith("("):
            info[key] = _value(value)
        else:
            info.setdefault(token, True)    # "bbr" (the cc name) then "bbr:(...)" keeps the dict
        i += 1
    return info


def _value(text: str):
    """'204' -> 204, '0.008' -> 0.008, '7,7' -> (7, 7), '0/2' -> (0, 2), '0.03/0.01' -> (0.03, 0.01),
    '(bw:1bps,mrtt:0.5)' -> {'bw': '1bps', 'mrtt': 0.5}; anything else stays the printed string."""
    if _INT_RE.fullmatch(text):
        return int(text)
    if _FLOAT_RE.fullmatch(text):
        return float(text)
    for sep in (",", "/"):
        parts = text.split(sep)
        if len(parts) == 2 and all(_INT_RE.fullmatch(p) or _FLOAT_RE.fullmatch(p) for p in parts):
            return tuple(_value(p) for p in parts)
    if text.startswith("(") and text.endswith(")"):
        pairs = [p.partition(":") for p in text[1:-1].split(",")]
        if pairs and all(sep and key for key, sep, _ in pairs):
            return {key: _value(value) for key, _, value in pairs}
    return text
