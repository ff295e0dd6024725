"""The `socklab` command: run the experiments, clean up after a killed run, benchmark the harness."""

from __future__ import annotations

import argparse
import os
import sys
import time


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
    run.add_argument("-n", "--workers", default="2", help="pytest-xdist workers (default: 2)")
    run.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")

    clean = sub.add_parser("cleanup", help="remove namespaces and tracefs instances a killed run left")
    clean.add_argument("--dry-run", action="store_true")

    bench = sub.add_parser("bench", help="measure per-case overhead and the connection cases' wall time")
    bench.add_argument("--repeat", type=int, default=30)
    bench.add_argument("--cases", default="cases")

    args = parser.parse_args(argv)
    if args.cmd == "run":
        return _run(args)
    if args.cmd == "cleanup":
        return _cleanup(args)
    if args.cmd == "bench":
        from .bench import run_bench
        return run_bench(args.repeat, args.cases)
    return 2


def _run(args) -> int:
    import pytest

    from .privileges import missing, missing_tools
    problems = ([missing()] if missing() else []) + missing_tools()
    if problems:
        print("socklab run: cannot run the experiments here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 4
    name = args.name or time.strftime("run-%Y%m%d-%H%M%S")
    pargs = [args.cases, "-n", str(args.workers), "--socklab-reports", args.reports, "--socklab-run", name,
             "-p", "no:cacheprovider", "-q"]
    for item in args.sysctl:
        pargs += ["--socklab-sysctl", item]
    if args.profile:
        pargs += ["--socklab-profile", args.profile]
    pargs += list(args.pytest_args)
    code = pytest.main(pargs)
    print(f"socklab: run {name}: artifacts in {os.path.join(os.path.abspath(args.reports), name)}")
    return int(code)


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
