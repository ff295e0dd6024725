"""Baselines: the results of a default run on one kernel version, kept in the repo, that later runs on
the same version must reproduce. `baselines/<version>.json` (e.g. 6.18.44.json, whatever the build
string: 6.18.44-fc-v445 and 6.18.44-fc-v782 share it); `socklab baseline` records one.

A run on a version without a baseline is compared with the nearest older version's, and what
changed is reported as "changed since <version>": information, not a failure.
"""

from __future__ import annotations

import glob
import json
import os
import re

from .compare import compare_runs
from .kernels.version import key as version_key
from .kernels.version import running, version_of
from .results import ResultsError, load_results
from .sysctls import recorded_key


def version_of_results(results: dict) -> str:
    """The kernel version a results file was recorded on (older files: from the release string)."""
    return results.get("kernel_version") or version_of(results.get("kernel") or "")


def path_for(folder: str, version: str | None = None) -> str:
    """The baseline file of kernel version `version` (default: this machine's) in `folder`."""
    return os.path.join(folder, f"{version or running()}.json")


def available(folder: str) -> dict:
    """{version: path} of the baselines in `folder`. A file named by its version (`6.1.192.json`, as
    record() names them) is taken at its name; one named otherwise (a build string, from older
    releases) is read for its version."""
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        stem = os.path.basename(path)[:-len(".json")]
        if _VERSION_NAME.match(stem):
            out.setdefault(stem, path)
            continue
        try:
            out.setdefault(version_of_results(load_results(path)), path)
        except ResultsError:
            continue
    return out


_VERSION_NAME = re.compile(r"^\d+(?:\.\d+)+$")


def record(run_dir: str, folder: str) -> str:
    """Keep the run's results.json as the baseline of the kernel version it ran on."""
    results = load_results(run_dir)
    os.makedirs(folder, exist_ok=True)
    version = version_of_results(results)
    old = available(folder).get(version)
    if old and os.path.basename(old) != f"{version}.json":
        os.remove(old)                  # the same version recorded under a build string before
    dest = path_for(folder, version)
    with open(os.path.join(run_dir, "results.json")) as fh:
        data = json.load(fh)
    with open(dest + ".tmp", "w") as fh:        # indented: a baseline is read in diffs
        json.dump(data, fh, indent=1)
        fh.write("\n")
    os.replace(dest + ".tmp", dest)
    return dest


def find(folder: str, version: str) -> tuple[str | None, bool]:
    """(path, exact): the baseline of `version`, else of the nearest older version, else (None, False)."""
    have = available(folder)
    if version in have:
        return have[version], True
    older = [v for v in have if version_key(v) < version_key(version)]
    if older:
        return have[max(older, key=version_key)], False
    return None, False


def _settings(case: dict) -> tuple:
    """A case's settings as compared: its sysctls, a per-interface key naming the veth end `<veth>` (as
    results now record it; older ones carry the end's own name, which changes every run), and its MTU."""
    return {recorded_key(k): v for k, v in (case.get("sysctls") or {}).items()}, case.get("mtu")


_preloaded: dict = {}       # baseline path -> Future of its load_results(), started by preload()


def preload(folder: str) -> None:
    """Start reading the running kernel's baseline in `folder` in the background (a 1 MB file: 12 ms
    of JSON), so check() at the run's end finds it read: the controller of an xdist run is idle while
    the cases run, and a serial run's first case mostly waits on the kernel."""
    from . import background
    path, _exact = find(folder, running())
    if path is not None and path not in _preloaded:
        _preloaded[path] = background.submit(load_results, path)


def _load_baseline(path: str) -> dict:
    fut = _preloaded.pop(path, None)
    return fut.result() if fut is not None else load_results(path)


def check(run_dir: str, folder: str, run: dict | None = None) -> tuple[bool | None, str]:
    """Compare a run with its kernel version's baseline, over the cases the run executed.

    Returns (True, summary) when the run reproduces the baseline, (False, comparison text) when
    behaviour, verdicts or outcomes changed, and (None, why) when nothing was checked: no baseline
    for this version (then what changed since the nearest older version's baseline is in the text),
    or the run used other settings. `run`: the run's results when the caller has them (else read
    from `run_dir`).
    """
    run = run if run is not None else load_results(run_dir)
    version = version_of_results(run)
    base_path, exact = find(folder, version)
    if base_path is None:
        return None, (f"no baseline for kernel {version} ({run['kernel']}) in {folder}; record one with "
                      f"`socklab baseline` (runs the catalogue and keeps its results)")
    try:
        base = _load_baseline(base_path)
    except ResultsError as exc:
        return False, f"the baseline cannot be read, so nothing was checked: {exc}"
    base_version = version_of_results(base)
    base_cases = {c["id"]: c for c in base["cases"]}
    ran = [c for c in run["cases"] if c.get("behaviour") is not None]
    # Only cases that ran with the baseline's own settings (per-case sysctls, MTU) are comparable.
    same = {c["id"] for c in ran if c["id"] in base_cases and _settings(c) == _settings(base_cases[c["id"]])}
    new = [c["id"] for c in ran if c["id"] not in base_cases]
    if ran and not same and not new:
        return None, (f"this run's settings differ from the baseline's ({base_path}): "
                      f"use `socklab compare` to see what they change")
    cmp = compare_runs([dict(base, cases=[base_cases[i] for i in sorted(same)]),
                        dict(run, cases=[c for c in ran if c["id"] in same])])
    other = len(ran) - len(same) - len(new)
    note = "".join([f"; {len(new)} new cases not in it" if new else "",
                    f"; {other} ran with other settings" if other else ""])
    if not exact:
        n = len({d.id for d in cmp.diffs} | {f.id for f in cmp.flips})
        head = (f"no baseline for kernel {version}; changed since {base_version} ({base_path}): "
                f"{n} of {len(same)} cases{note} (not failures)")
        return None, head + (":\n" + cmp.text() if cmp.changed else "")
    if cmp.changed and (run.get("emulator") or base.get("emulator")):
        # Under emulation the guest's timers run in real time while its steps run 10-40x slower:
        # a difference the attribution puts down to the emulator's timing (only extra or fewer
        # retransmissions, or a harness wait that expired) is named, not counted.
        from .kernels.attribution import attribute
        blamed = attribute(cmp)
        timing = sorted({a.case for a in blamed if a.cause == "emulator"})
        other = {a.case for a in blamed if a.cause != "emulator"} | {f.id for f in cmp.flips if f.what != "outcome"}
        if timing and not other:
            return True, (f"{len(same)} cases reproduce the baseline {base_path}{note}; {len(timing)} differ only "
                          f"by the emulator's timing (not failures): {', '.join(timing)}")
    elif cmp.changed:
        # On the machine itself, a loaded one (a CI job, an emulator beside it) can make a program's
        # reply slower than the 40 ms delayed-ACK timer: a pure ACK the reply would have carried goes
        # alone. A case differing only by such ACKs is named, not counted; anything else fails.
        from .kernels.attribution import delayed_acks_only
        acks = {d.id: delayed_acks_only(d) for d in cmp.diffs}
        timing = sorted(i for i, n in acks.items() if n)
        if timing and all(acks.values()) and not cmp.flips:
            return True, (f"{len(same)} cases reproduce the baseline {base_path}{note}; {len(timing)} differ only "
                          f"by a delayed ACK sent before a slow reply (the machine's timing, not failures): "
                          f"{', '.join(timing)}")
    if cmp.changed:
        return False, f"differs from the baseline {base_path}:\n" + cmp.text()
    return True, f"{len(same)} cases reproduce the baseline {base_path}{note}"
