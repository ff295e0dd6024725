"""The benchmark the project ships: per-case harness overhead and the connection cases' wall time,
one case from a cold start, five close/shutdown cases next to packetdrill's equivalent scripts, and
(`--catalogue`) the default catalogue's wall next to its limit with the `ss`/`nft` processes it started.

Loaded as a pytest plugin (`-p harness.bench`) under `socklab bench --catalogue`, it counts those
processes in the run it measures; in any other session it does nothing.

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
    """Per-case harness overhead and the connection cases' wall, in this process."""
    from . import tracefs
    from .lab import Lab
    from .topology import Topology
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
                    lab.judges = _judges_of(fn)
                    t1 = time.perf_counter()
                    fn(lab, family)
                    t2 = time.perf_counter()
                    lab.judge()                  # as the plugin does after the steps: part of the teardown
                t3 = time.perf_counter()
                walls.append(t3 - t0)
                setup.append(t1 - t0)
                teardown.append(t3 - t2)
            rows.append((f"{name}[{family}] end to end", walls))
    rows.insert(2, ("per-case overhead inside the connection cases: set-up + teardown (goal <= 30 ms)",
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


def _judges_of(fn) -> list:
    """The judges of the case's @pytest.mark.claim markers, as the pytest plugin runs them."""
    return [mark.args[0] for mark in getattr(fn, "pytestmark", []) if mark.name == "claim"]


def _lab_without_programs(tmp):
    from .lab import Lab

    def run():
        with Lab(artifacts_dir=os.path.join(tmp, "overhead"), start_programs=False):
            pass
    return run


def _programs_only(topo):
    from .program import Program

    def run():
        progs = [Program(topo.hosts[r], r).start() for r in ("client", "server")]
        for p in progs:
            p.wait_ready()
        for p in progs:
            p.close()
    return run


# -- the figures issue 10 asks for: catalogue wall and its limit, cold start, processes, packetdrill ------

# Frames of the harness's waits: a process started while one of them is on the stack is polling.
POLLING_FRAMES = frozenset({"wait_until", "wait_ss", "wait_gone", "wait_for", "wait_segment", "wait_counter",
                            "wait_blocked", "segments", "sockets"})
COUNTED = ("ss", "nft")
COLD_CASE = "cases/test_teardown.py::test_four_way_close[ipv4]"
# Five close/shutdown cases, next to packetdrill scripts of the same exchanges (PACKETDRILL_SCRIPTS).
CLOSE_CASES = ("cases/test_teardown.py::test_four_way_close[ipv4]",
               "cases/test_teardown.py::test_server_that_closes_first_ends_in_time_wait[ipv4]",
               "cases/test_teardown.py::test_linger_zero_close_sends_rst[ipv4]",
               "cases/test_teardown.py::test_close_with_unread_data_resets[ipv4-close]",
               "cases/test_halfclose.py::test_shutdown_write_then_server_close[ipv4-SHUT_WR]")
PACKETDRILL_BUILD = ("build packetdrill from its public source in a temporary folder (never in this repository): "
                     "git clone https://github.com/google/packetdrill /tmp/pd && apt-get install -y bison flex "
                     "&& (cd /tmp/pd/gtests/net/packetdrill && ./configure && make), then "
                     "`socklab bench --packetdrill /tmp/pd/gtests/net/packetdrill/packetdrill`")

_HANDSHAKE = """\
0   socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0  setsockopt(3, SOL_SOCKET, SO_REUSEADDR, [1], 4) = 0
+0  bind(3, ..., ...) = 0
+0  listen(3, 16) = 0
+0  < S 0:0(0) win 65535 <mss 1460,sackOK,nop,nop,nop,wscale 7>
+0  > S. 0:0(0) ack 1 <...>
+0  < . 1:1(0) ack 1 win 512
+0  accept(3, ..., ...) = 4
"""
# The local socket is the one the case's steps act on; packetdrill plays the other side.
PACKETDRILL_SCRIPTS = {
    "four-way close (peer closes first)": _HANDSHAKE + """\
+0  < P. 1:6(5) ack 1 win 512
*   > . 1:1(0) ack 6
+0  read(4, ..., 100) = 5
+0  < F. 6:6(0) ack 1 win 512
*   > . 1:1(0) ack 7
+0  close(4) = 0
+0  > F. 1:1(0) ack 7
+0  < . 7:7(0) ack 2 win 512
""",
    "server closes first, ends in TIME-WAIT": _HANDSHAKE + """\
+0  close(4) = 0
+0  > F. 1:1(0) ack 1
+0  < . 1:1(0) ack 2 win 512
+0  < F. 1:1(0) ack 2 win 512
*   > . 2:2(0) ack 2
""",
    "SO_LINGER 0 close sends RST": _HANDSHAKE + """\
+0  setsockopt(4, SOL_SOCKET, SO_LINGER, {onoff=1, linger=0}, 8) = 0
+0  close(4) = 0
+0  > R. 1:1(0) ack 1
""",
    "close with unread data resets": _HANDSHAKE + """\
+0  < P. 1:6(5) ack 1 win 512
*   > . 1:1(0) ack 6
+0  close(4) = 0
+0  > R. 1:1(0) ack 6
""",
    "shutdown(SHUT_WR), then the peer closes": _HANDSHAKE + """\
+0  shutdown(4, SHUT_WR) = 0
+0  > F. 1:1(0) ack 1
+0  < . 1:1(0) ack 2 win 512
+0  < F. 1:1(0) ack 2 win 512
*   > . 2:2(0) ack 2
+0  read(4, ..., 100) = 0
+0  close(4) = 0
""",
}


class ProcessCounter:
    """A pytest plugin (`-p harness.bench` with SOCKLAB_BENCH_LOG=FILE): counts the `ss` and `nft`
    processes the session starts, and those started while a wait or poll is on the stack; records
    every item's wall (set-up + call + teardown). One JSON line per session (xdist: per worker)."""

    def __init__(self, log: str):
        self.log = log
        self.started = {name: 0 for name in COUNTED}
        self.polling = {name: 0 for name in COUNTED}
        self.durations: dict = {}

    def install(self):
        import subprocess
        import sys
        original = subprocess.Popen.__init__
        counter = self

        def counting_init(popen, args, *a, **kw):
            argv = [args] if isinstance(args, (str, bytes)) else list(args)
            name = os.path.basename(str(argv[0])) if argv else ""
            n = 1
            if name == "sh" and "socklab-ss-replay" in argv:      # ss.replay_all: one `ss` per answer
                name, n = "ss", len(argv) - argv.index("socklab-ss-replay") - 1
            if name in COUNTED:
                counter.started[name] += n
                frame = sys._getframe(1)
                while frame is not None:
                    if frame.f_code.co_name in POLLING_FRAMES and "harness" in frame.f_code.co_filename:
                        counter.polling[name] += n
                        break
                    frame = frame.f_back
            original(popen, args, *a, **kw)
        subprocess.Popen.__init__ = counting_init

    def pytest_runtest_logreport(self, report):
        self.durations[report.nodeid] = self.durations.get(report.nodeid, 0.0) + report.duration

    def pytest_unconfigure(self, config):
        import json
        with open(self.log, "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "started": self.started, "polling": self.polling,
                                 "durations": self.durations}) + "\n")


