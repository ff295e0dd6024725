"""The timewait socket's life from the kernel: kprobe events on the functions that create, move and kill it.

`sock:inet_sock_set_state` never reports TIME_WAIT: when a socket enters TIME_WAIT (or, orphaned,
FIN_WAIT2), a small timewait socket replaces it and the tracepoint shows `... -> CLOSE` at that
moment (see harness/trace.py's TIMEWAIT_NOTE). This module follows the timewait socket itself with
tracefs dynamic events (kprobes), read from the case's own tracefs instance next to the tracepoint:

    __inet_twsk_schedule(tw, timeo, rearm)   tw_sched: rearm=0 when tcp_time_wait() made the timewait
                                             socket (its substate, TIME_WAIT or FIN_WAIT2, already set);
                                             rearm=1 when tcp_timewait_state_process() re-arms it, after
                                             writing the new substate: FIN_WAIT2 -> TIME_WAIT on the
                                             peer's FIN (or TIME_WAIT again on a repeated FIN)
    inet_twsk_kill(tw)                       tw_kill: the timewait socket leaves the tables: its timer ran
                                             out, or it was killed early (a SYN reusing it, an RST, the
                                             namespace going away)

One probe on `__inet_twsk_schedule` sees both the creation (with the substate `tcp_time_wait(sk,
state, timeo)` was given) and the move, and it exists out of line on every kernel since 4.1 (it is
exported); `tcp_time_wait` and `tcp_timewait_state_process` would each need the substate read at
another moment. Candidates tried in order, per role (a function can be inlined or renamed):

    made / moved:  __inet_twsk_schedule
    killed:        inet_twsk_kill, __inet_twsk_kill; else tw_timer_handler (expiry, the timer's
                   address is the argument) together with inet_twsk_deschedule_put (early kills)

Each event reads from the timewait socket (offsets from the kernel's BTF, harness/btf.py): family,
substate, local and peer port and address (v4 and v6), and the inode number of its network
namespace, which says which case it belongs to. A line as the instance prints it:

    <idle>-0 [001] ..s2. 352.0496: tw_sched: (__inet_twsk_schedule+0x0/0x90) rearm=0 sub=5 fam=2
      sport=50000 dport=47116 saddr=0x10012c6 daddr=0x20012c6 saddr6={0,...} daddr6={0,...} netns=4026532890

Dynamic events are global (not per instance): a process makes its group `slab_<pid>` once, when
the first case needs it, enables it in each case's own instance, and removes it at exit; `socklab
cleanup` removes the groups of dead owners (`leftovers`, `remove_group`). Where they cannot be made
(kernel without kprobe events, a function missing, no BTF) `source()` says why, and TIME_WAIT comes
from `ss` only: each case records `timewait_source: "kprobe"` or `"ss (<reason>)"`.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass

from . import btf, names, trace, tracefs
from .errors import SocklabError

DYNAMIC_EVENTS = "dynamic_events"
KPROBE_EVENTS = "kprobe_events"
SUBSTATES = {5: "FIN_WAIT2", 6: "TIME_WAIT"}     # TCP_FIN_WAIT2, TCP_TIME_WAIT
SCHEDULE = ("__inet_twsk_schedule",)
KILL = ("inet_twsk_kill", "__inet_twsk_kill")
KILL_FALLBACK = (("tw_timer_handler", "tw_timer"), ("inet_twsk_deschedule_put", None))

_LINE_RE = re.compile(
    r"^\s*(?P<comm>.*)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:(?P<flags>\S+)\s+)?"
    r"(?P<time>\d+\.\d+):\s+(?P<event>tw_sched|tw_kill|tw_expire|tw_desched):\s+\((?P<where>[^)]*)\)\s*"
    r"(?P<fields>.*?)\s*$")
_FIELD_RE = re.compile(r"(\w+)=(\{[^}]*\}|\S+)")


class ProbeError(SocklabError):
    """A probe could not be made or removed; the message says which and what the kernel answered."""


@dataclass(frozen=True)
class TwEvent:
    """One event in a timewait socket's life, as a probe reported it."""

    time: float             # CLOCK_MONOTONIC seconds (the instance's trace_clock=mono)
    kind: str               # "made", "rearmed" or "killed"
    substate: str           # "FIN_WAIT2" or "TIME_WAIT" (the substate when the event fired)
    family: int             # 4 or 6
    local: str
    local_port: int
    peer: str
    peer_port: int
    netns: int              # inode number of the socket's network namespace
    probe: str = ""         # the function probed
    raw: str = ""

    @property
    def key(self) -> tuple:
        return (self.local, self.local_port, self.peer, self.peer_port)


