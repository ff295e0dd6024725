"""Route-netlink requests sent as one batch: how a topology is built.

A topology takes a dozen requests (the veth, links up, addresses, neighbours, routes). Through
pyroute2's `IPRoute`, each is a round trip through its asyncio core, about 0.85 ms of CPU, and a
socket per namespace costs another millisecond: half of a case's set-up. Here pyroute2's message
classes encode the requests (0.13 ms each), one sendmsg() hands them all to the kernel on a socket of
the calling thread's namespace, and one acknowledgement per request comes back. The first request
the kernel refused raises SetupError naming it and the kernel's error; the kernel goes on with the
rest of the batch, which the caller's clean-up removes with the namespaces.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from . import pyroute2_import  # noqa: F401  (first: pyroute2's modules without its __init__)
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_DELNEIGH, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWNEIGH, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from .errors import SetupError
from .timefactor import scaled

IFF_UP = 0x1
IFA_F_NODAD = 0x02
NUD_PERMANENT = 0x80
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1
NEW = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
NLM_F_REPLACE = 0x100
REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
_HEADER = struct.Struct("=IHHII")       # struct nlmsghdr
ACK_TIMEOUT = 5.0                       # s: the kernel acknowledges at once; this only bounds a bug


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


class Batch:
    """Requests collected, then sent() together in the calling thread's network namespace."""

    def __init__(self):
        self._data: list[bytes] = []
        self._what: list[str] = []

    def _add(self, msg, kind: int, flags: int, what: str) -> "Batch":
        msg["header"]["type"] = kind
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = len(self._data) + 1
        msg.encode()
        self._data.append(bytes(msg.data))
        self._what.append(what)
        return self

    def veth(self, ifname: str, mac: str, mtu: int, peer: str, peer_mac: str, peer_mtu: int, peer_netns_fd: int):
        """A veth pair: `ifname` here, `peer` moved at birth into the namespace of `peer_netns_fd`."""
        msg = ifinfmsg()
        peer_attrs = [("IFLA_IFNAME", peer), ("IFLA_MTU", peer_mtu), ("IFLA_ADDRESS", peer_mac),
                      ("IFLA_NET_NS_FD", peer_netns_fd)]
        msg["attrs"] = [("IFLA_IFNAME", ifname), ("IFLA_MTU", mtu), ("IFLA_ADDRESS", mac),
                        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "veth"),
                                                     ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer_attrs})]})]})]
        return self._add(msg, RTM_NEWLINK, NEW, f"veth {ifname} (peer {peer})")

    def link_up(self, index: int, *, gso_max_segs: int | None = None):
        msg = ifinfmsg()
        msg["index"], msg["flags"], msg["change"] = index, IFF_UP, IFF_UP
        msg["attrs"] = [("IFLA_GSO_MAX_SEGS", gso_max_segs)] if gso_max_segs else []
        return self._add(msg, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK,
                         f"link {index} up" + (f", gso_max_segs {gso_max_segs}" if gso_max_segs else ""))

    def addr(self, index: int, address: str, prefixlen: int, *, nodad: bool = False):
        msg = ifaddrmsg()
        msg["family"], msg["prefixlen"], msg["index"] = _family(address), prefixlen, index
        msg["flags"] = IFA_F_NODAD if nodad else 0
        msg["attrs"] = ([("IFA_LOCAL", address)] if ":" not in address else []) + [("IFA_ADDRESS", address)]
        return self._add(msg, RTM_NEWADDR, NEW, f"address {address}/{prefixlen} on link {index}")

    def neigh(self, index: int, dst: str, lladdr: str, *, replace: bool = False):
        """A permanent neighbour entry: no ARP or neighbour discovery before the first segment
        (replace=True: `ip neigh replace`, whatever entry is there now)."""
        msg = ndmsg()
        msg["family"], msg["ifindex"], msg["state"] = _family(dst), index, NUD_PERMANENT
        msg["attrs"] = [("NDA_DST", dst), ("NDA_LLADDR", lladdr)]
        return self._add(msg, RTM_NEWNEIGH, REPLACE if replace else NEW, f"neighbour {dst} at {lladdr} on link {index}")

    def neigh_del(self, index: int, dst: str):
        """`ip neigh del`: the entry for `dst` on link `index` removed."""
        msg = ndmsg()
        msg["family"], msg["ifindex"] = _family(dst), index
        msg["attrs"] = [("NDA_DST", dst)]
        return self._add(msg, RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, f"removal of neighbour {dst} on link {index}")

    def neighbours(self, host, peer, *, replace: bool = False):
        """Permanent entries for both of the peer's addresses (topology Hosts) on the host's link."""
        return (self.neigh(host.ifindex, peer.ipv4, peer.mac, replace=replace)
                .neigh(host.ifindex, peer.ipv6, peer.mac, replace=replace))

    def default_route(self, gateway):
        """Default routes for both families via the gateway (a topology Host)."""
        return self._route(gateway.ipv4)._route(gateway.ipv6)

    def _route(self, gateway: str):
        msg = rtmsg()
        msg["family"], msg["dst_len"] = _family(gateway), 0
        msg["table"], msg["proto"], msg["scope"], msg["type"] = RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST
        msg["attrs"] = [("RTA_GATEWAY", gateway)]
        return self._add(msg, RTM_NEWROUTE, NEW, f"default route via {gateway}")

    def send(self) -> None:
        """Send every request in one message and read one acknowledgement each."""
        if not self._data:
            return
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as sock:
            sock.bind((0, 0))
            sock.settimeout(scaled(ACK_TIMEOUT))
            sock.sendto(b"".join(self._data), (0, 0))
            acked, failed = set(), None
            while len(acked) < len(self._data):
                try:
                    buf = sock.recv(65536)
                except socket.timeout:
                    missing = [self._what[i] for i in range(len(self._data)) if i + 1 not in acked]
                    raise SetupError(f"netlink: no acknowledgement within {ACK_TIMEOUT} s for: "
                                     + "; ".join(missing)) from None
                offset = 0
                while offset + _HEADER.size <= len(buf):
                    length, kind, _, seq, _ = _HEADER.unpack_from(buf, offset)
                    if kind == NLMSG_ERROR and 1 <= seq <= len(self._data):
                        (code,) = struct.unpack_from("=i", buf, offset + _HEADER.size)
                        acked.add(seq)
                        if code and failed is None:
                            failed = (seq, -code)
                    offset += max(length + 3 & ~3, _HEADER.size)
        if failed:
            seq, err = failed
            raise SetupError(f"netlink: {self._what[seq - 1]}: {os.strerror(err)} "
                             f"({errno.errorcode.get(err, err)})")
        self._data.clear()
        self._what.clear()
