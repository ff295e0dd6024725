"""`socklab compare` catches real behaviour changes, and only those: three cases run under the default
settings and under each of three sysctls, each run compared with the default one."""

import os
import subprocess
import sys

import pytest

from harness.compare import compare

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = "cases/test_setup.py::test_accept_then_data_both_ways[ipv4]"
CLOSE = "cases/test_teardown.py::test_four_way_close[ipv4]"
BACKLOG = "cases/test_setup.py::test_backlog_bounds_accept_queue[ipv4-default]"
CASES = (DATA, CLOSE, BACKLOG)

# What each setting changes, from the kernel's documented behaviour:
SETTINGS = {
    # no TS option in any SYN: every case's segments change
    "net.ipv4.tcp_timestamps=0": {DATA, CLOSE, BACKLOG},
    # no timewait socket is kept: the active closer's TIME-WAIT disappears from ss
    "net.ipv4.tcp_max_tw_buckets=0": {CLOSE},
    # a full accept queue answers the late handshake with RST instead of dropping it
    "net.ipv4.tcp_abort_on_overflow=1": {BACKLOG},
}


def run(tmp_path, name, *sysctls):
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
            "--socklab-reports", str(tmp_path), "--socklab-run", name, "--socklab-baseline", str(tmp_path / "none")]
    for item in sysctls:
        argv += ["--socklab-sysctl", item]
    proc = subprocess.run(argv + list(CASES), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "3 passed" in proc.stdout or "failed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    return str(tmp_path / name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("settings")
    out = {"default": run(tmp, "default")}
    for i, item in enumerate(SETTINGS):
        out[item] = run(tmp, f"s{i}", item)
    return out


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_compare_flags_exactly_the_cases_the_setting_changes(runs, setting):
    """Compared with the default run, the run under `setting` differs in exactly the expected cases."""
    cmp = compare([runs["default"], runs[setting]])
    flagged = {d.id for d in cmp.diffs} | {f.id for f in cmp.flips}
    assert flagged == SETTINGS[setting], cmp.text()
    assert not cmp.added and not cmp.missing


def test_the_default_run_compares_equal_with_itself_again(runs, tmp_path):
    """A second default run: nothing flagged (so the flags above are the settings', not noise)."""
    again = run(tmp_path, "again")
    cmp = compare([runs["default"], again])
    assert not cmp.changed, cmp.text()
