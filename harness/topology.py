"""A pair of hosts, each its own network namespace, joined by one veth link (or, routed, a router
namespace between them: client - router - server over two links, each its own prefix).

Everything is created through netlink (pyroute2) and every change is undone last-in-first-out when
the `Topology` context ends, also on failure. Addresses come from 198.18.0.0/15 and 2001:db8::/32,
different for every test of every process so concurrent runs never share an address.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import ipaddress
import os
import socket
import struct
import subprocess
import zlib
from dataclasses import dataclass, field

from . import pyroute2_import  # noqa: F401  (first: pyroute2's modules without its __init__)

from . import names, nsutil
from .rtnl import Batch
from .errors import CommandError, SetupError, StepTimeout, SysctlAbsent
from .sysctls import check_key as check_sysctl_key
from .timefactor import scaled
from .wait import wait_until
from .errors import hide_own_frames as __tracebackhide__  # noqa: F401 (read by pytest)

# IPv6 addresses are usable at once: no duplicate address detection, no router solicitations.
# The ports cases choose (CASE_PORTS) are never handed out as ephemeral ports, so a client's
# random port cannot collide with a port a case binds or filters on.
CASE_PORTS = "50000-50999"
NS_DEFAULT_SYSCTLS = {
    "net.ipv4.ip_local_reserved_ports": CASE_PORTS,
    "net.ipv6.conf.all.accept_dad": 0,
    "net.ipv6.conf.default.accept_dad": 0,
    "net.ipv6.conf.all.router_solicitations": 0,
    "net.ipv6.conf.default.router_solicitations": 0,
    # Fixed buffer limits: the default maximum follows the machine's memory, and with it the window
    # scale a SYN offers (7 in a 2 GB guest, 10 on a 24 GB host). These are the kernel's documented
    # defaults, so every machine and kernel offers wscale 7.
    "net.ipv4.tcp_rmem": "4096 131072 6291456",
    "net.ipv4.tcp_wmem": "4096 16384 4194304",
}
ABSENT = "absent"       # the recorded value of a sysctl the kernel does not have
# Sysctls the cases use that older kernels lack (none of them is in 6.1): where missing, a case runs on
# with the setting recorded as ABSENT. Any other missing sysctl is a typo or a broken kernel: an error.
NEWER_SYSCTLS = frozenset({"net.ipv4.tcp_rto_min_us", "net.ipv4.tcp_rto_max_ms", "net.ipv4.tcp_syn_linear_timeouts"})
FAMILIES = {"ipv4": 4, "ipv6": 6}
ROUTER_SYSCTLS = {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1}


@dataclass(frozen=True)
class Routed:
    """client - router - server: two veth links with their own prefixes, routes via the router,
    forwarding on in the router's namespace only. `server_link_mtu` is the MTU of the router's end of
    the router-server link (a smaller network in the middle: the server's own end keeps the lab's
    MTU, so it still advertises the full MSS); `capture` names the link the capture taps: "client"
    (client-router) or "server" (router-server)."""

    server_link_mtu: int | None = None
    capture: str = "server"

    def __post_init__(self):
        if self.capture not in ("client", "server"):
            raise SetupError(f"Routed(capture={self.capture!r}): the links are 'client' (client-router) "
                             "and 'server' (router-server)")


@dataclass
class Host:
    """One end of the link: a role name ('client', 'server'), its namespace, interface and addresses."""

    role: str
    netns: str
    ifname: str
    ipv4: str
    ipv6: str
    mac: str = ""
    ifindex: int = 0            # in its namespace, set when the link is configured
    sysctls: dict = field(default_factory=dict)
    prefixlen6: int = 64        # routed: 80, so each link's prefix holds the test index (see addresses())

    @property
    def netns_path(self) -> str:
        return nsutil.netns_path(self.netns)

    def addr(self, family: str | int = "ipv4") -> str:
        """This host's address in `family` ('ipv4'/'ipv6' or 4/6)."""
        return self.ipv6 if FAMILIES.get(family, family) == 6 else self.ipv4

    def mac_bytes(self) -> bytes:
        return bytes.fromhex(self.mac.replace(":", ""))

    def set_sysctl(self, key: str, value) -> bool:
        """Set a sysctl inside this host's namespace only (e.g. 'net.ipv4.tcp_fin_timeout'); only net.*
        keys (harness/sysctls.py).

        A newer sysctl this kernel lacks (NEWER_SYSCTLS: tcp_rto_min_us and tcp_syn_linear_timeouts on
        6.1) is recorded as ABSENT in the host's settings and False returned, so the case runs on and
        its record says so; any other missing sysctl raises SysctlAbsent naming it.
        """
        where = f"set_sysctl on host {self.role}"
        check_sysctl_key(key, where)       # before entering anything: a refused key touches nothing
        try:
            nsutil.run_in(nsutil.write_sysctl, key, value, where, netns=self.netns)
        except SysctlAbsent:
            if key not in NEWER_SYSCTLS:
                raise
            self.sysctls[key] = ABSENT
            return False
        self.sysctls[key] = str(value)
        return True

    def get_sysctl(self, key: str) -> str:
        """The sysctl's value in this host's namespace, or ABSENT ('absent') where the kernel lacks it."""
        try:
            return nsutil.run_in(nsutil.read_sysctl, key, netns=self.netns)
        except SysctlAbsent:
            return ABSENT

    def run(self, argv, *, check=True, timeout=10.0, input=None) -> subprocess.CompletedProcess:
        """Run a command inside this host's namespace and wait for it; a failure raises CommandError."""
        try:
            # Started from a thread inside the namespace (the child inherits it): no preexec_fn, so
            # Python can vfork instead of copying this large process for every nft.
            proc = nsutil.run_in(lambda: subprocess.run(list(argv), input=input, capture_output=True, text=True,
                                                        timeout=scaled(timeout)), netns=self.netns)
        except FileNotFoundError:
            raise SetupError(f"command {argv[0]!r} not found; install it (see README set-up)") from None
        except subprocess.TimeoutExpired:
            raise StepTimeout(f"{self.role}: {' '.join(map(str, argv))} still running after {scaled(timeout):g} s") from None
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        return proc


