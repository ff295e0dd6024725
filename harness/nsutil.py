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


MS_BIND, MS_REC, MS_SHARED, MNT_DETACH = 0x1000, 0x4000, 0x100000, 2


def _mount(source: bytes, target: bytes, flags: int) -> int:
    return _libc.mount(source, target, b"none", flags, None)


def name_netns(name: str) -> None:
    """Name the calling thread's network namespace as `ip netns add` names one: an empty file
    /run/netns/NAME with /proc/thread-self/ns/net bind-mounted on it, /run/netns made a shared
    mount first (iproute2's netns_add, as pyroute2.netns.attach ports it; that module imports
    multiprocessing and pickle, 18 ms of a process's start, for these calls)."""
    os.makedirs(NETNS_DIR, exist_ok=True)
    folder = NETNS_DIR.encode()
    if _mount(b"", folder, MS_SHARED | MS_REC) != 0:           # not a mount point yet: make it one
        if _mount(folder, folder, MS_BIND | MS_REC) != 0 or _mount(b"", folder, MS_SHARED | MS_REC) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount --make-shared {NETNS_DIR}: {os.strerror(err)}")
    path = netns_path(name)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    if _mount(b"/proc/thread-self/ns/net", path.encode(), MS_BIND) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind mount of the namespace on {path}: {os.strerror(err)}")


def unname_netns(name: str) -> None:
    """Remove a namespace's name (`ip netns delete`): detach its bind mount, remove the file; the
    kernel frees the namespace when nothing else holds it."""
    path = netns_path(name)
    _libc.umount2(path.encode(), MNT_DETACH)
    os.unlink(path)


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


# -- new namespaces with their own small TCP hash table ----------------------------------------------
# A namespace normally shares the host's TCP established hash table (262144 buckets on a 24 GB
# machine), and every sock_diag dump, which is what the harness's waits poll, walks all of it: 9 ms
# per look at a namespace's sockets. A namespace created from one whose
# net.ipv4.tcp_child_ehash_entries is set (Linux 6.1+) gets a table of its own that size: 0.4 ms.
# So new namespaces are created from a "nursery" namespace of this process (unnamed: the kernel frees
# it when the process ends, however it ends). The two settings the kernel derives from the table's size
# are then set back to what a namespace of the shared table has (tcp_max_syn_backlog = buckets / 128,
# tcp_max_tw_buckets = buckets / 2), so no case sees a difference.
CHILD_EHASH_ENTRIES = 1024
DERIVED_FROM_EHASH = ("net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_max_tw_buckets")
_nursery: dict = {}
_nursery_lock = threading.Lock()


def _make_nursery() -> dict:
    def plain_defaults():
        unshare_net()
        return {key: read_sysctl(key) for key in DERIVED_FROM_EHASH}

    def nursery():
        unshare_net()
        try:
            write_sysctl("net.ipv4.tcp_child_ehash_entries", CHILD_EHASH_ENTRIES)
        except SysctlAbsent:
            return None                      # before Linux 6.1: namespaces share the host's table
        return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    fd = run_in(nursery)          # each makes its own namespace: a bare unshare from the host's
    return {"pid": os.getpid(), "fd": fd, "defaults": run_in(plain_defaults) if fd is not None else {}}


def new_netns() -> None:
    """Give the calling thread a new network namespace: from the nursery where the kernel can, with
    the host-table defaults of the derived settings; else a plain unshare."""
    with _nursery_lock:
        if _nursery.get("pid") != os.getpid():
            _nursery.clear()
            _nursery.update(_make_nursery())
    if _nursery["fd"] is not None:
        setns(_nursery["fd"])
    unshare_net()
    for key, value in _nursery["defaults"].items():
        write_sysctl(key, value)


def run_in(fn, *args, netns: str | None = None, new: bool = False):
    """Run fn(*args) in a fresh thread inside namespace `netns` (or a new one, `new=True`; see
    new_netns) and return its result."""
    box = {}

    def body():
        try:
            if new:
                new_netns()
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
