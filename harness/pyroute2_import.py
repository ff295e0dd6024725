"""pyroute2's modules without its package's eager imports.

`import pyroute2.netlink.rtnl.ifinfmsg` first runs pyroute2's `__init__`, which imports all of
pyroute2 (IPRoute, NDB, IPDB, conntrack, ipset, wireguard, plan9, ...: 163 modules, 0.2 s of every
process that builds a lab, a third of one case from a cold start). The harness uses a few of them:
the route-netlink and sock_diag message classes and `netns`. Importing this module first puts a
package module for pyroute2 in `sys.modules` whose `__init__` has not run, so importing a submodule
loads that submodule and what it imports, nothing else. The package's own names
(`from pyroute2 import IPRoute`, for a case or a user's code) still work: the first one asked for
runs the package's `__init__` then (PEP 562 module `__getattr__`). Where pyroute2 was imported before,
nothing changes.
"""

from __future__ import annotations

import importlib.util
import sys


def install() -> None:
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        return                  # not installed: the import that needs it says so
    package = importlib.util.module_from_spec(spec)      # __path__ set, __init__ not run

    def __getattr__(name: str):
        if name.startswith("__") and name.endswith("__") and name not in ("__version__", "__all__"):
            raise AttributeError(name)      # dunders a loader or tool probes for: not a reason to load all
        if importlib.util.find_spec(f"pyroute2.{name}") is not None:
            raise AttributeError(name)      # `from pyroute2 import netns`: the import system then imports it
        del package.__getattr__
        spec.loader.exec_module(package)    # the package's __init__, once, on the first name it exports
        return getattr(package, name)

    package.__getattr__ = __getattr__
    sys.modules["pyroute2"] = package


install()
