"""tracefs instances of our own for the `sock:inet_sock_set_state` tracepoint.

Each case reads from an instance of its own (own buffer), whose event times are made comparable with
time.monotonic(): `Instance.offset` is added to a printed time. Creating an instance costs ~2 ms and
removing one ~30 ms on this kind of machine (RCU grace periods in the kernel, under a lock every
instance shares), so a per-process `InstancePool` prepares the next instance in a background thread
while a case runs and removes used ones behind it; `close()` (at exit, on SIGTERM) waits until every
instance it made is gone.

The clock: setting an instance's trace_clock to mono resets its buffers under that same machine-wide
lock (~21 ms, as much again as the rmdir), so where the kernel's default clock (`local`, sched_clock)
is the TSC and the same on every CPU, the instance keeps it and is calibrated instead: before its
event is enabled, markers written to its trace_marker between two time.monotonic() reads give the
offset (to ~1 us: the tightest of CALIBRATION_MARKERS brackets is ~1.6 us). Once per process the
offset is measured on every CPU; if they disagree by more than CPU_AGREEMENT, or the clocksource is
not the TSC (a TCG guest whose TSC the kernel marked unstable), instances are set to mono as before.
Drift between the two clocks measured here: ~0.1 us a second (1.2 us over 10 s).
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import fcntl
import os
import re
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout

from . import background, names
from .errors import SetupError
from .timefactor import scaled
from .wait import wait_until

TRACEFS = "/sys/kernel/tracing"
EVENT = "events/sock/inet_sock_set_state"


LOCK_DIR = "/run/socklab"
MNT_DETACH = 2
_users_fd: int | None = None        # this process's shared lock: "a socklab process uses tracefs here"
_users_lock = threading.Lock()


def _is_mounted() -> bool:
    return os.path.isdir(os.path.join(TRACEFS, "instances"))


def _lock_path(what: str) -> str:
    """A lock file per mount namespace (a private mount namespace has a tracefs mount of its own)."""
    return os.path.join(LOCK_DIR, f"tracefs-{os.stat('/proc/self/ns/mnt').st_ino}.{what}")


def _open_lock(what: str) -> int:
    os.makedirs(LOCK_DIR, exist_ok=True)
    return os.open(_lock_path(what), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)


def ensure_mounted() -> str | None:
    """Mount tracefs if needed; return None when usable, else the reason it is not.

    Race-free across processes: the check and the mount happen under an flock of a lock file in
    /run/socklab, and an EBUSY from the mount (another program mounting it at the same moment) is
    checked again rather than reported. When socklab mounted tracefs, the last socklab process to
    use it unmounts it at exit (`release_mount`), so the host's mounts are left as found."""
    if _is_mounted():
        _register_user()
        if _is_mounted():       # still: the last user unmounts only while no other holds the users lock
            return _event_missing()
    if not os.path.isdir(TRACEFS):
        return f"{TRACEFS} does not exist (kernel built without tracefs)"
    try:
        lock = _open_lock("mount")
    except OSError as exc:
        return f"cannot mount tracefs at {TRACEFS}: cannot create the lock file in {LOCK_DIR}: {exc.strerror} " \
               f"(needs root / CAP_SYS_ADMIN)"
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_mounted():
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.mount(b"nodev", TRACEFS.encode(), b"tracefs", 0, None) != 0:
                err = ctypes.get_errno()
                if not (err == errno.EBUSY and _is_mounted()):   # EBUSY: someone else (not socklab) mounted it
                    hint = " (needs root / CAP_SYS_ADMIN)" if err in (errno.EPERM, errno.EACCES) else ""
                    return f"cannot mount tracefs at {TRACEFS}: {os.strerror(err)}{hint}"
            else:
                with open(_lock_path("mounted-by-socklab"), "w") as fh:
                    fh.write(f"{os.getpid()}\n")
        _register_user()
    finally:
        os.close(lock)
    return _event_missing()


def _register_user() -> None:
    """Hold a shared lock for the rest of this process: another socklab process will not unmount."""
    global _users_fd
    with _users_lock:
        if _users_fd is not None:
            return
        try:
            fd = _open_lock("users")
        except OSError:
            return                  # no /run/socklab (no privileges): nothing of ours to unmount either
        fcntl.flock(fd, fcntl.LOCK_SH)
        _users_fd = fd


def release_mount() -> str | None:
    """At the end of a process: unmount tracefs if socklab mounted it and no other socklab process
    still uses it. Returns what was done (for tests and cleanup), or None."""
    global _users_fd
    with _users_lock:
        fd, _users_fd = _users_fd, None
    if fd is None:
        return None
    try:
        lock = _open_lock("mount")
    except OSError:
        os.close(fd)
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)            # no process can register or mount meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None                             # another socklab process still uses it
        marker = _lock_path("mounted-by-socklab")
        if not os.path.exists(marker) or not _is_mounted():
            return None
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.umount2(TRACEFS.encode(), 0) != 0:
            return f"left {TRACEFS} mounted: {os.strerror(ctypes.get_errno())}"   # someone else holds it open
        os.unlink(marker)
        return f"unmounted {TRACEFS}"
    finally:
        os.close(lock)
        os.close(fd)