# -- parsing ------------------------------------------------------------------------------------

def _addr4(value: str) -> str:
    # A __be32 read as a u32 on this machine: its bytes in memory are the address in network order.
    return socket.inet_ntoa(int(value, 0).to_bytes(4, sys.byteorder))


def _addr6(value: str) -> str:
    octets = bytes(int(x, 0) for x in value.strip("{}").split(","))
    if len(octets) != 16:
        raise ValueError(value)
    return socket.inet_ntop(socket.AF_INET6, octets)


def _be16(value: str) -> int:
    return int.from_bytes(int(value, 0).to_bytes(2, sys.byteorder), "big")


def parse_line(line: str, offset: float = 0.0) -> TwEvent | None:
    """The timewait event on one trace line, None for any other line (tracepoint lines included);
    `offset` makes the printed time CLOCK_MONOTONIC (tracefs.Instance.offset)."""
    if "tw_" not in line:       # every event name starts so; the regex costs ~50x this on the others
        return None
    m = _LINE_RE.match(line)
    if not m:
        return None
    f = dict(_FIELD_RE.findall(m["fields"]))
    try:
        sub = SUBSTATES.get(int(f["sub"], 0))
        fam = int(f["fam"], 0)
        if sub is None or fam not in (socket.AF_INET, socket.AF_INET6):
            return None         # not a timewait socket (the fallback probes fire for other timers' owners too)
        v6 = fam == socket.AF_INET6
        event = m["event"]
        kind = {"tw_sched": "rearmed" if int(f.get("rearm", "0"), 0) else "made",
                "tw_kill": "killed", "tw_expire": "killed", "tw_desched": "killed"}[event]
        return TwEvent(time=float(m["time"]) + offset, kind=kind, substate=sub, family=6 if v6 else 4,
                       local=_addr6(f["saddr6"]) if v6 else _addr4(f["saddr"]), local_port=int(f["sport"], 0),
                       peer=_addr6(f["daddr6"]) if v6 else _addr4(f["daddr"]), peer_port=_be16(f["dport"]),
                       netns=int(f["netns"], 0), probe=m["where"].split("+")[0], raw=line.rstrip("\n"))
    except (KeyError, ValueError):
        return None


def parse(text: str, netns=None, offset: float = 0.0) -> list[TwEvent]:
    """Every timewait event in `text`, in time order; only those of namespaces `netns` when given."""
    out = [e for e in (parse_line(line, offset) for line in text.splitlines()) if e is not None]
    if netns is not None:
        out = [e for e in out if e.netns in netns]
    return sorted(out, key=lambda e: e.time)


# -- merging into the tracepoint's histories ------------------------------------------------------

HANDOVER_WINDOW = 0.5    # s: the tracepoint's `-> CLOSE` of the replaced socket follows creation at once


def merge(histories: list, events: list[TwEvent]) -> list:
    """The tracepoint's histories with each timewait socket's life added (transitions marked
    source="timewait"), in place of the `X -> CLOSE` that the replacement shows:

    made in TIME_WAIT from X:   X -> CLOSE  becomes  X -> TIME_WAIT (at the same time)
    made in FIN_WAIT2:          FIN_WAIT2 -> CLOSE is dropped (the socket stays in FIN_WAIT2)
    re-armed in TIME_WAIT after FIN_WAIT2:   + FIN_WAIT2 -> TIME_WAIT
    killed:                     + <substate> -> CLOSE

    A timewait socket with no matching history (its socket's events were not traced) gets a history
    of its own, starting in its first substate.
    """
    for life in lives(events):
        made = life[0]
        hist = _handover(histories, made)
        if hist is None:
            hist = trace.SocketHistory(made.key, [])
            histories.append(hist)
            state = made.substate
        else:
            last = hist.transitions[-1]
            hist.transitions.pop()
            state = made.substate
            # FIN_WAIT2 made a timewait socket in FIN_WAIT2: the state goes on, `-> CLOSE` was only
            # the handover; any other state made it in TIME_WAIT: that is the transition.
            if last.old != made.substate:
                hist.transitions.append(_transition(made, last.old, made.substate, last.time))
        for ev in life if made.kind == "killed" else life[1:]:
            if ev.kind == "rearmed" and ev.substate != state:
                hist.transitions.append(_transition(ev, state, ev.substate))
                state = ev.substate
            elif ev.kind == "killed":
                hist.transitions.append(_transition(ev, state, "CLOSE"))
                break
    histories.sort(key=lambda h: h.transitions[0].time if h.transitions else 0.0)
    return [h for h in histories if h.transitions]


