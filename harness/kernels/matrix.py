"""`socklab matrix KERNEL...`: the catalogue on several kernels, compared in one report.

Each kernel (see harness/kernels/spec.py) runs the catalogue with `socklab run`: the running kernel
directly, any other in a virtme-ng guest (harness/kernels/vm.py) whose run folder is written into the
matrix folder through a writable share. The host's own run is always part of it and is the
reference. At the end: matrix.json (per kernel: emulator, boot, wall, outcome counts), the
comparison (harness/compare.py) as matrix.txt and matrix.html, and for every difference whether it
is the kernel's behaviour or the emulator's timing (harness/kernels/attribution.py).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

from . import attribution, spec, vm
from .version import running


@dataclass
class KernelRun:
    spec: str
    label: str
    run_dir: str
    emulator: str | None = None     # None: on the machine itself
    boot: float | None = None
    wall: float = 0.0
    exit_code: int | None = None
    outcomes: dict = field(default_factory=dict)
    kernel: str | None = None
    died_at_boot: list = field(default_factory=list)    # consoles of boots that died before the command
    stalled: list = field(default_factory=list)         # partial run folders of guests stopped mid-run
    stopped: str | None = None                          # why the watchdog stopped the last guest, if it did


def checkout() -> str:
    """The source tree the harness is imported from (its cases/ are run in the guest too)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def count_cases(cases: str, pytest_args: list) -> int | None:
    """How many cases the run will report (pytest --collect-only on this machine)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", cases, "--collect-only", "-q", "-p", "no:cacheprovider",
                           *pytest_args], capture_output=True, text=True, cwd=checkout())
    n = sum(1 for line in proc.stdout.splitlines() if "::" in line)
    return n or None


def _records(run_dir: str) -> list[str]:
    """The case records of a run; a case in flight has one too (its outcome says "interrupted" until
    it ends), so a count is ahead by at most one case per worker."""
    return glob.glob(os.path.join(run_dir, "cases", "*", "case.json"))


def _done(run_dir: str) -> int:
    return len(_records(run_dir))


def _progress_mark(run_dir: str) -> tuple[int, int]:
    """Changes whenever a case starts or ends (its record is written then): the guest watchdog's sign
    of life besides the guest's log."""
    records, size = _records(run_dir), 0
    for path in records:
        try:
            size += os.stat(path).st_size
        except OSError:
            pass
    return len(records), size


class Progress:
    """Progress lines: kernel, boot, cases done of total, elapsed; at most one line per `every` s."""

    def __init__(self, prefix: str, run_dir: str, total: int | None, log, every: float = 20.0):
        self.prefix, self.run_dir, self.total, self.log, self.every = prefix, run_dir, total, log, every
        self.last_line, self.last_done, self.booted_said = -1e9, -1, False

    def __call__(self, elapsed: float, boot: float | None, emulator: str | None):
        done = _done(self.run_dir)
        if boot is not None and not self.booted_said:
            self.booted_said = True
            self.log(f"{self.prefix}: booted under {emulator} in {boot:.0f} s")
        if elapsed - self.last_line >= self.every or (done != self.last_done and elapsed - self.last_line >= 5):
            state = (f"{done}/{self.total or '?'} cases" if boot is not None or emulator is None
                     else f"booting under {emulator}")
            self.log(f"{self.prefix}: {state}, {vm.clock(elapsed)} elapsed")
            self.last_line, self.last_done = elapsed, done


def _print_recorded_ss(run_dir: str, prefix: str, log) -> None:
    """`ss -tanoi` prints the snapshots a guest recorded as sock_diag answers; the case pages are
    written again with its text. A failure is said and leaves the harness's layout of the rows."""
    from .. import artifacts
    from ..errors import SocklabError
    from ..report import write_report
    from ..results import load_results
    if not os.path.isdir(os.path.join(run_dir, "cases")):
        return
    t0 = time.monotonic()
    try:
        n = artifacts.replay_ss(run_dir)
        if n and os.path.exists(os.path.join(run_dir, "results.json")):
            write_report(run_dir, load_results(run_dir))
    except SocklabError as exc:
        log(f"{prefix}: the recorded ss snapshots were not printed by ss: {exc}")
        return
    log(f"{prefix}: {n} ss snapshots printed by ss from the answers the guest recorded "
        f"({time.monotonic() - t0:.1f} s)")


def run_matrix(specs: list[str], pytest_args: list, *, reports: str = "reports", name: str | None = None,
               workers: str = "2", log=print, baselines: str | None = None,
               stall_timeout: float = vm.STALL_TIMEOUT) -> int:
    """Run the catalogue on every kernel in `specs` (plus the host), then compare; exit status 0 when
    every run completed (differences are the report's content, not failures)."""
    t_all = time.monotonic()
    specs = list(dict.fromkeys(["host"] + [s for s in specs if s != "host"]))
    if any(s != "host" for s in specs) and vm.missing():
        log("socklab matrix: cannot boot other kernels here:\n  " + "\n  ".join(vm.missing()) +
            "\n  (./bootstrap.sh matrix ... installs them)")
        return 4
    kernels = [spec.parse(s, log=log) for s in specs]
    name = name or time.strftime("matrix-%Y%m%d-%H%M%S")
    folder = os.path.join(os.path.abspath(reports), name)
    os.makedirs(folder, exist_ok=True)
    cases = os.path.join(checkout(), "cases")
    total = count_cases(cases, pytest_args)
    log(f"socklab matrix: {len(kernels)} kernels, {total or '?'} cases each, into {folder}")
    runs, try_kvm = [], True
    for n, k in enumerate(kernels, 1):
        label = f"host-{running()}" if k.is_host else f"{k.spec.replace(':', '-')}-{k.label}"
        run_dir = os.path.join(folder, label)
        inner = [sys.executable, "-m", "harness.cli", "run", "--cases", cases, "--reports", folder, "--name", label,
                 "-n", str(workers), "--", *pytest_args]
        prefix = f"socklab matrix: [{n}/{len(kernels)}] {k.spec} ({'running kernel' if k.is_host else k.label})"
        progress = Progress(prefix, run_dir, total, log)
        log(f"{prefix}: starting")
        kr = KernelRun(k.spec, label, run_dir)
        if k.is_host:
            kr.exit_code, kr.wall = _run_here(inner, os.path.join(folder, f"{label}.log"), progress)
        else:
            g, kr.stalled = _run_guest(k, folder, label, inner, progress, try_kvm, prefix, log, stall_timeout)
            try_kvm = g.emulator == "KVM"       # KVM that could not boot one kernel is not tried again
            kr.emulator, kr.exit_code, kr.boot, kr.wall = g.emulator, g.exit_code, g.boot, g.wall
            kr.died_at_boot, kr.stopped = g.died_at_boot, g.stopped
            _print_recorded_ss(run_dir, prefix, log)
        kr.outcomes, kr.kernel = _outcomes(run_dir)
        log(f"{prefix}: done in {vm.clock(kr.wall)}" + (f" (boot {kr.boot:.0f} s, {kr.emulator})" if kr.boot else "")
            + f"; exit {kr.exit_code}; " + (", ".join(f"{v} {k}" for k, v in sorted(kr.outcomes.items())) or "no results")
            + ("" if kr.outcomes else f"; see {os.path.join(folder, label + '.log')}"))
        runs.append(kr)
    with open(os.path.join(folder, "matrix.json"), "w") as fh:
        json.dump({"kernels": [asdict(r) for r in runs], "pytest_args": pytest_args,
                   "wall": round(time.monotonic() - t_all, 1)}, fh, indent=1)
    code = write_report(folder, [r.run_dir for r in runs if r.outcomes], log)
    if baselines:
        from ..baseline import record
        for r in runs:
            if r.outcomes:
                log(f"socklab matrix: baseline {record(r.run_dir, baselines)} from {r.label}")
    log(f"socklab matrix: {len(runs)} kernels in {vm.clock(time.monotonic() - t_all)}")
    incomplete = [r.spec for r in runs if not r.outcomes]
    if incomplete:
        log(f"socklab matrix: no results from {', '.join(incomplete)}")
    return 1 if incomplete else code


