"""Running code inside a network namespace without moving the caller.

``setns()`` changes only the calling thread, so work that must happen inside a namespace (opening a
socket, writing /proc/sys/net, talking netlink) runs in a short-lived thread that enters it. A socket
opened there stays in that namespace for its whole life.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading

from .errors import SysctlAbsent

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at `fd`."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def unshare_net() -> None:
    """Give the calling thread a new, empty network namespace."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        if err == errno.EPERM:
            raise SetupError("creating a network namespace needs root or CAP_SYS_ADMIN")
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")


def run_in(fn, *args, netns: str | None = None, new: bool = False):
    """Run fn(*args) in a fresh thread inside namespace `netns` (or a new one) and return its result."""
    box = {}

    def body():
        try:
            if new:
                unshare_net()
            elif netns is not None:
                fd = os.open(netns_path(netns), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    setns(fd)
                finally:
                    os.close(fd)
            box["value"] = fn(*args)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=body, name=f"netns:{netns or 'new'}")
    t.start()
    try:
        t.join()
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM): let the thread finish, so the undo that runs next sees
        # every namespace and link it made.
        t.join()
        raise
    if "error" in box:
        raise box["error"]
    return box.get("value")


def write_sysctl(key: str, value, where: str = "sysctl") -> None:
    """Write a net.* sysctl through /proc/sys of the calling thread's namespace ('net.ipv4.x' form);
    see harness/sysctls.py (a refused key, bad value or read-only key is one SysctlError line; a key
    this kernel lacks raises SysctlAbsent)."""
    from . import sysctls
    sysctls.write(key, value, where)


def read_sysctl(key: str) -> str:
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        with open(path) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        raise SysctlAbsent(f"sysctl {key!r} does not exist in this kernel's network namespaces ({path}; "
                           f"kernel {os.uname().release})") from None


def preexec_enter(netns: str):
    """A subprocess preexec_fn that enters `netns` and dies with its parent (PR_SET_PDEATHSIG)."""
    path = netns_path(netns)

    def enter():
        fd = os.open(path, os.O_RDONLY)
        setns(fd)
        os.close(fd)
        _libc.prctl(1, 9)   # PR_SET_PDEATHSIG, SIGKILL: a killed harness leaves no program behind

    return enter