def lives(events: list[TwEvent]) -> list[list[TwEvent]]:
    """The events grouped per timewait socket (same 4-tuple and namespace, from made to killed)."""
    out: list = []
    open_: dict = {}
    for ev in sorted(events, key=lambda e: e.time):
        key = (ev.netns, trace._ip(ev.local), ev.local_port, trace._ip(ev.peer), ev.peer_port)
        life = open_.get(key)
        if life is None or ev.kind == "made":
            life = open_[key] = []
            out.append(life)
        life.append(ev)
        if ev.kind == "killed":
            del open_[key]
    return out


def _handover(histories, made: TwEvent):
    """The history whose last transition is the `-> CLOSE` that replaced its socket by this timewait socket."""
    if made.kind != "made":
        return None
    want = (trace._ip(made.local), made.local_port, trace._ip(made.peer), made.peer_port)
    best = None
    for h in histories:
        if not h.transitions:
            continue
        last = h.transitions[-1]
        if (last.new == "CLOSE" and last.source == "trace"
                and (trace._ip(last.local), last.local_port, trace._ip(last.peer), last.peer_port) == want
                and made.time - 0.001 <= last.time <= made.time + HANDOVER_WINDOW):
            if best is None or last.time < best.transitions[-1].time:
                best = h
    return best


def _transition(ev: TwEvent, old: str, new: str, t: float | None = None) -> trace.Transition:
    return trace.Transition(time=ev.time if t is None else t, family=ev.family, local=ev.local,
                            local_port=ev.local_port, peer=ev.peer, peer_port=ev.peer_port,
                            old=old, new=new, comm=ev.probe, raw=ev.raw, source="timewait")


# -- making, enabling and removing the probes ----------------------------------------------------