def pytest_configure(config):
    """Active only under `socklab bench` (SOCKLAB_BENCH_LOG set); otherwise loading it does nothing."""
    log = os.environ.get("SOCKLAB_BENCH_LOG")
    if log:
        counter = ProcessCounter(log)
        counter.install()
        config.pluginmanager.register(counter, "socklab-bench-counter")


def _read_counts(log: str) -> dict:
    import json
    out = {"started": dict.fromkeys(COUNTED, 0), "polling": dict.fromkeys(COUNTED, 0), "durations": {}}
    with open(log) as fh:
        for line in fh:
            rec = json.loads(line)
            for key in ("started", "polling"):
                for name, n in rec[key].items():
                    out[key][name] += n
            out["durations"].update(rec["durations"])
    return out


def _pytest(args, log=None, env_extra=None):
    """Run pytest in a fresh interpreter; (wall seconds, CPU seconds of it and its children, process)."""
    import resource
    import subprocess
    import sys
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)     # measure as a user runs: compiled modules cached
    if log:
        env["SOCKLAB_BENCH_LOG"] = log
    env.update(env_extra or {})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pytest", *args], capture_output=True, text=True, env=env)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc


def _last_line(proc) -> str:
    return (proc.stdout.strip().splitlines() or ["(no output)"])[-1]


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} cores"


