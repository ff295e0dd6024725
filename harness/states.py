"""The TCP states in each of the spellings socklab meets, and the maps between them.

- kernel: the names `sock:inet_sock_set_state` prints without `TCP_` (ESTABLISHED, SYN_RECV,
  FIN_WAIT1, CLOSE, ...), used in transitions and their expectations;
- ss: what `ss` prints in its State column (ESTAB, SYN-RECV, FIN-WAIT-1, UNCONN, ...);
- rfc: RFC 9293's eleven names (CLOSED, SYN-RECEIVED, FIN-WAIT-1, ...), used by the articles and
  the report's states and diagram tables.
"""

from __future__ import annotations

# (rfc, kernel, ss) for the eleven states of RFC 9293, in the RFC's order.
_TABLE = (
    ("CLOSED", "CLOSE", "UNCONN"),
    ("LISTEN", "LISTEN", "LISTEN"),
    ("SYN-SENT", "SYN_SENT", "SYN-SENT"),
    ("SYN-RECEIVED", "SYN_RECV", "SYN-RECV"),
    ("ESTABLISHED", "ESTABLISHED", "ESTAB"),
    ("FIN-WAIT-1", "FIN_WAIT1", "FIN-WAIT-1"),
    ("FIN-WAIT-2", "FIN_WAIT2", "FIN-WAIT-2"),
    ("CLOSE-WAIT", "CLOSE_WAIT", "CLOSE-WAIT"),
    ("CLOSING", "CLOSING", "CLOSING"),
    ("LAST-ACK", "LAST_ACK", "LAST-ACK"),
    ("TIME-WAIT", "TIME_WAIT", "TIME-WAIT"),
)

RFC = tuple(r for r, _, _ in _TABLE)
KERNEL = tuple(k for _, k, _ in _TABLE) + ("NEW_SYN_RECV",)
SS = tuple(s for _, _, s in _TABLE)

RFC_FOR_KERNEL = {k: r for r, k, _ in _TABLE} | {"NEW_SYN_RECV": "SYN-RECEIVED"}
RFC_FOR_SS = {s: r for r, _, s in _TABLE} | {"CLOSED": "CLOSED"}
SS_FOR_KERNEL = {k: s for _, k, s in _TABLE} | {"NEW_SYN_RECV": "SYN-RECV"}
KERNEL_FOR_SS = {s: k for _, k, s in _TABLE}
KERNEL_FOR_RFC = {r: k for r, k, _ in _TABLE}


def rfc(name: str) -> str:
    """The RFC 9293 name of a state in any of the three spellings (unknown names come back as given)."""
    return RFC_FOR_KERNEL.get(name) or RFC_FOR_SS.get(name) or name


def kernel(name: str) -> str:
    """The kernel's name of a state given in any spelling."""
    if name in RFC_FOR_KERNEL:
        return name
    return KERNEL_FOR_SS.get(name) or KERNEL_FOR_RFC.get(name) or name


def ss(name: str) -> str:
    """ss's spelling of a state given in any spelling."""
    return SS_FOR_KERNEL.get(kernel(name), name)
