"""harness/pyroute2_import.py: the lab side imports pyroute2's modules without its package's __init__
(all of pyroute2, 0.2 s of each process), and pyroute2's own names still work afterwards."""

from __future__ import annotations

import subprocess
import sys

PROBE = r'''
import sys
import harness.rtnl, harness.sockdiag, harness.topology, harness.faults
import pyroute2.netlink.diag
loaded = sorted(m for m in sys.modules if m.startswith("pyroute2"))
print(len(loaded), "pyroute2.ndb.main" in loaded, "pyroute2.iproute" in loaded)
from pyroute2 import IPRoute, NetlinkError
import pyroute2
print(IPRoute.__name__, NetlinkError.__name__, pyroute2.__version__ != "unknown", "pyroute2.ndb.main" in sys.modules)
'''


def test_the_lab_side_loads_only_the_pyroute2_modules_it_uses_and_pyroute2s_names_still_work():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split("\n")
    count, ndb, iproute = out[0].split()
    assert int(count) < 60 and ndb == "False" and iproute == "False", out[0]     # all of pyroute2: 163 modules
    assert out[1] == "IPRoute NetlinkError True True"       # the package's __init__ ran on the first name asked for


LAB_SIDE = r'''
import sys
import harness.lab, harness.sockdiag
print("pyroute2.netlink.diag" in sys.modules, "asyncio" in sys.modules)
'''


def test_the_lab_side_reads_sock_diag_without_pyroute2s_diag_module():
    """harness/sockdiag.py packs and unpacks inet_diag's structs itself: pyroute2's inet_diag module
    (its socket layer imports asyncio and ssl: 40 ms a process) is not imported by the lab side."""
    out = subprocess.run([sys.executable, "-c", LAB_SIDE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
