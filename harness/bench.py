"""The benchmark the project ships: per-case harness overhead and the connection cases' wall time.

`socklab bench` prints medians over repeated runs. Overhead is one lab built and torn down with no
steps: namespaces, link, addresses, capture, state trace, artifacts, teardown (the socket programs
are measured separately). The connection cases are the real case functions from cases/, each run
end to end (lab set-up, steps, expectations, artifacts, teardown).
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import tempfile
import time

from . import tracefs
from .lab import Lab
from .program import Program
from .topology import Topology

CONNECTION_CASES = ("test_connect_to_bound_port_without_listen_is_refused",
                    "test_listen_without_accept_completes_handshake",
                    "test_accept_then_data_both_ways")


def _median_ms(samples):
    return statistics.median(samples) * 1000


def _time(fn, repeat):
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _load_cases(folder):
    path = os.path.join(folder, "test_setup.py")
    spec = importlib.util.spec_from_file_location("socklab_bench_setup_cases", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_bench(repeat: int, cases_folder: str) -> int:
    tmp = tempfile.mkdtemp(prefix="socklab-bench-")
    tracefs.ensure_mounted()
    # warm-up: imports (scapy), the tracefs pool's first instance, page cache
    with Lab(artifacts_dir=os.path.join(tmp, "warm")) as lab:
        lab.server.socket()

    def topology_only():
        with Topology():
            pass

    rows = [("namespaces + link + addresses (+ teardown)", _time(topology_only, repeat))]
    rows.append(("empty labs back to back (no programs, no steps)", _time(_lab_without_programs(tmp), repeat)))
    with Topology() as topo:
        rows.append(("two socket programs started and stopped", _time(_programs_only(topo), repeat)))
    mod = _load_cases(cases_folder)
    setup, teardown = [], []
    for name in CONNECTION_CASES:
        fn = getattr(mod, name)
        for family in ("ipv4", "ipv6"):
            walls = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                lab = Lab(family=family, artifacts_dir=os.path.join(tmp, name))
                with lab:
                    lab.claim = _claim_of(fn)
                    t1 = time.perf_counter()
                    fn(lab, family)
                    t2 = time.perf_counter()
                t3 = time.perf_counter()
                walls.append(t3 - t0)
                setup.append(t1 - t0)
                teardown.append(t3 - t2)
            rows.append((f"{name}[{family}] end to end", walls))
    rows.insert(2, ("per-case overhead inside the connection cases: set-up + teardown",
                    [a + b for a, b in zip(setup, teardown)]))
    rows.insert(3, ("  of which set-up (topology, capture, trace, programs spawned)", setup))
    rows.insert(4, ("  of which teardown (drain, artifacts, programs, namespaces)", teardown))
    width = max(len(r[0]) for r in rows)
    print(f"socklab bench: {repeat} runs each, medians (min .. max) in ms, on {os.cpu_count()} cores")
    for label, samples in rows:
        print(f"  {label:<{width}}  {_median_ms(samples):8.1f}   ({min(samples) * 1000:.1f} .. {max(samples) * 1000:.1f})")
    tracefs.close_pool()
    return 0


def protocol_waits(run_dir: str, gap: float = 0.05) -> tuple[float, int]:
    """Time the cases spent waiting on kernel timers (retransmissions, timeouts), from their timelines:
    every interval of at least `gap` seconds in which nothing happened (no call, segment, snapshot or
    transition). Returns (seconds summed over all cases, number of cases)."""
    import glob
    import json
    total, n = 0.0, 0
    for path in glob.glob(os.path.join(run_dir, "cases", "*", "timeline.json")):
        with open(path) as fh:
            times = sorted(e["t"] for e in json.load(fh))
        total += sum(b - a for a, b in zip(times, times[1:]) if b - a >= gap)
        n += 1
    return total, n


def run_catalogue(cases_folder: str, workers: str = "2") -> int:
    """The whole default catalogue with pytest -n `workers`: wall time next to the protocol waits."""
    import subprocess
    import sys
    name = f"bench-catalogue-{os.getpid()}"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", cases_folder, "-q", "-n", str(workers),
                           "--socklab-run", name], capture_output=True, text=True)
    wall = time.monotonic() - t0
    waits, n = protocol_waits(os.path.join("reports", name))
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    print(f"socklab bench: catalogue with -n {workers}: {wall:.1f} s wall ({last})")
    print(f"  protocol waits the cases cannot avoid (idle gaps >= 50 ms in {n} case timelines): {waits:.1f} s "
          f"in all, {waits / int(workers):.1f} s per worker")
    return proc.returncode


def _claim_of(fn):
    """The case's @pytest.mark.claim text, as the pytest plugin would set it."""
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "claim":
            return mark.args[0]
    return None


def _lab_without_programs(tmp):
    def run():
        with Lab(artifacts_dir=os.path.join(tmp, "overhead"), start_programs=False):
            pass
    return run


def _programs_only(topo):
    def run():
        progs = [Program(topo.hosts[r], r).start() for r in ("client", "server")]
        for p in progs:
            p.wait_ready()
        for p in progs:
            p.close()
    return run
