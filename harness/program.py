"""Socket programs driven step by step: the harness side of harness/agent.py.

`Program` is one real process inside a host's namespace; `Socket` is one descriptor in it. Every
call returns a `Call` (return value or errno name, monotonic start and end) or, with ``wait=False``,
a `Pending` to await later. A call that does not return before its deadline raises `StepTimeout`
naming the call; a failed call raises `StepError` unless the step said which errno it expects.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from . import launcher
from .agent import decode_value, encode_value, resolve_option
from .errors import ExpectationFailed, StepError, StepTimeout
from .timefactor import scaled
from .errors import hide_own_frames as __tracebackhide__  # noqa: F401 (read by pytest)
from .wait import wait_until

DEFAULT_CALL_TIMEOUT = 10.0
# The program's own start (an interpreter starting) is harness start-up, not an event a case times:
# 0.05 s idle, over 5 s with 6 workers on 2 busy cores. The deadline only catches a program that
# will never be ready, so it is generous.
READY_TIMEOUT = 30.0


@dataclass
class Call:
    """The record of one step: who called what, with which result, when."""

    program: str
    op: str
    args: dict
    ret: object = None
    errno: str | None = None
    error: str | None = None
    t0: float = 0.0
    t1: float = 0.0
    background: bool = False
    local_port: int | None = None   # connect(): the port the kernel bound, 0 if released again
    role: str = ""                  # the host the program runs in

    @property
    def ok(self) -> bool:
        return self.errno is None and self.error is None

    def text(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items() if k not in ("data",) or len(str(v)) < 20)
        if self.errno:
            res = f"-1 {self.errno}"
        elif self.error:
            res = f"error {self.error}"
        else:
            res = _short(self.ret)
        return f"{self.program}: {self.op}({args}) = {res}"

    def to_json(self) -> dict:
        return {"program": self.program, "op": self.op, "args": self.args, "ret": self.ret, "errno": self.errno,
                "error": self.error, "t0": self.t0, "t1": self.t1, "background": self.background,
                "role": self.role, "local_port": self.local_port}


def _short(value):
    if isinstance(value, str) and len(value) > 24:
        return f"<{len(value)} bytes>"
    return repr(value) if isinstance(value, str) else str(value)


class Pending:
    """A call started with ``wait=False``; `wait()` returns what the blocking call would have."""

    def __init__(self, program, op, args, future, finish):
        self.program, self.op, self.args = program, op, args
        self.sent = time.monotonic()
        self._future, self._finish = future, finish
        self.started: float | None = None     # when the program took the call up (CLOCK_MONOTONIC)
        self.tid: int | None = None           # the program's thread that makes the call
        self.timed_out_after: float | None = None

    def done(self) -> bool:
        return self._future.done()

    def wait_blocked(self, function: str | None = None, timeout: float = 2.0) -> str:
        """Wait until the call sleeps in the kernel; returns where (the kernel function it sleeps in).

        Without `function`: until the call's thread is in state S inside the kernel (not on a futex,
        which is the program itself waiting for a lock). With `function` (e.g. 'inet_csk_accept',
        'sk_wait_data'): until that function is on the thread's kernel stack, read from
        /proc/PID/task/TID/stack.
        """
        last = ["not yet in the kernel"]

        def blocked():
            for tid in self._threads():
                where = _sleeping_in(self.program.pid, tid, function)
                if where and (function is None or function in where[1]):
                    return where[0]
                if where:
                    last[0] = f"sleeping in {where[0]}"
            if self.done():
                raise StepError(f"{self.program.name}: {self.op}() returned at {self.program.clock()} before it "
                                f"blocked in {function or 'the kernel'}")
            return None
        return wait_until(blocked, timeout, f"{self.program.name}: {self.op}() blocked in {function or 'the kernel'}",
                          interval=0.002,
                          explain=lambda: f"{self.program.name}: {self.op}() not blocked in {function or 'the kernel'} "
                                          f"within {timeout} s (given up at {self.program.clock()}; last seen: {last[0]})")

    def _threads(self) -> list:
        """The thread running the call (the agent names it), or with an older agent every thread."""
        if self.tid is not None:
            return [self.tid]
        try:
            return [int(t) for t in os.listdir(f"/proc/{self.program.pid}/task")]
        except OSError:
            return []

    def wait(self, timeout: float | None = None):
        """Await the call's result; StepTimeout naming the call if it has not returned in time."""
        timeout = scaled(self.program.call_timeout if timeout is None else timeout)
        try:
            msg = self._future.result(timeout)
        except FutureTimeout:
            raise StepTimeout(f"{self.program.name}: {self.op}({_args_text(self.args)}) did not return within "
                              f"{timeout:.1f} s (called at {self.program.clock(self.sent)}, given up at "
                              f"{self.program.clock()})") from None
        return self._finish(msg)


