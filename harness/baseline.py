"""Baselines: the results of a default run on one kernel, kept in the repo, that later runs on the
same kernel must reproduce. `baselines/<kernel release>.json`; `socklab baseline` records one."""

from __future__ import annotations

import os
import shutil

from .compare import compare_runs
from .results import load_results


def path_for(folder: str, release: str | None = None) -> str:
    """The baseline file of kernel `release` (default: this machine's) in `folder`."""
    return os.path.join(folder, f"{release or os.uname().release}.json")


def record(run_dir: str, folder: str) -> str:
    """Keep the run's results.json as the baseline of the kernel it ran on."""
    results = load_results(run_dir)
    os.makedirs(folder, exist_ok=True)
    dest = path_for(folder, results["kernel"])
    shutil.copyfile(os.path.join(run_dir, "results.json"), dest)
    return dest


def check(run_dir: str, folder: str) -> tuple[bool | None, str]:
    """Compare a run with its kernel's baseline, over the cases the run executed.

    Returns (None, why) when there is nothing to compare (no baseline for this kernel, or the run used
    other settings), (True, summary) when the run reproduces the baseline, (False, comparison text)
    when behaviour, verdicts or outcomes changed.
    """
    run = load_results(run_dir)
    base_path = path_for(folder, run["kernel"])
    if not os.path.exists(base_path):
        return None, (f"no baseline for kernel {run['kernel']} in {folder}; record one with "
                      f"`socklab baseline` (runs the catalogue and keeps its results)")
    base = load_results(base_path)
    base_cases = {c["id"]: c for c in base["cases"]}
    ran = [c for c in run["cases"] if c.get("behaviour") is not None]
    # Only cases that ran with the baseline's own settings (per-case sysctls, MTU) are comparable.
    same = {c["id"] for c in ran if c["id"] in base_cases
            and (c.get("sysctls"), c.get("mtu")) == (base_cases[c["id"]].get("sysctls"), base_cases[c["id"]].get("mtu"))}
    new = [c["id"] for c in ran if c["id"] not in base_cases]
    if ran and not same and not new:
        return None, (f"this run's settings differ from the baseline's ({base_path}): "
                      f"use `socklab compare` to see what they change")
    cmp = compare_runs([dict(base, cases=[base_cases[i] for i in sorted(same)]),
                        dict(run, cases=[c for c in ran if c["id"] in same])])
    if cmp.changed:
        return False, f"differs from the baseline {base_path}:\n" + cmp.text()
    other = len(ran) - len(same) - len(new)
    note = "".join([f"; {len(new)} new cases not in it" if new else "",
                    f"; {other} ran with other settings" if other else ""])
    return True, f"{len(same)} cases reproduce the baseline {base_path}{note}"
