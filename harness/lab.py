"""The lab of one test case: two hosts, their socket programs, and everything that observes them.

`with Lab(family="ipv4") as lab:` builds the topology, starts the packet capture and the state
trace before the first step, starts a client and a server program, and on exit drains the
observers, writes the case's artifacts (pcap, `ss` text, transitions, timeline, steps) and undoes
everything last-in-first-out, also when the case failed or was interrupted.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import re
import time
from typing import TYPE_CHECKING, NamedTuple

# Set-up's modules only: what the steps, the record and the report use is imported where it is used,
# and ahead in a thread while the first case's steps wait (harness/importahead.py).
from . import background, nsutil, timewait, trace, tracefs
from .capture import Capture
from .errors import ExpectationFailed, StepTimeout, TraceUnavailable, UnknownRole, check_port
from .errors import hide_own_frames as __tracebackhide__  # noqa: F401 (read by pytest)
from .command import Command
from . import launcher
from .program import Call, Program, close_all
from .segment import windows
from .timefactor import scaled
from .timeline import Timeline
from .topology import ABSENT, Topology
from .wait import POLL, wait_until

if TYPE_CHECKING:
    from . import ss
    from .sockdiag import SockDiag

IDLE_LOOK = 0.05    # seconds: the longest pause of a wait on sockets or counters without a frame on the link

_open_labs: set = set()   # labs still open when the interpreter exits are torn down then


class Pair(NamedTuple):
    """A connection a case set up: the connecting socket, the accepted one, the connecting port."""

    client: object
    server: object
    client_port: int


def select_segments(segs, *, port=None, src=None, flags=None, since=None, dropped=None) -> list:
    """The segments matching every filter given (see Lab.segments)."""
    return [s for s in segs
            if (port is None or port in (s.sport, s.dport)) and (src is None or s.src == src)
            and (flags is None or all(f in s.flags for f in flags)) and (since is None or s.time >= since)
            and (dropped is None or bool(s.dropped_by) == dropped)]


@atexit.register
def _close_leftover_labs():
    for lab in list(_open_labs):
        lab.close()


class Lab(contextlib.AbstractContextManager):
    """One case's hosts, programs and observers; see the module docstring."""

    def __init__(self, *, family: str = "ipv4", mtu: int = 1500, sysctls: dict | None = None,
                 artifacts_dir: str | None = None, ss_each_step: bool = False, trace_states: bool = True,
                 call_timeout: float = 10.0, roles=("client", "server"), name: str = "case",
                 start_programs: bool = True, routed=None):
        self.family, self.mtu, self.name = family, mtu, name
        self.sysctls = dict(sysctls or {})
        self.artifacts_dir = artifacts_dir
        self.ss_each_step = ss_each_step
        self.trace_states = trace_states
        self.call_timeout = call_timeout
        self.roles = roles                        # the hosts that get a socket program (never the router)
        self.routed = routed                      # harness.topology.Routed: client - router - server
        self.start_programs = start_programs
        self.snapshots: list[ss.Snapshot] = []
        self.calls: list[Call] = []
        self.notes: list[tuple[float, str]] = []
        self.programs: dict[str, Program] = {}
        self.commands: list[Command] = []
        self.trace_lines: list[str] = []
        self._parse_cache: dict = {}
        self._stack = contextlib.ExitStack()
        self._finished = False
        self._segs: list = []
        self._diags: dict[str, SockDiag] = {}
        self.faults = None
        self.experiment: str | None = None
        self.articles: list[str] = []
        self.judges: list = []                    # harness.judge.Judge objects the plugin runs on the record
        self.facts: dict = {}                     # lab.observe(name, value)
        self.counters: list[tuple] = []           # (t, role, label, values) of lab.netstat(role, label=)
        self.verdicts: list = []                  # VerdictRecord, judged after the steps
        self.timing_dependent: dict = {}          # aspect -> why, from the case's timing_dependent markers
        self.outcome = None                       # record.Outcome the plugin hands over before the record is written
        self.written = None                       # the Future writing the artifacts (background), once submitted
        self.trace_lost: dict | None = None        # {"count": n or None, "lines": [...]} when the trace lost events
        self._trace_held = None                   # (tracefs pool, this case's instance) until it goes back
        self.drops: dict | None = None             # drop counters per host at the end of the case

    # -- set-up and tear-down ---------------------------------------------------------------
    def __enter__(self):
        _open_labs.add(self)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self):
        self.start = time.monotonic()
        self.timeline = Timeline(self.start)
        if self.start_programs:
            launcher.launcher()     # the first lab of a process: the launcher starts while the namespaces are made
        self.topology = self._stack.enter_context(Topology(mtu=self.mtu, sysctls=self.sysctls, roles=self.roles,
                                                                    routed=self.routed))
        for role, host in self.topology.hosts.items():
            for key in (k for k, v in host.sysctls.items() if v == ABSENT):
                self.note(f"sysctl {key}={self.sysctls[key]} not set: this kernel has no {key} (recorded as absent)",
                          side=role)
        self.trace = None
        self.trace_unavailable = tracefs.ensure_mounted() if self.trace_states else "trace_states=False"
        if not self.trace_unavailable:
            pool = tracefs.pool()
            self.trace = pool.get()
            self._trace_held = (pool, self.trace)
            self._stack.callback(self._release_trace)
        self.netns_inodes = {timewait.netns_inode(h.netns_path) for h in self.topology.hosts.values()}
        self.timewait_source = self._timewait_probes()
        self.capture = self._stack.enter_context(Capture(self.topology))
        from .faults import Faults
        self.faults = Faults(self.topology, self.capture)
        self._stack.callback(self.faults.clear)
        started = []
        self._stack.callback(close_all, started)     # told at once, then reaped: their exits overlap
        for role in self.roles if self.start_programs else ():
            prog = Program(self.topology.hosts[role], role, family=self.family, on_call=self._on_call,
                           output_dir=self.artifacts_dir, call_timeout=self.call_timeout, epoch=self.start).start()
            self.programs[role] = prog
            started.append(prog)
        self._later = self._stack.enter_context(contextlib.ExitStack())   # programs and commands started
        self._stack.callback(self._write_artifacts)
        self._stack.callback(self.finish)     # runs first on exit: drained while everything is alive
        self.setup_done = time.monotonic()

    def _timewait_probes(self) -> str:
        """Enable the process's timewait probes in this case's instance; return where TIME_WAIT comes from."""
        if self.trace is None:
            return f"ss (state trace unavailable: {self.trace_unavailable})"
        probes = timewait.probes()
        if not getattr(self.trace, "timewait_enabled", False):    # prepared before the probes existed
            probes.enable(self.trace.path)
        return probes.source

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        try:
            self._stack.close()
        finally:
            _open_labs.discard(self)

    # -- the pieces a case uses -------------------------------------------------------------
    def __getattr__(self, role):
        programs = self.__dict__.get("programs", {})
        if role in programs:
            return programs[role]
        raise AttributeError(role)

    @property
    def client(self) -> Program:
        """The client host's socket program (a `Program`: `.socket()`, `.fork()`, `.exit()`, `.kill()`)."""
        return self._program("client")

    @property
    def server(self) -> Program:
        """The server host's socket program (a `Program`); `lab.program("server", name)` starts another."""
        return self._program("server")

    @property
    def faults(self):
        """Faults on the path (`harness.faults.Faults`): `drop`, `hold`, `delay`, `block_output`; removed at the end."""
        return self._faults

    @faults.setter
    def faults(self, value):
        self._faults = value

    def _program(self, role: str) -> Program:
        try:
            return self.__dict__["programs"][role]
        except KeyError:
            raise AttributeError(f"this lab has no {role} program (roles {self.roles}, "
                                 f"start_programs={self.start_programs})") from None

    @property
    def hosts(self) -> Topology:
        return self.topology

    def host(self, role: str, where: str = "lab"):
        """The host named `role`; an unknown role is one line naming the roles there are."""
        try:
            return self.topology.hosts[role]
        except KeyError:
            raise UnknownRole(f"{where}: unknown role {role!r}; this lab's hosts are "
                              f"{', '.join(sorted(self.topology.hosts))}") from None

    def peer(self, role: str = "client", **kw):
        """An injecting peer (harness/peer.py) on host `role`, speaking to the far end of the path
        through this lab's capture and faults; keywords go to `Peer` (sport=, isn=, window=):

            with lab.peer("client") as peer:
                peer.syn(PORT, options=[])
        """
        from .peer import Peer
        host = self.host(role, "lab.peer")
        return Peer(host, self.topology.peer_of(host), self.capture, self.faults, family=self.family,
                    hop=self.topology.next_hop(host), note=self.note, clock=self.clock, **kw)

    def addr(self, role: str) -> str:
        """The address of host `role` in this case's family."""
        return self.topology.hosts[role].addr(self.family)

    def establish(self, port: int, *, backlog: int = 16):
        """Set-up for cases about what comes after: a listener on `port`, blocked in accept() while the
        client connects. Returns (listener, the server's accepted socket, the client's socket)."""
        listener = self.listen(port, backlog=backlog)
        pair = self.connect(listener, port)
        return listener, pair.server, pair.client

    def listen(self, port: int, *, backlog: int = 16, role: str = "server"):
        """A socket of host `role` bound to `port` and listening (backlog `backlog`)."""
        listener = self.programs[role].socket()
        listener.bind(port)
        listener.listen(backlog)
        return listener

    def connect(self, listener, port: int, *, accept_first: bool = True, role: str = "client") -> "Pair":
        """A new connection from host `role` to `listener` on `port`: Pair(client, server, client_port).

        accept_first=True: the listener's program is blocked in accept() while the client connects
        (the child is handed over at once); False: the client connects first and accept() then takes
        the child from the accept queue."""
        to = self.topology.peer_of(self.topology.hosts[role])
        if accept_first:
            accepting = listener.accept(wait=False)
            accepting.wait_blocked("inet_csk_accept", timeout=10)   # asleep in accept() before the SYN leaves
            cli = self.programs[role].socket()
            cli.connect(to, port)
            conn = accepting.wait()
        else:
            cli = self.programs[role].socket()
            cli.connect(to, port)
            conn = listener.accept()
        return Pair(cli, conn, conn.peer_port)      # the accepted socket knows the client's port

    def mss(self, mtu: int | None = None) -> int:
        """The MSS the kernel advertises on this link: MTU minus IP and TCP headers (40 or 60 bytes)."""
        return (mtu or self.mtu) - (60 if self.family == "ipv6" else 40)

    def program(self, role: str, name: str) -> Program:
        """Another socket program in host `role` (e.g. a second server process)."""
        prog = Program(self.topology.hosts[role], name, family=self.family, on_call=self._on_call,
                       output_dir=self.artifacts_dir, call_timeout=self.call_timeout, epoch=self.start).start()
        self.programs[name] = prog
        self._later.callback(prog.close)     # after finish(): what it still holds is recorded
        return prog

    def command(self, role: str, argv, name: str | None = None) -> Command:
        """Run any command (a user's own server, say) inside host `role`; stopped at the end of the case."""
        cmd = Command(self.topology.hosts[role], argv, name=name, output_dir=self.artifacts_dir)
        self.commands.append(cmd)
        self._later.callback(cmd.stop)
        cmd.start()
        self.note(f"started {cmd.name}: {' '.join(cmd.argv)}", side=role)
        return cmd

    def set_sysctl(self, role: str, key: str, value) -> None:
        """Set a sysctl inside one host's namespace for the rest of the case."""
        if self.host(role, "lab.set_sysctl").set_sysctl(key, value):
            self.note(f"sysctl {key}={value}", side=role)
        else:
            self.note(f"sysctl {key}={value} not set: this kernel has no {key} (recorded as absent)", side=role)

    def hold(self, seconds: float, why: str) -> None:
        """A pause that is part of the experiment (keep a state for a moment), named in the timeline."""
        self.note(f"hold {seconds:g} s: {why}")
        time.sleep(seconds)

    def observe(self, name: str, value) -> None:
        """Record a value the claim's judge reads (`record.fact(name)`): a measurement the other
        observers cannot make (a timer read at a moment, a call's data). JSON-able values only."""
        self.facts[name] = value
        self.note(f"observed {name} = {value!r}")

    def clock(self, t: float | None = None) -> str:
        """A CLOCK_MONOTONIC time (default: now) as the timeline counts: '+421.2 ms' since the case started."""
        return f"+{((time.monotonic() if t is None else t) - self.start) * 1000:.1f} ms"

    def note(self, text: str, side: str = "client") -> None:
        t = time.monotonic()
        self.notes.append((t, text))
        self.timeline.add(t, "note", side, text)

    def _on_call(self, call: Call):
        self.calls.append(call)
        side = call.role or call.program.split(".")[0]     # a program of its own still sits in its host
        self.timeline.add(call.t0 if not call.background else call.t1, "call", side, call.text())
        if self.ss_each_step:
            self.ss(f"after {call.text()}")

    # -- observation --------------------------------------------------------------------------
    def ss(self, label: str | None = None) -> dict:
        """Snapshot `ss` in every host now; returns {role: Snapshot} and keeps them for the report.

        The kernel's sock_diag answer is recorded now and the rows read from it; `ss -tanoi` prints
        the recorded answer as the case's artifacts are written (SOCKLAB_SS=end, the default), or
        after the whole run (=replay, socklab matrix's guests). SOCKLAB_SS=live runs `ss` now
        instead (see harness/ss.py mode())."""
        from . import ss
        label = label or f"checkpoint {len(self.snapshots) // len(self.topology.hosts) + 1}"
        out = {}
        hosts = self.topology.hosts
        mode = ss.mode()
        if mode == "live":
            snaps = ss.take_all([host.netns for host in hosts.values()], label=label)
        else:
            snaps = [self.sockets(role, label=label, as_ss=True) for role in hosts]   # keeps the answer: snap.dump
            for snap in snaps:
                snap.print_when_written = mode == "end"
        for role, snap in zip(hosts, snaps):
            snap.role = role
            self.snapshots.append(snap)
            self.timeline.add(snap.time, "ss", role, f"[{label}] " + (", ".join(snap.states()) or "no sockets"))
            out[role] = snap
        return out

    def segments(self, port: int | None = None, *, src: str | None = None, flags: str | None = None,
                 since: float | None = None, dropped: bool | None = None) -> list:
        """Every TCP segment on the link so far (drained), optionally only those of one `port`, sent by
        `src` ('client'), carrying every flag letter in `flags` ('F', 'R', 'S.'), at or after
        monotonic time `since`, or (not) dropped by a fault rule."""
        check_port(port, "lab.segments")
        self.capture.drain()
        return select_segments(self.capture.segments(), port=port, src=src, flags=flags, since=since,
                               dropped=dropped)

    def _release_trace(self):
        """Give the case's tracefs instance back (its removal goes on in the background); once."""
        held, self._trace_held = self._trace_held, None
        if held is not None:
            pool, inst = held
            pool.release(inst)

    def _read_trace(self):
        if self.trace is not None and self._trace_held is not None:     # not after finish() gave it back
            lines = [l for l in self.trace.read().splitlines() if l.strip()]
            self.trace_lines.extend(trace.lines_of(lines, self.addresses(), self.netns_inodes))

    def own_transitions(self) -> list:
        """The raw transitions of this case's sockets (the trace instance may hold other tests' events).

        Lost events (`[LOST n EVENTS]`) do not stop the record: what was read is returned and the
        loss is kept in `trace_lost` (case.json, report); expectations on transitions still fail."""
        if self.trace is None:
            raise TraceUnavailable(f"kernel state transitions unavailable: {self.trace_unavailable}")
        addrs = self.addresses()
        try:
            events = self._parsed("tracepoint")
        except trace.TraceEventsLost as exc:
            self.trace_lost = {"count": exc.count, "lines": list(exc.lines)}
            events = exc.transitions
        return [t for t in events if t.time >= self.start and (t.local in addrs or t.peer in addrs)]

    def timewait_events(self) -> list:
        """The timewait probes' events of this case's namespaces and addresses (harness/timewait.py); []
        without probes. The address test matters: a namespace's inode number is reused as soon as a
        namespace is freed, and a freed namespace's timewait sockets end (tw_kill) as it goes, so
        another case's events can carry this case's inode (seen in TCG guests)."""
        addrs = {trace._ip(a) for a in self.addresses()}     # v4-mapped IPv6 compares as its IPv4 form
        return [e for e in self._parsed("timewait")
                if e.time >= self.start and (trace._ip(e.local) in addrs or trace._ip(e.peer) in addrs)]

    def _parsed(self, kind: str):
        """The trace lines read so far as "tracepoint" transitions or "timewait" probe events, parsed
        once for as long as no line is added."""
        key = (kind, len(self.trace_lines))
        if key not in self._parse_cache:
            text = "\n".join(self.trace_lines)
            try:
                offset = self.trace.offset if self.trace is not None else 0.0
                value = (trace.parse(text, offset) if kind == "tracepoint"
                         else timewait.parse(text, self.netns_inodes, offset))
                self._parse_cache[key] = (value, None)
            except trace.TraceEventsLost as exc:
                self._parse_cache[key] = (None, exc)
        value, error = self._parse_cache[key]
        if error is not None:
            raise error
        return value

    def transitions(self, port: int | None = None, *, merge_timewait: bool = False) -> list:
        """State histories of the case's sockets from the kernel's tracepoint (optionally one port);
        with merge_timewait=True, the timewait sockets' lives from the probes are merged in."""
        check_port(port, "lab.transitions")
        if self.trace is None:
            raise TraceUnavailable(f"kernel state transitions unavailable: {self.trace_unavailable}")
        self.capture.drain()
        self._read_trace()
        try:
            events = [t for t in self._parsed("tracepoint") if t.time >= self.start]
        except trace.TraceEventsLost as exc:
            raise trace.TraceEventsLost(exc.count, exc.cpus, exc.lines, exc.transitions) from None
        hists = trace.group_by_socket(events, self.addresses(), self.connect_calls())
        if merge_timewait:
            hists = timewait.merge(hists, self.timewait_events())
        if port is not None:
            hists = [h for h in hists if port in (h.key[1], h.key[3])]
        return hists

    def history(self, role: str, port: int | None = None, *, listener: bool = False):
        """The one socket history whose local address is host `role`'s (and port), or a clear error."""
        local = self.host(role, "lab.history").addr(self.family)
        hists = [h for h in self.transitions(port) if h.key[0] == local]
        hists = [h for h in hists if (h.states()[1:2] == ["LISTEN"]) == listener]
        if len(hists) != 1:
            shown = "\n  ".join(str(h) for h in self.transitions()) or "none"
            raise ExpectationFailed(f"expected exactly one {'listening ' if listener else ''}socket of "
                                    f"{role} (port {port}) in the trace, found {len(hists)}:\n  {shown}")
        return hists[0]

    def connect_calls(self) -> list:
        """(t0, t1, local address, local port) of every connect() call, to place the trace's port-0 events."""
        return [(c.t0, c.t1, self.addr(c.role), c.local_port or 0) for c in self.calls if c.op == "connect" and c.role]

    def addresses(self) -> set:
        return {h.addr(f) for h in self.topology.interfaces for f in ("ipv4", "ipv6")}

    def netstat(self, role: str, label: str | None = None) -> dict:
        """The kernel's TCP counters in host `role`'s namespace: {'TcpExt': {...}, 'Tcp': {...}, ...};
        with a `label` they are kept in the record (`record.counter(role, label, name)`)."""
        def read():
            with open("/proc/thread-self/net/netstat") as a, open("/proc/thread-self/net/snmp") as b:
                return a.read() + b.read()
        out = {}
        lines = nsutil.run_in(read, netns=self.topology.hosts[role].netns).splitlines()
        for names, values in zip(lines[::2], lines[1::2]):
            group = names.split(":", 1)[0]
            out[group] = dict(zip(names.split()[1:], (int(v) for v in values.split()[1:])))
        if label:
            self.counters.append((time.monotonic(), role, label, out))
        return out

    def drop_counters(self) -> dict:
        """Where segments can be lost, per host, read at the end of the case (its namespaces are its
        own, so the counts are the case's): the veth's and lo's rx/tx drops and errors
        (/proc/net/dev) and every nonzero drop, overflow, discard or error counter of the
        namespace's IP and TCP statistics (e.g. TcpExt ListenDrops, ListenOverflows, TCPBacklogDrop)."""
        out = {}
        for role, host in self.topology.hosts.items():
            dev, stats = nsutil.run_in(_read_drop_files, netns=host.netns)
            links = {}
            for line in dev.splitlines()[2:]:
                name, _, fields = line.partition(":")
                f = fields.split()
                if name.strip() in (host.ifname, "lo") and len(f) >= 12:
                    links[name.strip()] = {"rx_packets": int(f[1]), "rx_errors": int(f[2]), "rx_dropped": int(f[3]),
                                           "tx_packets": int(f[9]), "tx_errors": int(f[10]), "tx_dropped": int(f[11])}
            counters = {}
            lines = stats.splitlines()
            for names, values in zip(lines[::2], lines[1::2]):
                fields = values.split()
                for i, key in _droppy_columns(names):
                    v = fields[i] if i < len(fields) else ""
                    if v.lstrip("-").isdigit() and int(v):
                        counters[key] = int(v)
            out[role] = {"links": links, "counters": counters}
        return out

    def _link_activity(self):
        """The pause between two looks of a wait on sockets or counters, which change when a segment
        arrives (or a timer fires): until a frame crosses the captured link or IDLE_LOOK seconds pass;
        for the two looks after a frame at most POLL (the receiving kernel may act on the frame just
        after the tap saw it). Looking every POLL instead costs a sock_diag dump each, mostly for nothing."""
        after_frame = [0]

        def pause(left: float) -> None:
            soon = after_frame[0] > 0
            after_frame[0] = max(0, after_frame[0] - 1)
            if self.capture.wait_frame(min(POLL if soon else IDLE_LOOK, left)):
                after_frame[0] = 2
        return pause

    def wait_counter(self, role: str, counter: str, at_least: int, *, group: str = "TcpExt",
                     timeout: float = 2.0, required: bool = True) -> int:
        """Wait until the kernel counter (e.g. TcpExt ListenOverflows) in host `role` reaches `at_least`.

        required=False: an observation, not a condition; at the deadline return the last value seen
        (noted in the timeline) and let the claim's judge decide.
        """
        seen = [None]

        def reached():
            seen[0] = self.netstat(role)[group].get(counter, 0)
            return seen[0] >= at_least
        try:
            wait_until(reached, timeout, f"{role}: {group} {counter} >= {at_least}", pause=self._link_activity(),
                       explain=lambda: f"{role}: {group} {counter} still {seen[0]} after {timeout} s, expected >= "
                                       f"{at_least} (given up at {self.clock()})")
        except StepTimeout:
            if required:
                raise
            self.note(f"not within {timeout:g} s: {role} {group} {counter} >= {at_least} (still {seen[0]})")
        return seen[0]

    # -- waiting for events --------------------------------------------------------------------
    def wait_segment(self, predicate, *, timeout: float = 5.0, what: str = "matching the case's condition",
                     required: bool = True):
        """Wait until a segment for which predicate(seg) is true has crossed the link; returns that
        `Segment` (its `.time` is CLOCK_MONOTONIC: `lab.clock(seg.time)` gives '+12.3 ms' since the case
        started, as the timeline counts; `.win` is the raw header window, unscaled).

        required=False: an observation, not a condition; when no such segment comes before the
        deadline, return None (noted in the timeline) and let the claim's judge decide.
        """
        try:
            return self.capture.wait_for(predicate, timeout=timeout, what=what)
        except StepTimeout as exc:
            if required:
                segs = self.capture.segments()
                last = f"last segment at {self.clock(segs[-1].time)}, " if segs else ""
                raise StepTimeout(f"{exc} ({last}given up at {self.clock()})") from None
            self.note(f"not seen within {timeout:g} s: a segment {what}")
            return None

    def sockets(self, role: str, label: str = "sock_diag", *, as_ss: bool = False) -> ss.Snapshot:
        """The TCP sockets of host `role` now, from sock_diag (no process started): rows as `ss` shows
        them; the text is generated from them. For the verbatim `ss -tanoi` text use lab.ss(label)."""
        diag = self._diags.get(role)
        if diag is None:
            from .sockdiag import SockDiag
            diag = self._diags[role] = self._stack.enter_context(SockDiag(self.topology.hosts[role].netns))
        snap = diag.take(label=label, as_ss=as_ss)
        snap.role = role
        return snap

    def next_segment(self, src: str, since: float, what: str, *, port: int | None = None, timeout: float = 5.0):
        """The first segment host `src` sends (on `port`) after `since` (e.g. a call's t0), or None when
        none comes before the deadline: an observation of how a host answered a step, whatever it sent."""
        return self.wait_segment(lambda s: s.src == src and s.time > since and (port is None or port in (s.sport, s.dport)),
                                 timeout=timeout, what=what, required=False)

    def wait_ss(self, role: str, predicate, *, timeout: float = 5.0, what: str = "the awaited state",
                interval: float | None = None, required: bool = True, keep: bool = True):
        """Poll host `role`'s sockets (sock_diag, no process started) until predicate(snapshot) holds;
        returns that `ss.Snapshot` (rows, text; `.time`, `.before`, `.after` on CLOCK_MONOTONIC, see
        `lab.clock`). StepTimeout names the last snapshot.

        It looks again whenever a frame crosses the link (and at least every IDLE_LOOK s); with an
        `interval`, every `interval` seconds instead (wait_gone: bounds on when an entry went away).
        The snapshot that satisfied it is kept under the label `what`. required=False: when the
        deadline passes, keep the last snapshot under `what` anyway and return it (an observation
        for the judge, not a condition). keep=False: a wait that orders the case's steps and is no
        observation: the snapshot is neither kept nor on the timeline (the record stays the same).
        """
        last = [None]

        def holds():
            last[0] = self.sockets(role, label=what)
            return predicate(last[0])
        try:
            wait_until(holds, timeout, f"{role}: {what}", interval=interval or POLL,
                       pause=self._link_activity() if interval is None else None,
                       explain=lambda: f"{role}: {what} not seen in ss within {timeout} s (given up at "
                                       f"{self.clock()}); last ss at {self.clock(last[0].time)}:\n{last[0].text}")
            note = ""
        except StepTimeout:
            if required:
                raise
            note = f": not within {timeout:g} s"
        snap = last[0]
        if keep:
            self.snapshots.append(snap)
            self.timeline.add(snap.time, "ss", role, f"[{what}{note}] " + (", ".join(snap.states()) or "no sockets"))
        return snap

    def read(self, sock, size: int = 65536, *, at_least: int = 1, timeout: float = 5.0, what: str | None = None):
        """recv(size) on `sock` once `at_least` bytes wait in its receive queue (or its connection left
        ESTAB: reset, closed), without blocking: an observation that cannot hang the case when the data
        never comes (the Call's errno is then EAGAIN). The readiness comes from sock_diag (Recv-Q)."""
        if sock.local_port is None:
            sock.getsockname()
        local, peer, peer_addr = sock.local_port, sock.peer_port, sock.peer_addr

        def ready(snap):
            rows = snap.find(local_port=local, peer_port=peer, peer=peer_addr)
            return not rows or rows[0].state != "ESTAB" or rows[0].recv_q >= at_least
        self.wait_ss(sock.program.host.role, ready, timeout=timeout, required=False,
                     what=what or f"{at_least} byte(s) readable on {sock.program.name} fd {sock.fd}")
        return sock.recv(size, flags=["MSG_DONTWAIT"], check=False)

    def wait_gone(self, role: str, present, since: float, *, timeout: float, what: str, interval: float = POLL,
                  required: bool = True):
        """Poll `ss` until present(snapshot) turns false; return (low, high) bounds, in seconds after
        `since`, of when the entry went away (the last snapshot that still had it, the first without).
        required=False: an observation; high is None when the entry was still there at the deadline.
        low is None when no snapshot showed the entry at all."""
        last_seen = [None]

        def gone(snap):
            if present(snap):
                last_seen[0] = snap.before
                return False
            return True
        snap = self.wait_ss(role, gone, timeout=timeout, interval=interval, what=what, required=required)
        return (None if last_seen[0] is None else last_seen[0] - since), (None if present(snap) else snap.after - since)

    # -- expectations ----------------------------------------------------------------------------
    def expect_segments(self, text: str, *, port: int | None = None, title: str = "segments"):
        """Assert the segments on the link match the notation `text` (see harness/notation.py)."""
        check_port(port, "lab.expect_segments")
        from . import expect
        return expect.expect_segments(self.segments(port), text, title=title)

    def expect_ss(self, snapshots: dict, **expected):
        """Assert the `ss` states per host, e.g. expect_ss(snap, client=["ESTAB"], server=["LISTEN", "ESTAB"])."""
        from . import expect
        for role, states in expected.items():
            expect.expect_states(snapshots[role].rows, list(states), side=role)

    def expect_transitions(self, role: str, text: str, *, port: int | None = None, listener: bool = False):
        """Assert one socket's kernel state sequence, e.g. 'CLOSE -> SYN_SENT -> ESTABLISHED'."""
        hist = self.history(role, port, listener=listener)
        from . import expect
        expect.expect_transitions(hist.states(), text)
        return hist

    # -- artifacts -------------------------------------------------------------------------------
    def finish(self):
        """Drain the observers and write the artifacts; runs once, at the end of the case."""
        if self._finished:
            return
        self._finished = True
        self.end = time.monotonic()
        try:
            self.capture.drain()
        except StepTimeout as exc:
            self.note(f"capture drain failed: {exc}")
        self._read_trace()
        try:
            self.drops = self.drop_counters()
        except OSError as exc:      # a namespace already gone (an interrupted case): say so, keep the rest
            self.drops = {"error": str(exc)}
        segs = self.capture.segments()
        for s, win in zip(segs, windows(segs)):
            self.timeline.add(s.time, "segment", "wire", s.text() + (f" {win}" if win else "")
                              + (f" [dropped by {s.dropped_by}]" if s.dropped_by else ""))
        if self.trace is not None:
            for t in self.own_transitions():
                    role = self.role_of(t.local)
                    self.timeline.add(t.time, "state", role, f"{t.local_port}>{t.peer_port} {t.old} -> {t.new}")
            for e in self.timewait_events():
                self.timeline.add(e.time, "state", self.role_of(e.local),
                                  f"{e.local_port}>{e.peer_port} timewait socket {e.kind} in {e.substate}")
            if self.trace_lost:
                self.note(f"the trace lost {self.trace_lost['count'] or 'some'} events: "
                          f"{'; '.join(self.trace_lost['lines'])}")
            # Read for the last time: its removal (RCU grace periods, ~30 ms) starts now, not after
            # the judging and the programs' exits, so a run's end waits less for it.
            self._release_trace()
        if self.faults:
            for t, role, text in self.faults.events:
                self.timeline.add(t, "fault", role, text)
        self._segs = segs

    def judge(self) -> list:
        """Drain the observers and judge the record with the case's judges (the plugin calls this
        after the steps); Unobservable when the record lacks what a claim needs."""
        from .judge import judge_record
        self.finish()
        self.verdicts.extend(judge_record(self.record(), self.judges))
        for v in self.verdicts:
            self.note(f"verdict: {v.verdict}: {v.evidence}" + (f" (decided by {v.setting})" if v.setting else ""))
        return self.verdicts

    def _write_artifacts(self):
        if self.artifacts_dir and self._finished:
            # Everything is collected by now; writing it is file I/O off the case's critical path.
            # background.flush() (session end, exit) waits for it and re-raises any error.
            # The record reads self.outcome there: the plugin changes it only before this submit.
            from . import artifacts
            self.written = background.submit(artifacts.write, self, self._segs)

    def record(self, segs=None):
        """Everything observed in this case, typed (harness.record.CaseRecord; written as case.json)."""
        from . import artifacts
        return artifacts.record(self, self.capture.segments() if segs is None else segs)

    def role_of(self, address: str) -> str:
        for h in self.topology.interfaces:
            if address in (h.ipv4, h.ipv6):
                return h.role
        return "wire"

_DROPPY = re.compile(r"Drop|Overflow|Discard|Err|Prune|Collapse|Fail|Retrans|Timeout|Lost|Loss")


@functools.lru_cache(maxsize=16)
def _droppy_columns(names: str) -> tuple:
    """(column, "Group.Counter") of the drop-like counters in one header line of /proc/net/netstat or snmp."""
    group, *keys = names.split()
    group = group.rstrip(":")
    return tuple((i + 1, f"{group}.{k}") for i, k in enumerate(keys) if _DROPPY.search(k))


def _read_drop_files():
    def read(path):
        with open(path) as fh:
            return fh.read()
    return read("/proc/thread-self/net/dev"), read("/proc/thread-self/net/snmp") + read("/proc/thread-self/net/netstat")