# Frames that say "asleep" but not in what: the function after them names the wait.
GENERIC_FRAMES = ("schedule", "__schedule", "schedule_timeout", "schedule_hrtimeout_range", "wait_woken",
                  "io_schedule", "do_syscall_64", "entry_SYSCALL_64_after_hwframe")


def _sleeping_in(pid: int, tid: int, function: str | None):
    """(where, stack text) when thread `tid` of `pid` sleeps in the kernel (state S, a kernel stack or
    wchan, not a futex wait), else None. `where` is the first function of the stack that is not the
    scheduler's, e.g. 'inet_csk_accept', or the function named when it is on the stack."""
    base = f"/proc/{pid}/task/{tid}"
    try:
        with open(f"{base}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        with open(f"{base}/stack") as fh:
            stack = fh.read()
        with open(f"{base}/wchan") as fh:
            wchan = fh.read().strip()
    except OSError:
        return None                     # the thread ended, or no /proc stack on this kernel
    frames = [line.split("]", 1)[-1].strip().split("+", 1)[0] for line in stack.splitlines() if line.strip()]
    if state not in ("S", "D") or "futex" in stack or "futex" in wchan or not (frames or wchan not in ("", "0")):
        return None
    if function and function in stack:
        return function, stack
    where = next((f for f in frames if f not in GENERIC_FRAMES), None) or wchan
    syscall = next((f for f in reversed(frames) if "sys_" in f), None)
    return (f"{where} ({syscall})" if syscall and syscall != where else where), stack


def _args_text(args):
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


class Program:
    """A socket program (harness/agent.py) running inside `host`'s namespace."""

    def __init__(self, host, name: str | None = None, *, family: str = "ipv4", on_call=None,
                 output_dir: str | None = None, call_timeout: float = DEFAULT_CALL_TIMEOUT, epoch: float | None = None,
                 _control=None, _pid=None):
        self.host, self.name, self.family = host, name or host.role, family
        self.epoch = time.monotonic() if epoch is None else epoch    # the case's start: messages count from it
        self.on_call = on_call or (lambda call: None)
        self.output_dir, self.call_timeout = output_dir, call_timeout
        self.calls: list[Call] = []
        self.children: list[Program] = []
        self.exited: str | None = None      # why the process is gone, once it is
        self._futures: dict[int, Future] = {}
        self._started: dict[int, Future] = {}
        self._ids = iter(range(1, 1 << 62))
        self._lock = threading.Lock()
        self._fds: list[int] = []
        self._ready = Future()
        self.protocol_errors: list[str] = []   # messages that could not be understood, reported at the next call
        self._reported = 0
        self.stuck: Pending | None = None      # a foreground call that timed out and has not returned yet
        self._pidfd: int | None = None       # a started program's pidfd (a forked child has none)
        self._reader: threading.Thread | None = None     # reads its control socket, once attached
        self.returncode: int | None = None   # its exit status once reaped (-N: killed by signal N)
        self.pid = _pid
        self._stderr = None
        if _control is not None:
            self._attach(_control)

    def clock(self, t: float | None = None) -> str:
        """A CLOCK_MONOTONIC time (default: now) as the timeline writes it: '+421.2 ms' since the case started."""
        return f"+{((time.monotonic() if t is None else t) - self.epoch) * 1000:.1f} ms"

    # -- process lifecycle ------------------------------------------------------------------
    def start(self) -> "Program":
        """Spawn the agent; returns at once (the first call waits for its readiness message)."""
        ours, theirs = socket.socketpair()
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            self._stderr = open(os.path.join(self.output_dir, f"{self.name}.stderr.txt"), "wb")
        out = self._stderr.fileno() if self._stderr else os.open(os.devnull, os.O_WRONLY)
        try:
            self._launcher = launcher.launcher()
            self.pid, self._pidfd = self._launcher.spawn(self.host.netns_path, theirs, out)
        finally:
            theirs.close()
            if not self._stderr:
                os.close(out)
        self._attach(ours)
        return self

    def _attach(self, control):
        self.control = control
        self._reader = threading.Thread(target=self._read_loop, name=f"agent:{self.name}", daemon=True)
        self._reader.start()

    def wait_ready(self, timeout: float = READY_TIMEOUT):
        try:
            timeout = scaled(timeout)
            self._ready.result(timeout)
        except FutureTimeout:
            raise StepTimeout(f"{self.name}: socket program did not report ready within {timeout} s (at {self.clock()}) "
                              f"(see {self.name}.stderr.txt in the case's artifacts)") from None

    def close(self):
        """End the program (EOF on its control socket) and reap it; kill it if it lingers."""
        self.hang_up()
        self.reap_exit()

    def hang_up(self):
        """The first half of close(): EOF on the control sockets of the program and its children, so
        that several programs can be told at once and then reaped (close_all)."""
        for child in self.children:
            child.hang_up()
        try:
            self.control.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.control.close()

    def reap_exit(self):
        """The second half of close(): wait for the exit (of the children too), kill if it lingers."""
        for child in self.children:
            child.reap_exit()
        if self._pidfd is not None:
            if not launcher.wait_exit(self._pidfd, 1.0):
                launcher.kill(self._pidfd)
                launcher.wait_exit(self._pidfd, 5.0)
            self._collect_status()
        elif self._reader is not None:
            # A forked child is not ours to wait(): its reader ends at the EOF hang_up() made (and
            # marks the program gone); without this join that could come after close_all returned.
            self._reader.join(scaled(5.0))
        if self._stderr:
            self._stderr.close()

    def _read_loop(self):
        buf = b""
        while True:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.control, 65536, 4)
            except OSError:
                data, fds = b"", []
            self._fds.extend(fds)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    self._dispatch(line)
                except Exception as exc:    # one bad message is reported; the loop goes on reading
                    self.protocol_errors.append(f"{self.name}: malformed message {line[:200]!r}: "
                                                f"{type(exc).__name__}: {exc}")
        gone = self.exited or "the socket program's process ended"
        self.exited = gone
        for fut in list(self._started.values()):
            if not fut.done():
                fut.set_result(None)
        for fut in list(self._futures.values()):
            if not fut.done():
                fut.set_result({"gone": gone})
        if not self._ready.done():
            self._ready.set_result({"gone": gone})

    def _dispatch(self, line: bytes) -> None:
        """Route one message by its type: ready, started, result, error (see harness/agent.py)."""
        msg = json.loads(line)
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "ready":
            if self.pid is None:
                self.pid = msg["ready"]
            self._ready.set_result(msg)
        elif kind == "started":
            started = self._started.pop(msg["id"], None)
            if started is not None:
                started.set_result(msg)
        elif kind in ("result", "error"):
            fut = self._futures.pop(msg.get("id"), None)
            if fut is not None:
                fut.set_result(msg if kind == "result" else {**msg, "t0": 0.0, "t1": 0.0})
            elif kind == "error":
                self.protocol_errors.append(f"{self.name}: the program rejected a message: {msg.get('error')}")
            else:
                raise ValueError(f"a result for call id {msg.get('id')!r}, which nobody awaits")
        else:
            raise ValueError(f"unknown message type {kind!r}")

    # -- calls ------------------------------------------------------------------------------
    def call(self, op, args=None, *, wait=True, timeout=None, expect=None, check=True, convert=None):
        """Send one step to the program; see the module docstring for wait/expect/check."""
        args = dict(args or {})
        if self.exited:
            raise StepError(f"{self.name}: {op}({_args_text(args)}) on a program that is gone ({self.exited})")
        if self.stuck is not None:
            # The program reads no step until the call that timed out returns: wait for that (as
            # long as this step may take), and if it does not, say which call holds the program.
            wait_for = self.call_timeout if timeout is None else timeout
            try:
                self.stuck._future.result(wait_for)
            except FutureTimeout:
                raise StepTimeout(f"{self.name}: {op}({_args_text(args)}) not sent: the program is still blocked in "
                                  f"{self.stuck.op}({_args_text(self.stuck.args)}), which did not return within "
                                  f"{self.stuck.timed_out_after:.1f} s (nor in the {wait_for:.1f} s since)") from None
            self.stuck = None
        if len(self.protocol_errors) > self._reported:
            new, self._reported = self.protocol_errors[self._reported:], len(self.protocol_errors)
            raise StepError(f"{op}({_args_text(args)}) not sent: " + "; ".join(new))
        self.wait_ready()
        fut, started = Future(), Future()
        with self._lock:
            ident = next(self._ids)
            self._futures[ident] = fut
            if not wait:
                self._started[ident] = started
            self.control.sendall((json.dumps({"id": ident, "op": op, "args": args, "bg": not wait}) + "\n").encode())
        pending = Pending(self, op, args, fut, lambda msg: self._finish(op, args, msg, not wait, expect, check, convert))
        if wait:
            try:
                return pending.wait(timeout)
            except StepTimeout:
                # The program's command loop is inside this call: the next step says so, by name,
                # instead of timing out on a call the program never read.
                pending.timed_out_after = self.call_timeout if timeout is None else timeout
                self.stuck = pending
                raise
        # Return once the program has taken the call up (its thread is about to enter the kernel);
        # pending.wait_blocked() says when it actually sleeps there.
        try:
            took = started.result(scaled(self.call_timeout))
            if took is not None:
                pending.started, pending.tid = took["started"], took.get("tid")
        except FutureTimeout:
            if not fut.done():
                raise StepTimeout(f"{self.name}: {op}({_args_text(args)}) was not taken up within "
                                  f"{self.call_timeout:.1f} s (given up at {self.clock()})") from None
        return pending

    def _finish(self, op, args, msg, background, expect, check, convert):
        if "gone" in msg:
            raise StepError(f"{self.name}: {op}({_args_text(args)}) never returned: {msg['gone']}")
        call = Call(self.name, op, args, msg.get("ret"), msg.get("errno"), msg.get("error"), msg["t0"], msg["t1"],
                    background, msg.get("local_port"), self.host.role)
        self.calls.append(call)
        self.on_call(call)
        if call.error:
            raise StepError(f"{call.text()}: the socket program rejected the step")
        if expect is not None:
            if call.errno != expect:
                got = f"errno {call.errno}" if call.errno else f"success ({_short(call.ret)})"
                raise ExpectationFailed(f"{self.name}: {op}({_args_text(args)}) expected to fail with {expect}, got {got}")
        elif check and call.errno:
            raise StepError(f"{call.text()} ({msg.get('strerror', '')}); pass expect='{call.errno}' if the case expects it")
        return convert(call) if convert and call.ok else call

    # -- program-level steps ----------------------------------------------------------------
    def socket(self, family: str | None = None, type: str = "stream", **kw):
        """socket(family, type): a new Socket; with expect=/check=False a failing call returns its Call."""
        family = family or self.family
        call = self.call("socket", {"family": family, "type": type}, **kw)
        return Socket(self, call.ret, family) if call.ok else call

    def exit(self, code: int = 0) -> Call:
        """Process exit without close(): the kernel closes every descriptor."""
        call = self.call("exit", {"code": code})
        self.exited = f"exited with status {code} at step {call.op} at {self.clock(call.t0)}"
        self._reap()
        return call

    def kill(self, sig: int = signal.SIGKILL) -> Call:
        """Send `sig` to the process from outside, as `kill -SIG pid` would, and wait until it is gone."""
        t0 = time.monotonic()
        self.exited = f"killed by {signal.Signals(sig).name} at {self.clock(t0)}"   # before the kill: pending calls name it
        os.kill(self.pid, sig)
        self._reap()
        call = Call(self.name, "kill", {"signal": signal.Signals(sig).name}, 0, None, None, t0, time.monotonic(),
                    role=self.host.role)
        self.calls.append(call)
        self.on_call(call)
        return call

    def _reap(self, timeout: float = 5.0):
        timeout = scaled(timeout)
        if self._pidfd is not None:
            if not launcher.wait_exit(self._pidfd, timeout):
                raise StepTimeout(f"{self.name}: process {self.pid} still running {timeout} s after {self.exited} "
                                  f"(given up at {self.clock()})") from None
            self._collect_status()
        else:   # a forked child is not ours to wait(): wait for EOF on its control socket
            self._reader.join(timeout)

    def _collect_status(self):
        """The exit status of the exited process (as subprocess's: -N for signal N), and its pidfd closed."""
        try:
            self.returncode = self._launcher.reap(self.pid)
        finally:
            os.close(self._pidfd)
            self._pidfd = None

    def fork(self) -> "Program":
        """fork(): a child program holding copies of every descriptor, driven like its parent."""
        call = self.call("fork")
        child = Program(self.host, f"{self.name}.child{len(self.children) + 1}", family=self.family,
                        on_call=self.on_call, call_timeout=self.call_timeout, epoch=self.epoch,
                        _control=socket.socket(fileno=self._fds.pop(0)), _pid=call.ret["pid"])
        self.children.append(child)
        return child

    def setrlimit(self, name: str, soft: int, hard: int | None = None) -> Call:
        """setrlimit(RLIMIT_<name>) in the program, e.g. setrlimit('NOFILE', 16)."""
        return self.call("setrlimit", {"name": name, "soft": soft, "hard": hard})

    def sock(self, fd: int, family: str | None = None) -> "Socket":
        """A handle on descriptor `fd` of this program (e.g. one inherited through fork)."""
        return Socket(self, fd, family or self.family)