def _write_events(line: str) -> None:
    # O_APPEND without truncating (which would remove every dynamic event); not open(..., "a"),
    # whose seek to the end tracefs refuses with EINVAL.
    fd = os.open(os.path.join(tracefs.TRACEFS, DYNAMIC_EVENTS), os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _last_error() -> str:
    try:
        with open(os.path.join(tracefs.TRACEFS, "error_log")) as fh:
            lines = [l.strip() for l in fh if l.strip()]
    except OSError:
        return ""
    return lines[-2] + " " + lines[-1] if len(lines) >= 2 else (lines[-1] if lines else "")


def fetch_args(types: btf.Types, base: str = "$arg1", delta: int = 0) -> str:
    """The kprobe fetch arguments that read a timewait socket at `base` + `delta` bytes."""
    def at(path, typ):
        off = btf.offset_of(types, "inet_timewait_sock", path) + delta
        return f"{off:+d}({base}):{typ}"
    net = btf.offset_of(types, "inet_timewait_sock", "__tw_common.skc_net") + delta
    inum = btf.offset_of(types, "net", "ns.inum")
    return " ".join([
        f"sub={at('tw_substate', 'u8')}", f"fam={at('__tw_common.skc_family', 'u16')}",
        f"sport={at('__tw_common.skc_num', 'u16')}", f"dport={at('__tw_common.skc_dport', 'u16')}",
        f"saddr={at('__tw_common.skc_rcv_saddr', 'x32')}", f"daddr={at('__tw_common.skc_daddr', 'x32')}",
        f"saddr6={at('__tw_common.skc_v6_rcv_saddr', 'u8[16]')}", f"daddr6={at('__tw_common.skc_v6_daddr', 'u8[16]')}",
        f"netns=+{inum}({net:+d}({base})):u32"])


def definitions(group: str, types: btf.Types, exists=None) -> list[str]:
    """The probe definitions for this kernel: [made/moved probe, kill probe(s)]; ProbeError naming
    what is missing. `exists(function)` says whether the kernel has the function (BTF by default)."""
    exists = exists or types.has_function
    sched = next((f for f in SCHEDULE if exists(f)), None)
    if sched is None:
        raise ProbeError(f"no function to probe for a timewait socket's creation (tried {', '.join(SCHEDULE)})")
    out = [f"p:{group}/tw_sched {sched} rearm=$arg3:u8 {fetch_args(types)}"]
    kill = next((f for f in KILL if exists(f)), None)
    if kill is not None:
        out.append(f"p:{group}/tw_kill {kill} {fetch_args(types)}")
        return out
    if not all(exists(f) for f, _ in KILL_FALLBACK):
        raise ProbeError(f"no function to probe for a timewait socket's end (tried {', '.join(KILL)}, "
                         f"{' + '.join(f for f, _ in KILL_FALLBACK)})")
    timer_off = btf.offset_of(types, "inet_timewait_sock", "tw_timer")
    out.append(f"p:{group}/tw_expire tw_timer_handler {fetch_args(types, delta=-timer_off)}")
    out.append(f"p:{group}/tw_desched inet_twsk_deschedule_put {fetch_args(types)}")
    return out


CACHE_DIR = os.path.join(os.environ.get("SOCKLAB_CACHE", "/var/cache/socklab"), "probes")
_GROUP = "GROUP"                 # the event group's place in a cached definition
_CACHED_GROUP = f"p:{_GROUP}/"


def _build_key() -> str:
    """The running kernel build: release, version string and the size of its BTF."""
    u = os.uname()
    try:
        size = os.path.getsize(btf.VMLINUX)
    except OSError:
        size = -1
    import hashlib          # here: only a kernel with kprobe events gets this far (OpenSSL's load, 4 ms)
    return hashlib.sha256(f"{u.release}\0{u.version}\0{size}".encode()).hexdigest()[:16]


def cached_definitions(group: str, cache_dir: str | None = None) -> list[str]:
    """definitions() for this kernel build, kept in CACHE_DIR (SOCKLAB_CACHE, default /var/cache/socklab):
    parsing the kernel's BTF costs every process 0.3 s of CPU (4 s in a TCG guest), and the answer
    only changes with the build. A missing or unreadable cache file is made again (best effort)."""
    cache_dir = cache_dir or CACHE_DIR
    path = os.path.join(cache_dir, f"{os.uname().release}-{_build_key()}.json")
    lines = None
    try:
        with open(path) as fh:
            lines = json.load(fh)
    except (OSError, ValueError):
        pass
    if not (isinstance(lines, list) and lines and all(isinstance(l, str) and l.startswith(_CACHED_GROUP) for l in lines)):
        lines = definitions(_GROUP, btf.load())
        part = f"{path}.{os.getpid()}.tmp"
        try:
            os.makedirs(cache_dir, exist_ok=True)
            with open(part, "w") as fh:
                json.dump(lines, fh)
            os.replace(part, path)
        except OSError:
            pass            # a read-only cache only costs the parse next time
    return [f"p:{group}/" + l[len(_CACHED_GROUP):] for l in lines]


def unavailable() -> str | None:
    """None when this kernel can have kprobe events, else why not."""
    if not os.path.exists(os.path.join(tracefs.TRACEFS, DYNAMIC_EVENTS)):
        return f"{tracefs.TRACEFS}/{DYNAMIC_EVENTS} missing (kernel without dynamic trace events)"
    if not os.path.exists(os.path.join(tracefs.TRACEFS, KPROBE_EVENTS)):
        return "this kernel has no kprobe events (CONFIG_KPROBE_EVENTS off: no kprobe_events in tracefs)"
    return None


class Probes:
    """This process's timewait probes: made once, enabled per instance, removed at exit.

    A kprobe is armed while its event is enabled in some instance, and disarmed (an RCU grace period,
    code patching) when the last one goes. The case instances come and go, so the probes are also
    enabled in an anchor instance of the process's own (`slab-<pid>-<worker>-0-twprobes`, tracing off,
    it records nothing): enabling them in a case's instance is then one write, not an arming.
    """

    def __init__(self, group: str | None = None):
        self.group = group or names.event_group()
        self.events: list[str] = []
        self.reason: str | None = None
        self.anchor: str | None = None
        self.cost = 0.0          # seconds spent making them

    def make(self) -> "Probes":
        t0 = time.monotonic()
        try:
            self.reason = unavailable()
            if self.reason is None:
                self._make()
        finally:
            self.cost = time.monotonic() - t0
        return self

    def _make(self):
        try:
            lines = cached_definitions(self.group)
        except (btf.BTFError, ProbeError) as exc:
            self.reason = str(exc)
            return
        for line in lines:
            name = line.split()[0].split("/", 1)[1]
            try:
                _write_events(line)
            except OSError as exc:
                self.reason = f"cannot make kprobe {line.split()[1]}: {exc.strerror} {_last_error()}".strip()
                self.remove()
                return
            self.events.append(name)
        try:
            self.anchor = os.path.join(tracefs.TRACEFS, "instances", names.resource_name(0, "twprobes"))
            os.mkdir(self.anchor)
            with open(os.path.join(self.anchor, "tracing_on"), "w") as fh:
                fh.write("0")
            self.enable(self.anchor)
        except OSError as exc:
            self.reason = f"cannot enable the kprobes in an instance: {exc.strerror}"
            self.remove()

    @property
    def source(self) -> str:
        return "kprobe" if self.reason is None else f"ss ({self.reason})"

    def enable(self, instance_path: str) -> None:
        """Enable the group's events in one tracefs instance (the case's own)."""
        if self.events:
            with open(os.path.join(instance_path, "events", self.group, "enable"), "w") as fh:
                fh.write("1")

    def remove(self) -> list[str]:
        """Remove the anchor instance and the events (case instances enabling them must be gone
        first); errors as text."""
        if self.anchor is not None:
            err = tracefs.remove_quietly_busy(self.anchor)
            if err:
                return [err]
            self.anchor = None
        errors = remove_group(self.group)
        self.events = []
        return errors


def _defined_events() -> list[tuple[str, str]]:
    """(group, event) of every dynamic event defined now, from `dynamic_events` ('p:GROUP/EVENT ...')."""
    try:
        with open(os.path.join(tracefs.TRACEFS, DYNAMIC_EVENTS)) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        head = line.split()[0] if line.split() else ""
        if ":" in head and "/" in head:
            group, event = head.split(":", 1)[1].split("/", 1)
            out.append((group, event))
    return out


def group_events(group: str) -> list[str]:
    """The event names of dynamic event group `group` now defined in the kernel."""
    return [event for g, event in _defined_events() if g == group]


def groups() -> list[str]:
    """Every group of ours (`slab_<pid>`) with dynamic events defined now."""
    out = []
    for group, _ in _defined_events():
        if names.event_group_owner(group) is not None and group not in out:
            out.append(group)
    return out


def leftovers() -> list[str]:
    """Our event groups whose owner process is gone."""
    return [g for g in groups() if not names.pid_alive(names.event_group_owner(g))]


def remove_group(group: str) -> list[str]:
    """Disable group `group` at the top level and remove its events; 'already gone' is fine.
    Returns error lines (an instance still enabling them keeps them busy)."""
    errors = []
    top = os.path.join(tracefs.TRACEFS, "events", group, "enable")
    try:
        with open(top, "w") as fh:
            fh.write("0")
    except FileNotFoundError:
        pass
    for event in group_events(group):
        try:
            _write_events(f"-:{group}/{event}")
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                continue
            errors.append(f"{group}/{event}: {exc.strerror}" +
                          (" (still enabled in a tracefs instance)" if exc.errno == errno.EBUSY else ""))
    return errors


_probes: Probes | None = None
_lock = threading.Lock()


def probes() -> Probes:
    """The process's probes, made on first use (or the reason they cannot be) and removed at exit."""
    global _probes
    with _lock:
        if _probes is None:
            _probes = Probes().make()
            if _probes.reason is None:
                atexit.register(close)
                tracefs.MADE_HOOKS.append(_prepare)
        return _probes


def _prepare(inst) -> None:
    """Enable the probes in an instance the pool prepares (background), so a case need not."""
    p = _probes
    if p is not None and p.events:
        p.enable(inst.path)
        inst.timewait_enabled = True


def close() -> None:
    """Remove this process's probes: the instances enabling them go first (tracefs pool closed)."""
    global _probes
    with _lock:
        p, _probes = _probes, None
    if _prepare in tracefs.MADE_HOOKS:
        tracefs.MADE_HOOKS.remove(_prepare)
    if p is not None and (p.events or p.anchor):
        tracefs.close_pool()
        errors = p.remove()
        if errors:
            raise ProbeError("timewait probes not removed: " + "; ".join(errors))


def netns_inode(path: str) -> int:
    """The inode number of a network namespace file (/run/netns/NAME): what the probes report."""
    return os.stat(path).st_ino
