"""The `socklab` command: run the experiments, clean up after a killed run, benchmark the harness."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .names import default_run_name



PER_CORE = 5     # workers per core by default (see README, Benchmark: -n 6/8/10/12 measured)


def default_workers() -> str:
    """pytest-xdist workers for a run: PER_CORE per core, since cases spend most of their time waiting
    on the kernel's protocol timers, not on a core, and a worker forked from the fork server costs
    ~0.3 s of CPU to start (on 2 cores, 10 overlap the waits; see README, Benchmark). Also on a busy
    machine: with two and four CPU-bound processes beside it, 10 workers ran the catalogue in 13.7
    and 18.1 s without a failure, where one per core took 28 s."""
    return str(PER_CORE * (os.cpu_count() or 1))


def _seconds(text: str) -> float:
    """argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 seconds")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="socklab", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run the experiment cases and write a report under reports/")
    run.add_argument("--cases", default="cases", help="folder of cases (default: cases)")
    run.add_argument("--reports", default="reports", help="reports folder (default: reports)")
    run.add_argument("--name", default=None, help="run name (default: run-<date>-<time>)")
    run.add_argument("--sysctl", action="append", default=[], metavar="KEY=VALUE",
                     help="sysctl applied inside every test namespace (repeatable)")
    run.add_argument("--profile", default=None, help="named settings profile (see harness/profiles.py)")
    run.add_argument("-n", "--workers", default=None,
                     help="pytest-xdist workers (default: 5 per core, as cases mostly wait)")
    run.add_argument("--experiment", action="append", default=[], metavar="ID",
                     help="only the cases of experiment ID, e.g. CONN-DATA (repeatable)")
    run.add_argument("--article", action="append", default=[], metavar="ID",
                     help="only the cases of article ID, e.g. 000 (repeatable)")
    run.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")

    clean = sub.add_parser("cleanup", help="remove namespaces and tracefs instances a killed run left")
    clean.add_argument("--dry-run", action="store_true")

    bench = sub.add_parser("bench", help="measure cold start, per-case overhead, close cases vs packetdrill")
    bench.add_argument("--repeat", type=int, default=30, help="in-process samples of the overhead (default 30)")
    bench.add_argument("--runs", type=int, default=5,
                       help="fresh-process samples of the cold start and the close cases (default 5)")
    bench.add_argument("--packetdrill", default=None, metavar="PATH",
                       help="a packetdrill binary: time its five close scripts next to the five close cases")
    bench.add_argument("--cases", default="cases")
    bench.add_argument("--catalogue", action="store_true",
                       help="instead: time the whole catalogue next to its limit and count ss/nft processes")
    bench.add_argument("-n", "--workers", default=None, help="workers for --catalogue (default as for run)")
    bench.add_argument("--kernels", nargs="+", default=None, metavar="KERNEL",
                       help="instead: boot time and catalogue wall per kernel in virtme-ng guests (socklab matrix)")
    bench.add_argument("--matrix", default=None, metavar="DIR",
                       help="instead: the same figures from a finished matrix folder (reports/<matrix>)")

    rep = sub.add_parser("report", help="write results.json and index.html of a run folder")
    rep.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, e.g. reports/run-20250101-120000")
    rep.add_argument("--profile", default=None, help="profile name to record (default: the one results.json has)")

    jud = sub.add_parser("judge", help="judge every claim of a recorded run again from its case records")
    jud.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, e.g. reports/run-20250101-120000")
    jud.add_argument("--cases", default="cases", help="folder of the cases whose judges to use (default: cases)")

    cmp = sub.add_parser("compare", help="compare runs: behaviour, added/missing cases, flipped verdicts")
    cmp.add_argument("results", nargs="+", metavar="RESULTS",
                     help="results.json files or run folders; the first is the reference")
    cmp.add_argument("--html", default=None, metavar="OUT", help="also write the comparison as one HTML page")

    base = sub.add_parser("baseline", help="run the catalogue and keep its results as this kernel's baseline")
    base.add_argument("--folder", default="baselines", help="where baselines live (default: baselines)")
    base.add_argument("--from-run", default=None, metavar="RUN_DIR", help="keep an existing run instead")
    base.add_argument("-n", "--workers", default=None, help="as for run")

    mat = sub.add_parser("matrix", help="run the catalogue on several kernels (virtme-ng guests) and compare them")
    mat.add_argument("kernels", nargs="+", metavar="KERNEL",
                     help="debian:<series> (e.g. debian:6.1, newest in Debian's archive), a vmlinuz path, or host")
    mat.add_argument("--reports", default="reports", help="reports folder (default: reports)")
    mat.add_argument("--name", default=None, help="matrix folder name (default: matrix-<date>-<time>)")
    mat.add_argument("-n", "--workers", default="2", help="pytest-xdist workers per kernel (default: 2)")
    mat.add_argument("--record-baselines", default=None, metavar="FOLDER",
                     help="keep each kernel's run as the baseline of its version in FOLDER (e.g. baselines)")
    mat.add_argument("--stall-timeout", type=_seconds, default=None, metavar="S",
                     help="stop a guest whose log and case records stood still this long, then boot it once more "
                          "(default: 240; the longest pause of a working guest was 38 s)")

    soak = sub.add_parser("soak", help="run the catalogue N times in a row; count failures and wall times")
    soak.add_argument("--runs", type=int, default=20)
    soak.add_argument("-n", "--workers", default=None, help="as for run")
    soak.add_argument("--cases", default="cases")
    soak.add_argument("--load", type=int, default=0, metavar="N",
                      help="keep N CPU-bound processes busy for the soak's duration (started and stopped by soak)")
    soak.add_argument("--reports", default="reports", help="reports folder (default: reports)")

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["matrix"], ["bench"]) and "--" in argv:        # KERNEL... -- PYTEST ARGS
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    else:
        extra = []
    args = parser.parse_args(argv)
    if getattr(args, "workers", "") is None:
        args.workers = default_workers()
    if args.cmd == "matrix":
        return _matrix(args, extra)
    if args.cmd == "run":
        return _run(args)
    if args.cmd == "cleanup":
        return _cleanup(args)
    if args.cmd == "report":
        return _report(args)
    if args.cmd == "judge":
        return _judge(args)
    if args.cmd == "compare":
        return _compare(args)
    if args.cmd == "baseline":
        return _baseline(args)
    if args.cmd == "soak":
        return _soak(args)
    if args.cmd == "bench":
        from .bench import run_catalogue, run_figures
        if args.matrix:
            from .kernels.matrix import print_bench
            if not os.path.exists(os.path.join(args.matrix, "matrix.json")):
                print(f"socklab bench: {args.matrix}: no matrix.json (not a finished socklab matrix folder)", file=sys.stderr)
                return 2
            print_bench(os.path.join(args.matrix, "matrix.json"))
            return 0
        if args.kernels:
            from .kernels.matrix import bench_kernels
            return bench_kernels(args.kernels, extra)
        if args.catalogue:
            return run_catalogue(args.cases, args.workers)
        return run_figures(args.runs, args.repeat, args.cases, args.packetdrill)
    return 2