def _event_missing():
    if not os.path.isdir(os.path.join(TRACEFS, EVENT)):
        return f"tracepoint sock:inet_sock_set_state not present under {TRACEFS}/events"
    return None


def _write(path, value):
    with open(path, "w") as fh:
        fh.write(value)


CALIBRATION_MARKERS = 5      # markers per calibration; the tightest monotonic bracket is used
CPU_AGREEMENT = 20e-6        # s: the local clock's offsets on the CPUs must agree this closely
CLOCKSOURCE = "/sys/devices/system/clocksource/clocksource0/current_clocksource"
_MARK_RE = re.compile(r"(\d+\.\d+): tracing_mark_write: socklab-cal (\d+)")
_local_clock: dict = {}      # the process's decision: {"usable": bool, "why": str}


def _drain(pipe: int) -> str:
    """Everything a non-blocking trace_pipe holds now, consumed."""
    chunks = []
    while True:
        try:
            chunk = os.read(pipe, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _current_clock(path: str) -> str:
    with open(os.path.join(path, "trace_clock")) as fh:
        m = re.search(r"\[(\S+)\]", fh.read())
    return m[1] if m else "?"


def _tsc_clocksource() -> str | None:
    """None when the kernel's clocksource is the TSC (so sched_clock is stable), else why it is not used."""
    try:
        with open(CLOCKSOURCE) as fh:
            source = fh.read().strip()
    except OSError as exc:
        return f"clocksource unknown ({exc.strerror})"
    return None if source in ("tsc", "tsc-early") else f"clocksource {source}, not the TSC"


def _calibrate(path: str, pipe: int) -> float:
    """CLOCK_MONOTONIC minus the instance's clock, in seconds, from markers written on this CPU (the
    pipe holds nothing else yet: the event is not enabled)."""
    fd = os.open(os.path.join(path, "trace_marker"), os.O_WRONLY)
    try:
        brackets = []
        for i in range(CALIBRATION_MARKERS):
            before = time.monotonic()
            os.write(fd, b"socklab-cal %d" % i)
            brackets.append((time.monotonic() - before, before))
    finally:
        os.close(fd)
    printed = {int(m[2]): float(m[1]) for m in _MARK_RE.finditer(_drain(pipe))}
    if not printed:
        raise ValueError(f"no calibration marker came back through {path}/trace_pipe")
    width, i, before = min((w, i, b) for i, (w, b) in enumerate(brackets) if i in printed)
    return before + width / 2 - printed[i]


def _local_clock_usable(path: str, pipe: int) -> tuple[bool, str]:
    """Once per process: may instances keep the local clock? Checks the clocksource, then calibrates
    on every CPU this process may run on and compares."""
    if not _local_clock:
        why = _tsc_clocksource()
        if why is None:
            offsets = {}
            allowed = os.sched_getaffinity(0)
            try:
                for cpu in sorted(allowed)[:16]:
                    os.sched_setaffinity(0, {cpu})      # this (background) thread only
                    offsets[cpu] = _calibrate(path, pipe)
            except (OSError, ValueError) as exc:
                why = f"cannot calibrate the local clock per CPU: {exc}"
            finally:
                os.sched_setaffinity(0, allowed)
            if why is None and max(offsets.values()) - min(offsets.values()) > CPU_AGREEMENT:
                spread = (max(offsets.values()) - min(offsets.values())) * 1e6
                why = f"the local clock differs between CPUs by {spread:.0f} us"
        _local_clock.update(usable=why is None, why=why or "")
    return _local_clock["usable"], _local_clock["why"]


class Instance:
    """One tracefs instance with the state-change event enabled; a printed event time plus `offset` is
    CLOCK_MONOTONIC (`clock` says how: "mono", or "local" calibrated)."""

    def __init__(self, name: str):
        self.name = name
        self.path = os.path.join(TRACEFS, "instances", name)
        os.mkdir(self.path)
        self._pipe = None
        self.clock_note = ""
        try:
            self.clock, self.offset = _current_clock(self.path), 0.0
            if self.clock != "mono" and (self.clock != "local" or _local_clock.get("usable") is False):
                self._set_mono(_local_clock.get("why") or f"default clock {self.clock}")
            # Opened here, in the pool's background thread: opening (and closing) trace_pipe takes the
            # kernel's global trace_types_lock, which another instance's mkdir or rmdir holds for
            # 20-40 ms; a case that opened it itself would wait that long.
            self._pipe = os.open(os.path.join(self.path, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
            if self.clock == "local":
                usable, why = _local_clock_usable(self.path, self._pipe)
                try:
                    self.offset = _calibrate(self.path, self._pipe) if usable else 0.0
                except (OSError, ValueError) as exc:
                    usable, why = False, f"calibration failed: {exc}"
                if not usable:
                    self._set_mono(why)
            _write(os.path.join(self.path, EVENT, "filter"), "protocol == 6")
            _write(os.path.join(self.path, EVENT, "enable"), "1")
        except BaseException:
            self.close_reader()
            remove_instance(self.path)
            raise

    def _set_mono(self, why: str) -> None:
        _write(os.path.join(self.path, "trace_clock"), "mono")
        self.clock, self.offset, self.clock_note = "mono", 0.0, why

    def read(self) -> str:
        """Consume and return whatever the instance has buffered so far (never blocks)."""
        if self._pipe is None:
            return ""           # released: the instance is being removed
        return _drain(self._pipe)

    def close_reader(self):
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None


def remove_instance(path: str) -> None:
    """Remove the instance; 'already gone' is fine, anything else raises. The kernel disables the
    instance's events itself as it removes it (event_trace_del_tracer): writing 0 to the event's
    enable first cost another grace period under the global trace lock (35 against 26 ms, median of
    8), which the next case's instance waits for when cases are short."""
    # rmdir answers EBUSY while the kernel still holds a reference (a reader's file being released,
    # a fork that has not exec'd yet); retry briefly before calling it a failure.
    def removed():
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            return False
        return True
    wait_until(removed, 3.0, f"removal of tracefs instance {path} (EBUSY)", interval=0.005, error=SetupError)


MADE_HOOKS: list = []     # callables run on each new instance in the background (harness/timewait.py)


class InstancePool:
    """Hands out ready instances; preparing and removing them happens in the background."""

    def __init__(self):
        self._made: dict[str, Instance | None] = {}     # name -> instance (None while being made)
        self._next = background.release(self._make)

    def _make(self) -> Instance:
        name = names.resource_name(names.next_index(), "trace")
        self._made[name] = None
        inst = self._made[name] = Instance(name)
        for hook in list(MADE_HOOKS):      # e.g. the timewait probes enabled while no case waits
            hook(inst)
        return inst

    def get(self, timeout: float = 10.0) -> Instance:
        """A ready instance (prepared while the previous case ran), and start preparing the next unless
        no more cases are expected (more_cases(False))."""
        fut = self._next if self._next is not None else background.release(self._make)
        self._next = background.release(self._make) if _more_cases else None
        try:
            return fut.result(scaled(timeout))
        except FutureTimeout:
            raise SetupError(f"tracefs: no instance prepared within {timeout} s") from None
        except OSError as exc:
            raise SetupError(f"tracefs: cannot create an instance: {exc}") from exc

    def release(self, inst: Instance) -> None:
        """Stop reading and remove the instance, in the background: closing the reader waits for the
        global trace lock and the rmdir for RCU grace periods (~40 ms)."""
        background.release(self._remove, inst)

    def _remove(self, inst: Instance) -> None:
        inst.close_reader()
        remove_instance(inst.path)
        self._made.pop(inst.name, None)

    def close(self) -> None:
        """Remove every instance this pool made, the prepared spare included; safe to call twice."""
        try:
            if self._next is not None:
                self._remove(self._next.result(30))
        except Exception:
            pass
        background.flush()
        for name, inst in list(self._made.items()):
            if inst is not None:
                inst.close_reader()         # a case's instance never released (no lab closed it)
            remove_instance(os.path.join(TRACEFS, "instances", name))
            self._made.pop(name, None)


_pool: InstancePool | None = None
_pool_lock = threading.Lock()
_more_cases = True


def more_cases(expected: bool) -> None:
    """Whether another case is expected in this process after the next `get()` (the pytest plugin
    says so per test from pytest's `nextitem`); without one no spare instance is prepared."""
    global _more_cases
    _more_cases = expected


def pool() -> InstancePool:
    """The process's pool, made on first use and closed at exit."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = InstancePool()
            atexit.register(_pool.close)
        return _pool


def close_pool() -> None:
    """Remove every instance of this process, then give tracefs back (unmounted if socklab mounted it
    and this was its last user)."""
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.close()
            _pool = None
    release_mount()


atexit.register(close_pool)     # registered at import: runs after the pool's own handler


def leftovers() -> list[str]:
    """Our instances whose owner process is gone."""
    base = os.path.join(TRACEFS, "instances")
    try:
        entries = os.listdir(base)
    except OSError:
        return []
    out = []
    for name in entries:
        pid = names.owner_pid(name)
        if pid is not None and not names.pid_alive(pid):
            out.append(os.path.join(base, name))
    return out


def remove_quietly_busy(path: str) -> str | None:
    """Remove a leftover instance; return an error text instead of raising (for `socklab cleanup`)."""
    try:
        remove_instance(path)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return f"{path}: busy (a reader still has it open)"
        return f"{path}: {exc}"
    return None
