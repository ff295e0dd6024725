"""harness.peer's scapy import: no routing tables read, the same frames as with them (subprocesses,
since scapy's configuration is process-wide and set at its first import)."""

from __future__ import annotations

import subprocess
import sys

BUILD = """
import sys
{setup}
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.config import conf
e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
t = TCP(sport=40000, dport=50000, flags="S", seq=7, options=[("MSS", 1460), ("SAckOK", b"")])
print(bytes(e / IP(src="198.18.0.1", dst="198.18.0.2", ttl=64, flags="DF") / t).hex())
print(bytes(e / IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=64) / t).hex())
print(len(conf.route.routes), len(conf.route6.routes))
"""


def run(setup: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", BUILD.format(setup=setup)], capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def test_the_peer_imports_scapy_without_routes_and_builds_the_same_frames():
    ours = run("from harness.peer import _scapy_layers; _scapy_layers()")
    default = run("")
    assert ours[:2] == default[:2]                  # IPv4 and IPv6 frames byte for byte
    assert ours[2:] == ["0", "0"]                   # no routing table read
    assert default[2] != "0"                        # scapy's default reads them (lo at least)