def _run(args) -> int:
    import pytest

    from .privileges import missing, missing_tools
    problems = ([missing()] if missing() else []) + missing_tools()
    if problems:
        print("socklab run: cannot run the experiments here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 4
    name = args.name or default_run_name()
    pargs = [args.cases, "-n", str(args.workers), "--socklab-reports", args.reports, "--socklab-run", name,
             "-p", "no:cacheprovider", "-q"]
    for item in args.sysctl:
        pargs += ["--socklab-sysctl", item]
    if args.profile:
        pargs += ["--socklab-profile", args.profile]
    for option in ("experiment", "article"):
        for value in getattr(args, option, None) or []:
            pargs += [f"--{option}", value]
    pargs += list(args.pytest_args)
    code = pytest.main(pargs)
    run_dir = os.path.join(os.path.abspath(args.reports), name)
    index = os.path.join(run_dir, "index.html")
    if not os.path.exists(index) and os.path.isdir(os.path.join(run_dir, "cases")):
        # the plugin writes both at session end; this covers a session that ended before it could
        from .report import summary_line, write_report
        from .results import ResultsError, build_results, write_results
        try:
            results = build_results(run_dir, profile=args.profile)
        except ResultsError as exc:
            print(f"socklab run: no report: {exc}", file=sys.stderr)
            return int(code) or 1
        write_results(run_dir, results=results)
        print(summary_line(results, write_report(run_dir, results)))
    if os.path.exists(index):
        print(f"socklab: run {name}: report {index}")
    elif os.path.isdir(run_dir):
        print(f"socklab: run {name}: artifacts in {run_dir}")
    else:
        print(f"socklab: run {name}: no case ran (pytest exit status {int(code)}); nothing written")
    return int(code)


def _report(args) -> int:
    from .report import summary_line, write_report
    from .results import ResultsError, build_results, load_results, write_results
    run_dir = args.run_dir
    if not os.path.isdir(os.path.join(run_dir, "cases")):
        print(f"socklab report: {run_dir}: not a run folder (no cases/ in it)", file=sys.stderr)
        return 2
    profile = args.profile
    if profile is None and os.path.exists(os.path.join(run_dir, "results.json")):
        try:
            profile = (load_results(run_dir).get("settings") or {}).get("profile")
        except ResultsError:
            profile = None
    try:
        results = build_results(run_dir, profile=profile)
    except ResultsError as exc:
        print(f"socklab report: {exc}", file=sys.stderr)
        return 2
    write_results(run_dir, results=results)
    print(summary_line(results, write_report(run_dir, results)))
    return 0


def _judge(args) -> int:
    """Judge a recorded run again: no lab, no privileges; results.json and index.html rewritten."""
    from .judge import JudgeError, load_judges
    from .report import summary_line, write_report
    from .results import ResultsError, build_results, load_results, write_results
    run_dir = args.run_dir
    if not os.path.isdir(os.path.join(run_dir, "cases")):
        print(f"socklab judge: {run_dir}: not a run folder (no cases/ in it)", file=sys.stderr)
        return 2
    try:
        registry = load_judges(args.cases)
    except JudgeError as exc:
        print(f"socklab judge: {exc}", file=sys.stderr)
        return 2
    try:
        profile = (load_results(run_dir).get("settings") or {}).get("profile")
    except ResultsError:
        profile = None
    recorded = build_results(run_dir, profile=profile)           # the verdicts case.json kept from the run
    before = {c["id"]: [(v.get("judge"), v.get("verdict")) for v in c.get("verdicts", [])] for c in recorded["cases"]}
    results = build_results(run_dir, profile=profile, judges=registry)
    judged = flipped = 0
    for case in results["cases"]:
        if case.get("unjudged"):
            print(f"socklab judge: {case['id']}: not judged: {case['unjudged']}", file=sys.stderr)
        now = [(v.get("judge"), v.get("verdict")) for v in case.get("verdicts", [])]
        judged += len(now) if not case.get("unjudged") else 0
        if case["id"] in before and before[case["id"]] != now:
            flipped += 1
            print(f"socklab judge: {case['id']}: {before[case['id']]} -> {now}")
    write_results(run_dir, results=results)
    print(f"socklab judge: {judged} claims judged in {len(results['cases'])} cases, "
          f"{flipped} case(s) judged otherwise than recorded")
    print(summary_line(results, write_report(run_dir, results)))
    return 0


def _compare(args) -> int:
    from .compare import compare, write_compare_html
    from .results import ResultsError
    if len(args.results) < 2:
        print("socklab compare: give at least two results files or run folders", file=sys.stderr)
        return 2
    try:                               # a run folder without results.json is read, never written
        comparison = compare(args.results)
    except ResultsError as exc:
        print(f"socklab compare: {exc}", file=sys.stderr)
        return 2
    print(comparison.text(), end="")
    if comparison.changed:            # which differences are the kernel's, the emulator's, the observation's
        from .kernels.attribution import attribute, cause_lines
        print("\n".join(cause_lines(comparison, attribute(comparison))))
    if args.html:
        print(f"socklab compare: {write_compare_html(comparison, args.html)}")
    return 1 if comparison.changed else 0


def _baseline(args) -> int:
    from .baseline import record
    run_dir = args.from_run
    if run_dir is None:
        name = default_run_name()
        code = _run(argparse.Namespace(cases="cases", reports="reports", name=name, sysctl=[], profile=None,
                                       workers=args.workers, pytest_args=["--socklab-baseline", ""], experiment=[], article=[]))
        if code != 0:
            print("socklab baseline: the run failed; no baseline recorded", file=sys.stderr)
            return int(code)
        run_dir = os.path.join("reports", name)
    print(f"socklab baseline: recorded {record(run_dir, args.folder)}")
    return 0


def _matrix(args, pytest_args) -> int:
    from .errors import SocklabError
    from .kernels.matrix import run_matrix
    from .privileges import missing
    if missing():
        print(f"socklab matrix: {missing()}", file=sys.stderr)
        return 4
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt("SIGTERM")
    signal.signal(signal.SIGTERM, stop)      # unwinds like Ctrl-C: the running guest is stopped too
    try:
        return run_matrix(args.kernels, pytest_args, reports=args.reports, name=args.name, workers=args.workers,
                          log=lambda line: print(line, flush=True), baselines=args.record_baselines,
                          **({"stall_timeout": args.stall_timeout} if args.stall_timeout else {}))
    except SocklabError as exc:
        print(f"socklab matrix: {exc}", file=sys.stderr)
        return 2


def _soak(args) -> int:
    """Consecutive catalogue runs, each a fresh pytest process checked against the baseline, optionally
    with the cores kept busy; per run: exit status, wall time and which cases failed."""
    import collections
    import statistics
    import subprocess
    if args.runs < 1 or args.load < 0:
        print("socklab soak: --runs must be at least 1 and --load at least 0", file=sys.stderr)
        return 2
    import signal
    walls, failed_runs, by_case = [], [], collections.Counter()
    # SIGTERM (and SIGINT, which a shell ignores for a job it started in the background) stop the soak.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupt)
    load = _start_load(args.load)
    try:
        print(f"socklab soak: {args.runs} runs of {args.cases} with -n {args.workers}"
              + (f", {args.load} CPU-bound processes running (pids {' '.join(str(p.pid) for p in load)})"
                 if load else ""), flush=True)
        for i in range(1, args.runs + 1):
            name = f"soak-{os.getpid()}-{i}"
            t0 = time.monotonic()
            child = subprocess.Popen([sys.executable, "-m", "pytest", args.cases, "-q", "-p", "no:cacheprovider",
                                      "-n", str(args.workers), "--socklab-reports", args.reports, "--socklab-run", name],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "COLUMNS": "400"})
            try:
                out, err = child.communicate()
            except KeyboardInterrupt:
                # The run in progress unwinds like any interrupted run (namespaces, instances, claims
                # removed) before soak stops its load and ends.
                child.send_signal(signal.SIGTERM)
                child.communicate(timeout=120)
                raise
            proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
            walls.append(time.monotonic() - t0)
            last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
            bad = _failed_cases(os.path.join(args.reports, name), proc.stdout)
            by_case.update(case for case, _ in bad)
            print(f"run {i:2d}: exit {proc.returncode}, {walls[-1]:.1f} s, {len(bad)} failed: {last}", flush=True)
            for case, why in bad:
                print(f"    {case}: {why}", flush=True)
            if proc.returncode != 0:
                failed_runs.append(i)
                if not bad:                     # not a case: the session itself (usage error, baseline)
                    print("    " + "\n    ".join((proc.stdout + proc.stderr).strip().splitlines()[-15:]))
    except KeyboardInterrupt:
        print(f"socklab soak: interrupted after {len(walls)} runs", file=sys.stderr)
        return 130
    finally:
        _stop_load(load)
    print(f"socklab soak: {args.runs - len(failed_runs)} of {args.runs} runs passed (-n {args.workers}, load "
          f"{args.load}); wall median {statistics.median(walls):.1f} s, min {min(walls):.1f} s, max {max(walls):.1f} s"
          + (f"; failed runs: {failed_runs}" if failed_runs else ""))
    for case, n in by_case.most_common():
        print(f"  failed in {n} of {args.runs} runs: {case}")
    return 1 if failed_runs else 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal_name(signum))