def _run_guest(k, folder: str, label: str, inner: list, progress, try_kvm: bool, prefix: str, log,
               stall_timeout: float = vm.STALL_TIMEOUT) -> tuple[vm.GuestRun, list[str]]:
    """One kernel's catalogue in a guest. A guest the watchdog stopped mid-run (a hung guest kernel:
    under TCG the ones seen were the emulator's, see vm.KEEPER_RULES) is booted once more; the stopped
    run's partial folder, log and console are kept beside, named .stalled-1: the second value lists
    those folders."""
    run_dir = os.path.join(folder, label)
    stalled: list[str] = []
    for attempt in (1, 2):
        # SOCKLAB_SS=replay: named `ss` snapshots keep the kernel's answer, printed by `ss` here
        # afterwards (an `ss` process costs 130-170 ms in a TCG guest: 97 s of a 7.3 catalogue).
        g = vm.boot(k.image, folder, label, inner, cwd=checkout(), on_tick=progress, try_kvm=try_kvm,
                    env={"SOCKLAB_SS": "replay"}, progress=lambda: _progress_mark(run_dir),
                    stall_timeout=stall_timeout)
        for console in g.died_at_boot:
            log(f"{prefix}: a boot under {g.emulator} did not reach the guest's first command and was "
                f"started again; its console: {console}")
        if g.stopped:
            log(f"{prefix}: the guest was stopped: {g.stopped}; its console: {g.console}")
        if not g.stopped or g.finished or g.boot is None or attempt == 2:
            break
        kept = f"{run_dir}.stalled-{attempt}"
        for src, dst in ((run_dir, kept), (g.console, g.console.replace(".txt", f".stalled-{attempt}.txt")),
                         (run_dir + ".log", f"{kept}.log")):
            if os.path.exists(src):
                os.replace(src, dst)
        stalled.append(kept)
        what = (f"the stopped run is kept in {kept}" if os.path.isdir(kept)
                else f"the stopped run had recorded no case; its log is kept as {kept}.log")
        log(f"{prefix}: starting the guest once more; {what}")
    return g, stalled


def _run_here(argv, log_path, progress) -> tuple[int, float]:
    t0 = time.monotonic()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=checkout())
        try:
            while True:
                try:
                    proc.wait(timeout=2)
                    break
                except subprocess.TimeoutExpired:
                    progress(time.monotonic() - t0, None, None)
        except BaseException:
            # Ctrl-C or SIGTERM: the run's pytest ends its cases and removes their namespaces on SIGTERM
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    return proc.returncode, time.monotonic() - t0


def _outcomes(run_dir: str) -> tuple[dict, str | None]:
    from ..results import ResultsError, load_results
    try:
        r = load_results(run_dir)
    except ResultsError:
        return {}, None
    out: dict = {}
    for c in r["cases"]:
        out[c["outcome"]] = out.get(c["outcome"], 0) + 1
    return out, r["kernel"]