def run_catalogue(cases_folder: str, workers: str) -> int:
    """The whole default catalogue with pytest -n `workers`: wall next to its limit, and the ss/nft
    processes the run started (all, and from polling)."""
    name = f"bench-catalogue-{os.getpid()}"
    log = os.path.join(tempfile.mkdtemp(prefix="socklab-bench-"), "counts.jsonl")
    print(f"socklab bench --catalogue: {_load()} before the run")
    wall, cpu, proc = _pytest([cases_folder, "-q", "-p", "no:cacheprovider", "-p", "harness.bench",
                               "-n", str(workers), "--socklab-run", name], log=log)
    counts = _read_counts(log)
    longest_id, longest = max(counts["durations"].items(), key=lambda kv: kv[1], default=("none", 0.0))
    cores = os.cpu_count() or 1
    limit = max(longest, cpu / cores)
    print(f"  catalogue with -n {workers}: {wall:.1f} s wall ({_last_line(proc)})")
    print(f"  its limit: {limit:.1f} s = max(longest case {longest:.1f} s ({longest_id}), "
          f"CPU work {cpu:.1f} s / {cores} cores = {cpu / cores:.1f} s); wall / limit = {wall / limit:.2f}")
    print(f"  cases' own walls summed: {sum(counts['durations'].values()):.1f} s")
    waits, n = protocol_waits(os.path.join("reports", name))
    print(f"  protocol waits (idle gaps >= 50 ms in {n} case timelines): {waits:.1f} s in all")
    for tool in COUNTED:
        print(f"  `{tool}` processes started: {counts['started'][tool]} in all, {counts['polling'][tool]} by polling")
    print(f"  {_load()} after the run")
    return proc.returncode


def run_cold(repeat: int = 5) -> tuple[list, list]:
    """One case from a cold start, `repeat` times: fresh interpreter, plugin, collection, the case.
    Returns (walls, CPU seconds of the process and its children)."""
    walls, cpus = [], []
    _pytest([COLD_CASE, "-q", "--socklab-run", f"bench-cold-{os.getpid()}"])
    for i in range(repeat):         # (the run above writes the bytecode caches, as any first run does)
        # As a user types it: every installed plugin (xdist, the cache) loads; -q and the run's name only.
        wall, cpu, proc = _pytest([COLD_CASE, "-q", "--socklab-run", f"bench-cold-{os.getpid()}-{i}"])
        if proc.returncode != 0:
            raise RuntimeError(f"{COLD_CASE} failed:\n{proc.stdout[-3000:]}")
        walls.append(wall)
        cpus.append(cpu)
    return walls, cpus


def run_packetdrill(binary: str, repeat: int) -> tuple[list, list]:
    """The five scripts one after another, each packetdrill in its own network namespace
    (`unshare --net`); the wall and CPU seconds of the five together, `repeat` times."""
    import resource
    import subprocess
    folder = tempfile.mkdtemp(prefix="socklab-pd-")
    paths = []
    for i, text in enumerate(PACKETDRILL_SCRIPTS.values()):
        paths.append(os.path.join(folder, f"close{i + 1}.pkt"))
        with open(paths[-1], "w") as fh:
            fh.write(text)
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        for path in paths:
            proc = subprocess.run(["unshare", "--net", binary, path], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"packetdrill {path} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        walls.append(time.monotonic() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def run_close_cases(repeat: int) -> tuple[list, list]:
    """The five close/shutdown cases in one pytest process (fresh interpreter each time): walls, CPU."""
    walls, cpus = [], []
    for i in range(repeat):
        wall, cpu, proc = _pytest([*CLOSE_CASES, "-q", "--socklab-run", f"bench-close-{os.getpid()}-{i}"])
        if proc.returncode != 0:
            raise RuntimeError(f"the close cases failed:\n{proc.stdout[-3000:]}")
        walls.append(wall)
        cpus.append(cpu)
    return walls, cpus


def _spread(samples, cpus=None) -> str:
    out = f"median {statistics.median(samples):.2f} s (min {min(samples):.2f}, max {max(samples):.2f})"
    return out + (f", CPU median {statistics.median(cpus):.2f} s" if cpus else "")


def run_figures(repeat: int, overhead_repeat: int, cases_folder: str, packetdrill: str | None) -> int:
    """The figures besides the catalogue: cold start, per-case overhead, five close cases vs packetdrill."""
    print(f"socklab bench: {_load()}")
    cold, cold_cpu = run_cold(repeat)
    print(f"  one case from a cold start ({COLD_CASE}), {repeat} runs: {_spread(cold, cold_cpu)}; "
          f"goal <= 0.6 s wall")
    close, close_cpu = run_close_cases(repeat)
    print(f"  five close/shutdown cases in one pytest process, {repeat} runs: {_spread(close, close_cpu)}")
    if packetdrill:
        pd, pd_cpu = run_packetdrill(packetdrill, repeat)
        print(f"  packetdrill's five equivalent scripts one after another, {repeat} runs: {_spread(pd, pd_cpu)}")
        print(f"  ratio of the medians: {statistics.median(close) / statistics.median(pd):.2f}x; goal <= 1.0x")
    else:
        print(f"  packetdrill: not measured; {PACKETDRILL_BUILD}")
    print(f"  {_load()} after")
    return run_bench(overhead_repeat, cases_folder)