class Topology(contextlib.AbstractContextManager):
    """Two namespaces joined by a veth link: `with Topology() as topo: topo.client, topo.server`."""

    def __init__(self, *, mtu: int = 1500, sysctls: dict | None = None, roles=("client", "server"),
                 index: int | None = None, routed: Routed | None = None):
        self.mtu = mtu
        self.routed = routed
        self.roles = ("client", "router", "server") if routed else tuple(roles)
        self.index = names.next_index() if index is None else index
        self.extra_sysctls = dict(sysctls or {})
        for key in self.extra_sysctls:
            check_sysctl_key(key, "lab_sysctls")
        self.hosts: dict[str, Host] = {}
        # name -> (end, end): the veth links; routed: "client" (client, router) and "server" (router, server)
        self.links: dict[str, tuple[Host, Host]] = {}
        self.capture_link: str | None = None      # the link the capture taps (default: the last)
        self._stack = contextlib.ExitStack()

    def __getattr__(self, role):
        hosts = self.__dict__.get("hosts", {})
        if role in hosts:
            return hosts[role]
        raise AttributeError(role)

    @property
    def interfaces(self) -> list[Host]:
        """Every link end (a router has two: the same role and namespace, two interfaces)."""
        return [end for ends in self.links.values() for end in ends] or list(self.hosts.values())

    def peer_of(self, host: Host) -> Host:
        """The other endpoint of the TCP path: client <-> server (across the router when routed)."""
        ends = [h for h in self.hosts.values() if h.role != "router"]
        if len(ends) != 2 or host.role not in {h.role for h in ends}:
            raise SetupError(f"{host.role} has no peer: peers are the two endpoints {[h.role for h in ends]}")
        a, b = ends
        return b if host.role == a.role else a

    def next_hop(self, host: Host) -> Host:
        """The other end of `host`'s link (the router when routed, else the peer)."""
        for a, b in self.links.values():
            if host is a or host is b:
                return b if host is a else a
        raise SetupError(f"{host.role} ({host.ifname}) is not an end of any link")

    def link(self, name: str | None = None) -> tuple[Host, Host]:
        """The two ends of link `name` (default: the capture link, else the last link)."""
        name = name or self.capture_link or list(self.links)[-1]
        if name not in self.links:
            raise SetupError(f"no link {name!r}; links: {', '.join(self.links)}")
        return self.links[name]

    def host_by_address(self) -> dict:
        """Map every host address to its role name, for naming packet directions."""
        out = {}
        for h in self.interfaces:
            out[h.ipv4] = h.role
            out[str(ipaddress.ip_address(h.ipv6))] = h.role
        return out

    def __enter__(self):
        try:
            self._build()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc):
        self._stack.close()
        return False

    def close(self):
        self._stack.close()

    # -- building ---------------------------------------------------------------------------
    def _build(self):
        if self.routed:
            return self._build_routed()
        self.block = block = claim_block(self.index)
        self._stack.callback(release_block, block)
        v4, v6 = addresses(self.index, block)
        for i, role in enumerate(self.roles):
            self.hosts[role] = Host(role, names.resource_name(self.index, role), names.ifname(self.index, role),
                                    v4[i], v6[i])
        # Registered first: removal is safe if creation fails.
        self._stack.callback(remove_netns, *(host.netns for host in self.hosts.values()))
        self.links = {"link": (self.hosts[self.roles[0]], self.hosts[self.roles[1]])}
        # One thread does all of it: setns() moves only that thread, which ends with the work.
        nsutil.run_in(self._build_in_thread, new=True)

    def _build_routed(self):
        index2 = names.next_index()          # the second link's prefixes (and its router interface name)
        blocks = [claim_block(self.index)]
        self.block = blocks[0]
        self._stack.callback(release_block, blocks[0])
        blocks.append(claim_block(index2))
        self._stack.callback(release_block, blocks[1])
        (v4a, v6a), (v4b, v6b) = addresses(self.index, blocks[0]), addresses(index2, blocks[1])
        router_ns = names.resource_name(self.index, "router")
        client = Host("client", names.resource_name(self.index, "client"), names.ifname(self.index, "client"),
                      v4a[0], v6a[0])
        router_a = Host("router", router_ns, names.ifname(self.index, "router"), v4a[1], v6a[1])
        router_b = Host("router", router_ns, names.ifname(index2, "router"), v4b[0], v6b[0])
        server = Host("server", names.resource_name(self.index, "server"), names.ifname(self.index, "server"),
                      v4b[1], v6b[1])
        self.hosts = {"client": client, "router": router_a, "server": server}
        self.links = {"client": (client, router_a), "server": (router_b, server)}
        for h in (client, router_a, router_b, server):
            h.prefixlen6 = 80       # addresses() puts the index in the fifth group: one prefix per link
        self.capture_link = self.routed.capture
        self._stack.callback(remove_netns, *dict.fromkeys(host.netns for host in self.hosts.values()))
        nsutil.run_in(self._build_routed_in_thread, router_b, new=True)

    def _build_routed_in_thread(self, router_b: Host):
        client, router, server = (self.hosts[r] for r in self.roles)
        fds = {}
        try:
            for host in (client, router, server):
                if host is not client:
                    nsutil.new_netns()
                nsutil.name_netns(host.netns)
                _write_sysctls(host, {**NS_DEFAULT_SYSCTLS, **(ROUTER_SYSCTLS if host is router else {})},
                               self.extra_sysctls)
                if host is router:
                    router_b.sysctls.update({k: str(v) for k, v in ROUTER_SYSCTLS.items()})
                    router.sysctls.update({k: str(v) for k, v in ROUTER_SYSCTLS.items()})
                fds[host.role] = os.open(host.netns_path, os.O_RDONLY | os.O_CLOEXEC)
            small = self.routed.server_link_mtu or self.mtu
            for h in (client, router, router_b, server):
                h.mac = mac_of(h.ifname)
            nsutil.setns(fds["client"])
            Batch().veth(client.ifname, client.mac, self.mtu, router.ifname, router.mac, self.mtu, fds["router"]).send()
            self._link_up(client)          # addresses once every end is up (see _build_in_thread)
            nsutil.setns(fds["router"])
            Batch().veth(router_b.ifname, router_b.mac, small, server.ifname, server.mac, self.mtu, fds["server"]).send()
            self._link_up(router)
            self._link_up(router_b)
            nsutil.setns(fds["server"])
            self._link_up(server)
            self._configure(server).neighbours(server, router_b).default_route(router_b).send()
            nsutil.setns(fds["router"])
            self._configure(router, router_b).neighbours(router, client).neighbours(router_b, server).send()
            nsutil.setns(fds["client"])
            self._configure(client).neighbours(client, router).default_route(router).send()
            _wait_local_routes(client)
            nsutil.setns(fds["router"])
            _wait_local_routes(router, router_b)
            nsutil.setns(fds["server"])
            _wait_local_routes(server)
        finally:
            for fd in fds.values():
                os.close(fd)

    def _build_in_thread(self):
        a, b = (self.hosts[r] for r in self.roles)
        fds = {}
        try:
            for host in (a, b):
                if host is b:
                    nsutil.new_netns()
                nsutil.name_netns(host.netns)
                _write_sysctls(host, NS_DEFAULT_SYSCTLS, self.extra_sysctls)
                fds[host.role] = os.open(host.netns_path, os.O_RDONLY | os.O_CLOEXEC)
            a.mac, b.mac = mac_of(a.ifname), mac_of(b.ifname)
            nsutil.setns(fds[a.role])
            # The veth is born inside the first namespace with its peer inside the second, so it
            # never exists in the host's namespace and disappears with the namespaces.
            Batch().veth(a.ifname, a.mac, self.mtu, b.ifname, b.mac, self.mtu, fds[b.role]).send()
            # Both ends come up before either has an address: an end that is up while its peer is
            # down drops what it sends (the MLD reports of a new address's multicast group), and
            # that drop would show in the case's drop counters.
            self._link_up(a)
            nsutil.setns(fds[b.role])
            self._link_up(b)
            self._configure(b).neighbours(b, a).send()
            nsutil.setns(fds[a.role])
            self._configure(a).neighbours(a, b).send()
            _wait_local_routes(a)
            nsutil.setns(fds[b.role])
            _wait_local_routes(b)
        finally:
            for fd in fds.values():
                os.close(fd)

    @staticmethod
    def _link_up(host: Host):
        """Bring the host's end of its link and its lo up, at once (in the thread's namespace)."""
        idx = host.ifindex = socket.if_nametoindex(host.ifname)   # no link dump
        # One TCP segment per packet: with GSO the veth carries (and the capture sees) one large
        # packet where a real link carries several MSS-sized segments.
        Batch().link_up(idx, gso_max_segs=1).link_up(LOOPBACK_INDEX).send()

    def _configure(self, *hosts: Host) -> "Batch":
        """A batch with the hosts' addresses (same namespace), to which neighbours and routes are added.
        Each host's end is running first (see `_wait_running`)."""
        batch = Batch()
        for host in hosts:
            _wait_running(host)
            batch.addr(host.ifindex, host.ipv4, 30).addr(host.ifindex, host.ipv6, host.prefixlen6, nodad=True)
            host.sysctls.update({k: str(v) for k, v in self.extra_sysctls.items() if host.sysctls.get(k) != ABSENT})
        return batch