class Socket:
    """One socket descriptor of a program; its methods are the socket calls."""

    def __init__(self, program: Program, fd: int, family: str):
        self.program, self.fd, self.family = program, fd, family
        self.closed_by: str | None = None
        self.local_port: int | None = None
        self.peer_port: int | None = None
        self.peer_addr: str | None = None     # set by connect() and accept(): ports alone can repeat

    def __repr__(self):
        return f"<Socket {self.program.name} fd={self.fd}>"

    def _call(self, op, args=None, **kw):
        if self.closed_by:
            raise StepError(f"{self.program.name}: {op} on fd {self.fd}, which was already closed by {self.closed_by}")
        return self.program.call(op, {"fd": self.fd, **(args or {})}, **kw)

    def _addr(self, host_or_addr):
        return host_or_addr.addr(self.family) if hasattr(host_or_addr, "addr") else host_or_addr

    def bind(self, port: int = 0, addr=None, **kw) -> Call:
        """bind(addr, port); addr defaults to the program's host address in the socket's family."""
        call = self._call("bind", {"addr": self._addr(addr if addr is not None else self.program.host), "port": port}, **kw)
        if call.ok:
            self.local_port = port or None
        return call

    def listen(self, backlog: int = 128, **kw) -> Call:
        return self._call("listen", {"backlog": backlog}, **kw)

    def connect(self, host_or_addr, port: int, *, nonblocking: bool = False, **kw):
        """connect() to a host (its address in this family) or an address string."""
        result = self._call("connect", {"addr": self._addr(host_or_addr), "port": port, "nonblocking": nonblocking}, **kw)
        self.peer_port, self.peer_addr = port, self._addr(host_or_addr)
        return result

    def wait_connected(self, **kw) -> Call:
        """Finish a non-blocking connect: block until writable and return SO_ERROR as errno."""
        return self._call("wait_connected", **kw)

    def accept(self, **kw):
        """accept(): the connected Socket (or a Pending whose wait() returns it)."""
        return self._call("accept", convert=lambda call: self._accepted(call), **kw)

    def _accepted(self, call):
        s = Socket(self.program, call.ret["fd"], self.family)
        s.local_port, s.peer_port = self.local_port, call.ret["peer"][1]
        s.peer_addr = call.ret["peer"][0]
        s.call = call
        return s

    def send(self, data: str | bytes | None = None, *, size: int | None = None, flags=(), **kw) -> Call:
        """send() `data` (text or bytes) or `size` bytes of 'x'; returns the byte count sent."""
        if isinstance(data, bytes):
            data = data.decode("latin-1")
        return self._call("send", {"data": data, "size": size, "flags": list(flags)}, **kw)

    def sendall(self, data=None, *, size=None, flags=(), **kw) -> Call:
        if isinstance(data, bytes):
            data = data.decode("latin-1")
        return self._call("sendall", {"data": data, "size": size, "flags": list(flags)}, **kw)

    def recv(self, size: int = 65536, *, flags=(), **kw):
        """recv(size, flags): Call.ret is the data received ('' at end of stream)."""
        return self._call("recv", {"size": size, "flags": list(flags)}, **kw)

    def shutdown(self, how: str = "SHUT_WR", **kw) -> Call:
        if how not in ("SHUT_RD", "SHUT_WR", "SHUT_RDWR"):
            raise StepError(f"{self.program.name}: shutdown(how={how!r}): use SHUT_RD, SHUT_WR or SHUT_RDWR")
        return self._call("shutdown", {"how": how}, **kw)

    def close(self, **kw) -> Call:
        call = self._call("close", **kw)
        self.closed_by = f"close() at {self.program.clock(call.t0)}"
        return call

    def dup(self) -> "Socket":
        call = self._call("dup")
        s = Socket(self.program, call.ret, self.family)
        s.local_port, s.peer_port, s.peer_addr = self.local_port, self.peer_port, self.peer_addr
        return s

    def setsockopt(self, name, value, *raw, **kw) -> Call:
        """setsockopt by name, any option of Python's socket module: SO_REUSEADDR, SO_LINGER as (on, secs),
        TCP_NODELAY, TCP_KEEPIDLE, TCP_USER_TIMEOUT, IP_TOS, IPV6_V6ONLY, ...; or raw as
        setsockopt(level, optname, int | bytes), level and optname numbers or constant names."""
        if raw:
            name, value = [name, value], raw[0]
        opt = self._option("setsockopt", name)
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, tuple):
            value = list(value)
        return self._call("setsockopt", {"name": opt, "value": encode_value(value)}, **kw)

    def getsockopt(self, name, optname=None, *, buflen: int | None = None, **kw):
        """getsockopt(name) or getsockopt(level, optname): an int, [on, secs] for SO_LINGER, or with
        buflen= the option's bytes (e.g. getsockopt("TCP_INFO", buflen=104))."""
        opt = self._option("getsockopt", name if optname is None else [name, optname])
        args = {"name": opt, **({"buflen": buflen} if buflen else {})}
        return decode_value(self._call("getsockopt", args, **kw).ret)

    def _option(self, op, name):
        """The option as the agent takes it (a name, or [level, optname]); one clear line if unknown."""
        try:
            resolve_option(name)
        except KeyError as exc:
            raise StepError(f"{self.program.name}: {op}: {exc.args[0]}") from None
        return list(name) if isinstance(name, (list, tuple)) else name

    def getsockname(self):
        addr, port = self._call("getsockname").ret
        self.local_port = port
        return addr, port

    def getpeername(self):
        return tuple(self._call("getpeername").ret)


def close_all(programs) -> None:
    """Close several programs: all told first, then each reaped, so their exits overlap."""
    programs = list(programs)
    for prog in programs:
        prog.hang_up()
    for prog in programs:
        prog.reap_exit()
