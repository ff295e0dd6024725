"""tracefs instances of our own for the `sock:inet_sock_set_state` tracepoint.

Each case reads from an instance of its own (own buffer, trace_clock=mono so event times compare
with time.monotonic()). Creating an instance costs ~30 ms and removing one ~40 ms on this kind of
machine (RCU grace periods in the kernel), so a per-process `InstancePool` prepares the next instance
in a background thread while a case runs and removes used ones behind it; `close()` (at exit, on
SIGTERM) waits until every instance it made is gone.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import os
import threading
from concurrent.futures import TimeoutError as FutureTimeout

from . import background, names
from .errors import SetupError
from .timefactor import scaled
from .wait import wait_until

TRACEFS = "/sys/kernel/tracing"
EVENT = "events/sock/inet_sock_set_state"


def ensure_mounted() -> str | None:
    """Mount tracefs if needed; return None when usable, else the reason it is not."""
    if os.path.isdir(os.path.join(TRACEFS, "instances")):
        return _event_missing()
    if not os.path.isdir(TRACEFS):
        return f"{TRACEFS} does not exist (kernel built without tracefs)"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", TRACEFS.encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        return f"cannot mount tracefs at {TRACEFS}: {os.strerror(err)} (needs root / CAP_SYS_ADMIN)"
    return _event_missing()


def _event_missing():
    if not os.path.isdir(os.path.join(TRACEFS, EVENT)):
        return f"tracepoint sock:inet_sock_set_state not present under {TRACEFS}/events"
    return None


def _write(path, value):
    with open(path, "w") as fh:
        fh.write(value)


class Instance:
    """One tracefs instance with the state-change event enabled and the mono clock."""

    def __init__(self, name: str):
        self.name = name
        self.path = os.path.join(TRACEFS, "instances", name)
        os.mkdir(self.path)
        try:
            _write(os.path.join(self.path, "trace_clock"), "mono")
            _write(os.path.join(self.path, EVENT, "filter"), "protocol == 6")
            _write(os.path.join(self.path, EVENT, "enable"), "1")
        except BaseException:
            remove_instance(self.path)
            raise
        self._pipe = None

    def read(self) -> str:
        """Consume and return whatever the instance has buffered so far (never blocks)."""
        if self._pipe is None:
            self._pipe = os.open(os.path.join(self.path, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
        chunks = []
        while True:
            try:
                chunk = os.read(self._pipe, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def fileno(self) -> int:
        self.read()
        return self._pipe

    def close_reader(self):
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None


def remove_instance(path: str) -> None:
    """Disable the event and remove the instance; 'already gone' is fine, anything else raises."""
    try:
        _write(os.path.join(path, EVENT, "enable"), "0")
    except FileNotFoundError:
        return
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
        self._made: set[str] = set()
        self._next = background.submit(self._make)

    def _make(self) -> Instance:
        name = names.resource_name(names.next_index(), "trace")
        self._made.add(name)
        inst = Instance(name)
        for hook in list(MADE_HOOKS):      # e.g. the timewait probes enabled while no case waits
            hook(inst)
        return inst

    def get(self, timeout: float = 10.0) -> Instance:
        """A ready instance (prepared while the previous case ran), and start preparing the next."""
        fut, self._next = self._next, background.submit(self._make)
        try:
            return fut.result(scaled(timeout))
        except FutureTimeout:
            raise SetupError(f"tracefs: no instance prepared within {timeout} s") from None
        except OSError as exc:
            raise SetupError(f"tracefs: cannot create an instance: {exc}") from exc

    def release(self, inst: Instance) -> None:
        """Stop reading and remove the instance (in the background: the rmdir waits ~40 ms)."""
        inst.close_reader()
        background.submit(self._remove, inst)

    def _remove(self, inst: Instance) -> None:
        remove_instance(inst.path)
        self._made.discard(inst.name)

    def close(self) -> None:
        """Remove every instance this pool made, the prepared spare included; safe to call twice."""
        try:
            spare = self._next.result(30)
            self._remove(spare)
        except Exception:
            pass
        background.flush()
        for name in list(self._made):
            remove_instance(os.path.join(TRACEFS, "instances", name))
            self._made.discard(name)


_pool: InstancePool | None = None
_pool_lock = threading.Lock()


def pool() -> InstancePool:
    """The process's pool, made on first use and closed at exit."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = InstancePool()
            atexit.register(_pool.close)
        return _pool


def close_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.close()
            _pool = None


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