LOOPBACK_INDEX = 1      # lo is the first interface of every network namespace
SIOCGIFFLAGS, SIOCETHTOOL, ETHTOOL_GLINK, IFF_RUNNING = 0x8913, 0x8946, 0x0000000A, 0x40
RUNNING_TIMEOUT = 2.0   # s: the kernel's link watch runs within microseconds; this bounds a bug


def _wait_running(host: Host) -> None:
    """Wait (in the thread's namespace) until the host's end is running: its peer's coming up turned
    its carrier on, but the kernel's link watch, a work item of its own, gives the end its queue a
    moment later, and until then whatever the end sends is dropped and counted in its tx_dropped.
    An address added in that moment sends its MLD report into that drop (seen in about 1 of 100
    routed topologies built on a loaded machine: the router's second end, tx_dropped 1). The link
    watch marks the end running (IFF_RUNNING) and gives it its queue under the same lock that
    adding an address takes, so once running is seen the next request comes after it. Asking the
    link state through ethtool runs a pending link watch at once where the kernel's
    ethtool_op_get_link syncs it (recent kernels); elsewhere the wait is a few polls."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        name = host.ifname.encode()

        def running() -> bool:
            ifreq = fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack("16sH22x", name, 0))
            return bool(struct.unpack_from("16sH", ifreq)[1] & IFF_RUNNING)

        if running():
            return
        request = array.array("I", [ETHTOOL_GLINK, 0])
        with contextlib.suppress(OSError):      # only a shortcut: the wait below decides
            fcntl.ioctl(sock, SIOCETHTOOL, struct.pack("16sP16x", name, request.buffer_info()[0]))
        wait_until(running, RUNNING_TIMEOUT, f"{host.role}'s veth end {host.ifname} in {host.netns} running "
                   "(up, with the carrier its peer's coming up gives it)", interval=0.0002, error=SetupError)


LOCAL_ROUTE_TIMEOUT = 5.0  # s: the DAD work waits for the RTNL lock, which a namespace's removal holds long
RTF_LOCAL = 0x80000000


def _has_local_route(address: str) -> bool:
    """Whether the thread's namespace has the local route of its own IPv6 `address` (the kernel's
    /proc view of the IPv6 routes: destination, prefix length, ..., flags, device)."""
    want = ipaddress.IPv6Address(address).packed.hex()
    with open("/proc/thread-self/net/ipv6_route") as fh:
        for line in fh:
            f = line.split()
            if f[0] == want and f[1] == "80" and int(f[8], 16) & RTF_LOCAL:
                return True
    return False


def _wait_local_routes(*hosts: Host) -> None:
    """Wait (in the thread's namespace) until the hosts' IPv6 addresses take packets. Even with
    IFA_F_NODAD, the kernel inserts an IPv6 address's local route from the address's DAD work item
    (addrconf_dad_work -> addrconf_dad_completed -> ip6_ins_rt), which runs asynchronously and takes
    the RTNL lock. Until then the host already sends from the address, but what arrives for it is
    dropped with no counter a case reads: two CI runs lost the first SYN+ACK or SYN of an IPv6
    handshake this way. Measured right after a build: 1 of 600 hosts without the route on a quiet
    machine, 9 of 1200 with three builds running at once (the namespaces' removal holds RTNL)."""
    for host in hosts:
        if not _has_local_route(host.ipv6):
            wait_until(lambda: _has_local_route(host.ipv6), LOCAL_ROUTE_TIMEOUT,
                       f"{host.role}'s IPv6 address {host.ipv6} in {host.netns} taking packets (its local route)",
                       interval=0.0002, error=SetupError)


def mac_of(ifname: str) -> str:
    """The interface's MAC address, chosen by the harness: locally administered, from its unique name
    (so the neighbour entries need no lookup, and a case's frames carry the same addresses each run).
    Five bytes of two checksums of the name (zlib, already loaded by pytest): hashlib would load
    OpenSSL, 4-5 ms of a cold start, for a value that only needs to differ between two names."""
    name = ifname.encode()
    digest = zlib.crc32(name).to_bytes(4, "big") + bytes([zlib.adler32(name) & 0xFF])
    return "02:" + ":".join(f"{b:02x}" for b in digest)


def _write_sysctls(host: Host, fixed: dict, extra: dict) -> None:
    """Write sysctls in the calling thread's namespace (host's): `fixed` must exist; of `extra` (the
    run's and the case's), a NEWER_SYSCTLS one this kernel lacks is recorded as ABSENT on `host`."""
    for key, value in {**fixed, **extra}.items():
        try:
            nsutil.write_sysctl(key, value)
        except SysctlAbsent:
            if key in fixed or key not in NEWER_SYSCTLS:
                raise
            host.sysctls[key] = ABSENT


BLOCKS_DIR = "/run/socklab/v4blocks"
N_BLOCKS = 1 << 15                                   # /30 blocks in 198.18.0.0/15
_held: dict = {}                                     # (blocks_dir, block) -> the open, locked claim file


def claim_block(index: int, *, blocks_dir: str = BLOCKS_DIR, n_blocks: int = N_BLOCKS) -> int:
    """Claim a /30 block of 198.18.0.0/15, so no two running labs, of any process, share an IPv4
    address (the trace is filtered by address).

    A claim is an exclusive flock on the block's file, held while the lab lives: the kernel drops it
    when the owner dies, so there is no moment when a live claim looks dead, and nobody reads the
    file's content to decide (the pid written in it is for people). A block whose file is not locked
    is free, whoever created the file."""
    os.makedirs(blocks_dir, exist_ok=True)
    start = (os.getpid() * 64 + index) % n_blocks
    for k in range(n_blocks):
        block = (start + k) % n_blocks
        fd = _lock_block_file(os.path.join(blocks_dir, str(block)))
        if fd is None:
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[(blocks_dir, block)] = fd
        return block
    raise SetupError(f"all {n_blocks} IPv4 address blocks under {blocks_dir} are claimed by running processes")


def _lock_block_file(path: str) -> int | None:
    """Open and exclusively lock the claim file at `path`; None when a live process holds it."""
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # Between our open and our lock the previous holder may have released (and unlinked) the
        # file: then we hold a lock on a file nobody else will look at. Try again on the new one.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def release_block(block: int, *, blocks_dir: str = BLOCKS_DIR) -> None:
    """Give a claimed block back: remove its file while still holding the lock, then drop the lock."""
    fd = _held.pop((blocks_dir, block), None)
    if fd is None:
        return
    try:
        _unlink_quietly(os.path.join(blocks_dir, str(block)))
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def block_is_free(path: str) -> bool:
    """True when no live process holds the claim at `path` (the lock is tested, not the content)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def stale_blocks(blocks_dir: str = BLOCKS_DIR) -> list[str]:
    """Claim files no live process holds (for `socklab cleanup`)."""
    try:
        entries = os.listdir(blocks_dir)
    except FileNotFoundError:
        return []
    return [os.path.join(blocks_dir, e) for e in sorted(entries) if block_is_free(os.path.join(blocks_dir, e))]


def remove_stale_block(path: str) -> bool:
    """Remove an unheld claim file, under the lock so a process claiming it meanwhile keeps its claim;
    False when a live process holds it (it was claimed again since it was listed)."""
    fd = _lock_block_file(path) if os.path.exists(path) else None
    if fd is None:
        return False
    try:
        _unlink_quietly(path)
    finally:
        os.close(fd)
    return True


def addresses(index: int, block: int | None = None):
    """IPv4 (/30 `block`) and IPv6 (/64) addresses for test `index` of this process: ([a, b], [a6, b6])."""
    pid = os.getpid()
    if block is None:
        block = (pid * 64 + index) % N_BLOCKS
    base = int(ipaddress.IPv4Address("198.18.0.0")) + block * 4
    v4 = [str(ipaddress.IPv4Address(base + 1)), str(ipaddress.IPv4Address(base + 2))]
    net6 = f"2001:db8:{(pid >> 16) & 0xffff:x}:{pid & 0xffff:x}:{index & 0xffff:x}"
    v6 = [str(ipaddress.IPv6Address(f"{net6}::1")), str(ipaddress.IPv6Address(f"{net6}::2"))]
    return v4, v6


def remove_netns(*names_: str) -> None:
    """Kill what still runs inside the namespaces (one look through /proc for all of them) and
    remove them; 'already gone' is not an error."""
    kill_processes_in(*(nsutil.netns_path(name) for name in names_))
    for name in names_:
        try:
            nsutil.unname_netns(name)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EINVAL):
                raise


def processes_in(*paths: str) -> list[int]:
    """Live (non-zombie) processes whose network namespace is one of those bound at `paths`."""
    wanted = set()
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        wanted.add((st.st_dev, st.st_ino))
    if not wanted:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (ns.st_dev, ns.st_ino) in wanted and names.pid_alive(int(entry)):
            found.append(int(entry))
    return sorted(found)


def kill_processes_in(*paths: str, sig: int = 9) -> list[int]:
    """SIGKILL every process whose network namespace is one of those bound at `paths`; return their pids."""
    killed = []
    for pid in processes_in(*paths):
        try:
            os.kill(pid, sig)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed
