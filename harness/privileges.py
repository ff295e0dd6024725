"""Whether this process may build labs: root, or CAP_NET_ADMIN and CAP_SYS_ADMIN."""

from __future__ import annotations

import shutil

CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21
REASON = ("socklab: needs root or CAP_NET_ADMIN+CAP_SYS_ADMIN to create network namespaces "
          "(run as root, or in a container started with --privileged)")


def effective_caps() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing() -> str | None:
    """None when labs can be built here, else the one-line reason privileged cases skip."""
    caps = effective_caps()
    if not (caps >> CAP_NET_ADMIN & 1 and caps >> CAP_SYS_ADMIN & 1):
        return REASON
    return None


def missing_tools() -> list[str]:
    """Install hints for the system tools the harness runs (ss from iproute2, nft from nftables)."""
    hints = []
    if not shutil.which("ss"):
        hints.append("ss not found: apt-get install -y iproute2")
    if not shutil.which("nft"):
        hints.append("nft not found: apt-get install -y nftables")
    return hints