def signal_name(signum) -> str:
    import signal
    return signal.Signals(signum).name


_BUSY = "while True: pass"


def _start_load(n: int) -> list:
    """N CPU-bound processes that die with soak (PR_SET_PDEATHSIG) even if soak is killed."""
    import ctypes
    import subprocess

    def die_with_parent():
        ctypes.CDLL(None).prctl(1, 9)
    return [subprocess.Popen([sys.executable, "-c", _BUSY], preexec_fn=die_with_parent,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL) for _ in range(n)]


def _stop_load(procs: list) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def _failed_cases(run_dir: str, stdout: str) -> list[tuple[str, str]]:
    """(case id, first line of why) for each case of a run that failed or errored, from its results."""
    from .results import ResultsError, load_results
    try:
        results = load_results(run_dir)
    except ResultsError:
        # no results (the session ended early): pytest's own summary lines
        return [(l.split()[1], " ".join(l.split()[3:])[:160]) for l in stdout.splitlines()
                if l.startswith(("FAILED ", "ERROR ")) and len(l.split()) > 1]
    out = []
    for c in results["cases"]:
        if c.get("outcome") in ("failed", "error", "interrupted"):
            lines = [l.strip() for l in (c.get("longrepr") or "").splitlines() if l.strip().startswith("E ")]
            out.append((c["id"], (lines[0][1:].strip() if lines else c.get("outcome"))[:200]))
    return out


def _cleanup(args) -> int:
    from .cleanup import cleanup
    from .privileges import missing
    if missing():
        print(f"socklab cleanup: {missing()}", file=sys.stderr)
        return 4
    lines = cleanup(dry_run=args.dry_run)
    print("\n".join(lines) if lines else "nothing left over")
    return 0


if __name__ == "__main__":
    sys.exit(main())
