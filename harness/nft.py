"""nft commands inside one host's network namespace (the faults' rules and counters).

They go through libnftables in this process, by the nftables project's own Python binding (Debian's
python3-nftables, which ./bootstrap.sh installs), where the binding is there: an `nft` process costs
about 5 ms of CPU on this machine and 20-40x that in an emulated guest, a command through the
binding well under a millisecond. The binding's netlink socket belongs to the namespace of the
thread that made its context, so the context is made by a thread inside the host's namespace
(nsutil.run_in) and answers for that namespace from any thread. Without the binding, each command
runs the `nft` program inside the namespace, as before; the output is the same text either way.

`Nft(host).run(script, echo=True)` gives the added objects with their handles (`nft --echo --handle`),
`json=True` nft's JSON (`nft -j`). A refused command raises CommandError with nft's own message.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading

from . import background, nsutil
from .errors import CommandError, SetupError

# Where Debian's python3-nftables puts the binding (outside any virtualenv, so loaded by path).
BINDING_FILES = ("/usr/lib/python3/dist-packages/nftables/nftables.py",)


@functools.lru_cache(maxsize=None)
def binding():
    """The binding's Nftables class, or None where neither an importable nor Debian's binding is there."""
    try:
        from nftables import Nftables      # an environment that installed the binding itself
        return Nftables
    except ImportError:
        pass
    for path in BINDING_FILES:
        if os.path.isfile(path):
            spec = importlib.util.spec_from_file_location("socklab_nftables_binding", path)
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
                return module.Nftables
            except (OSError, AttributeError, ImportError):
                return None     # libnftables.so.1 missing or another binding: use the program
    return None


class Nft:
    """nft for one host (a topology Host); close() releases the binding's context."""

    def __init__(self, host):
        self.host = host
        self._ctx = None
        self._lock = threading.Lock()

    def run(self, script: str, *, echo: bool = False, json: bool = False) -> str:
        """Run an nft script (commands, one per line) in the host's namespace; return nft's output."""
        # nft -j reads JSON from a file: a JSON answer is asked for with the command in argv.
        argv = ["nft", "-j", *script.split()] if json else \
            ["nft"] + (["--echo", "--handle"] if echo else []) + ["-f", "-"]
        with self._lock:
            ctx = self._context()
            if ctx is None:
                try:
                    return self.host.run(argv, input=None if json else script).stdout
                except SetupError:
                    raise SetupError("nft not found: faults need nftables (apt-get install -y nftables)") from None
            ctx.set_echo_output(echo)
            ctx.set_handle_output(echo)
            ctx.set_json_output(json)
            rc, out, err = ctx.cmd(script)
        if rc != 0:
            raise CommandError(argv if json else argv + ["<<", script.strip()], rc, out or "", err or "")
        return out or ""

    def _context(self):
        if self._ctx is None:
            cls = binding()
            if cls is None:
                return None
            self._ctx = nsutil.run_in(cls, netns=self.host.netns)
        return self._ctx

    def close(self) -> None:
        """Free the binding's context (its netlink socket would keep the namespace alive), in the
        background: closing the socket waits for nf_tables' pending destroy work, whose RCU grace
        period took 12-15 ms here after a case removed its rules."""
        with self._lock:
            holder, self._ctx = [self._ctx], None
        if holder[0] is not None:
            background.release(holder.clear)     # the last reference goes there: the binding frees the context