def write_report(folder: str, run_dirs: list[str], log=print) -> int:
    """matrix.txt and matrix.html of a matrix folder: the comparison plus each difference's cause."""
    from ..compare import compare, render_compare_html
    if len(run_dirs) < 2:
        log("socklab matrix: fewer than two runs have results; nothing to compare")
        return 1
    cmp = compare(run_dirs)
    attrs = attribution.attribute(cmp)
    text = cmp.text() + "\n".join(attribution.cause_lines(cmp, attrs)) + "\n"
    with open(os.path.join(folder, "matrix.txt"), "w") as fh:
        fh.write(text)
    html = render_compare_html(cmp).replace("<h1>socklab compare</h1>", "<h1>socklab matrix</h1>" + _causes_html(cmp, attrs), 1)
    with open(os.path.join(folder, "matrix.html"), "w") as fh:
        fh.write(html)
    log(text[-6000:] if len(text) > 6000 else text)
    log(f"socklab matrix: report {os.path.join(folder, 'matrix.html')}")
    return 0


def _causes_html(cmp, attrs) -> str:
    from html import escape
    rows = "".join(f"<tr><td>{escape(cmp.letter(a.run))}</td><td>{escape(a.case)}</td><td>{escape(a.cause)}</td>"
                   f"<td>{escape(a.why)}</td></tr>" for a in attrs)
    head = "".join(f"<li>{escape(s)}</li>" for s in attribution.summary(cmp, attrs))
    return (f"<p>Run A is this machine's own kernel; the others ran in virtme-ng guests, the emulator (KVM or "
            f"TCG) shown next to each kernel.</p><ul>{head}</ul>"
            f"<details><summary>Cause of each difference</summary><table><tr><th>run</th><th>case</th><th>cause</th>"
            f"<th>evidence</th></tr>{rows}</table></details>")


def bench_kernels(specs: list[str], pytest_args: list, reports: str = "reports") -> int:
    """`socklab bench --kernels K...`: a matrix run, then per kernel its boot time and catalogue wall."""
    name = f"bench-kernels-{os.getpid()}"
    code = run_matrix(specs, pytest_args, reports=reports, name=name, log=lambda line: print(line, flush=True))
    path = os.path.join(os.path.abspath(reports), name, "matrix.json")
    if not os.path.exists(path):
        return code or 1
    print_bench(path, pytest_args)
    return code


def print_bench(path: str, pytest_args=()) -> None:
    """The per-kernel figures of a matrix.json: emulator, boot, start-up in the guest (interpreter,
    pytest and its workers, until the first case is done), the cases themselves, outcomes. The phases
    come from the files' times: <kernel>.booted, and the first and last case record (case.json) written."""
    with open(path) as fh:
        m = json.load(fh)
    print(f"socklab bench: kernels on {os.cpu_count()} cores, seconds" + (f" (pytest {' '.join(pytest_args)})" if pytest_args else ""))
    print(f"  {'kernel':<34} {'emulator':<8} {'boot':>6} {'start-up':>9} {'cases':>7} {'guest wall':>11}  outcomes")
    for r in m["kernels"]:
        boot, startup, cases = _phases(r)
        print(f"  {r['spec'] + ' ' + (r['kernel'] or ''):<34} {r['emulator'] or 'none':<8} {_num(boot):>6} "
              f"{_num(startup):>9} {_num(cases):>7} {r['wall']:11.1f}  "
              + ", ".join(f"{v} {k}" for k, v in sorted(r["outcomes"].items())))
    print(f"  matrix wall (fetch, every kernel, comparison): {m['wall']:.1f} s")


def _num(x) -> str:
    return "-" if x is None else f"{x:.1f}"


def _phases(r: dict) -> tuple:
    """(boot, start-up, cases) seconds of one kernel's run, from file times; None where unknown."""
    times = sorted(os.path.getmtime(p) for p in _records(r["run_dir"]))
    if not times:
        return r.get("boot"), None, None
    first, last = times[0], times[-1]
    booted = os.path.join(os.path.dirname(r["run_dir"]), f"{r['label']}.booted")
    if r.get("boot") is not None and os.path.exists(booted):
        t_boot = os.path.getmtime(booted)
        return r["boot"], first - t_boot, last - first
    start = last - r["wall"]        # on the machine itself: the run's start
    return None, first - start, last - first
