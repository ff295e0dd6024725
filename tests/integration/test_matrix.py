"""`socklab matrix` end to end on one kernel: the connection cases in one Debian 6.1 guest, compared with
the host's own run. Skipped with the reason where QEMU or virtme-ng is missing; about a minute here
under TCG once the kernel is in the cache (/var/cache/socklab/kernels)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from harness.compare import compare
from harness.kernels import vm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONNECTION = "CONN-NOLISTEN or CONN-NOACCEPT or CONN-DATA"
# One guest for both tests (one xdist worker), started first: it is the suite's longest test.
# timeout: beyond the 900 s backstop below (pytest-timeout, `./bootstrap.sh test` gives other tests 300 s)
pytestmark = [pytest.mark.xdist_group("matrix"), pytest.mark.expected_duration(80), pytest.mark.timeout(1000)]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    if vm.missing():
        pytest.skip("socklab matrix cannot boot kernels here: " + "; ".join(vm.missing()))
    folder = tmp_path_factory.mktemp("matrix", numbered=True)
    # not under /tmp: the guest's /tmp is its own; the run folders come back through a writable share
    reports = os.path.join(REPO, "reports", f"test-matrix-{os.getpid()}")
    argv = [sys.executable, "-m", "harness.cli", "matrix", "debian:6.1", "--reports", reports, "--name", "smoke",
            "-n", "0", "--", "-k", CONNECTION, "--socklab-baseline", str(folder / "none")]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The guest watchdog stops a stuck guest (no progress for 240 s) and boots it once more, so the
        # matrix ends by itself well inside this backstop.
        stdout, stderr = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        proc.terminate()                # socklab matrix stops its guest on SIGTERM
        stdout, stderr = proc.communicate(timeout=60)
        logs = _guest_logs(reports)
        shutil.rmtree(reports, ignore_errors=True)
        pytest.fail(f"socklab matrix still ran after 900 s:\n{stdout[-4000:]}{stderr[-2000:]}{logs}", pytrace=False)
    except BaseException:               # interrupted (Ctrl-C, pytest-timeout): the matrix and its guest go too
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(reports, ignore_errors=True)
        raise
    if "no such kernel" in stdout + stderr or "fetching Debian's package lists" in stderr:
        shutil.rmtree(reports, ignore_errors=True)
        pytest.skip(f"debian:6.1 could not be fetched: {stderr.strip()[-300:]}")
    try:
        assert proc.returncode == 0, stdout[-4000:] + stderr[-2000:] + _guest_logs(reports)
        yield os.path.join(reports, "smoke"), stdout
    finally:
        shutil.rmtree(reports, ignore_errors=True)


def _guest_logs(reports: str) -> str:
    """The end of each guest's log and console (the folder is removed after the test, so a failure
    shows them)."""
    out = []
    for root, _, files in os.walk(reports):
        for f in sorted(files):
            if f.endswith(".log") or ".console." in f:
                with open(os.path.join(root, f), errors="replace") as fh:
                    out.append(f"\n--- {f} (end) ---\n" + fh.read()[-3000:])
    return "".join(out)


def test_the_guest_ran_the_connection_cases_on_6_1(matrix):
    folder, out = matrix
    m = json.load(open(os.path.join(folder, "matrix.json")))
    host, guest = m["kernels"]
    assert host["spec"] == "host" and host["emulator"] is None
    assert guest["spec"] == "debian:6.1" and guest["kernel"].startswith("6.1.") and guest["emulator"] in ("KVM", "TCG")
    assert guest["outcomes"] == {"passed": 6}, guest
    assert host["outcomes"] == {"passed": 6}, host
    assert "booted under" in out and re.search(r"debian:6.1 \(6\.1\.\d+\): \d/6 cases, \d+m\d\ds elapsed", out)


def test_6_1_behaves_like_the_host_in_the_connection_cases(matrix):
    # wscale no longer follows memory (pinned tcp_rmem), and 6.1's dport=0 SYN_RECV event joins its
    # connection: nothing differs in these three experiments
    folder, _ = matrix
    runs = sorted(os.path.join(folder, d) for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    host = next(r for r in runs if os.path.basename(r).startswith("host-"))
    guest = next(r for r in runs if r != host)
    cmp = compare([host, guest])
    assert not cmp.diffs and not cmp.flips, cmp.text()
    assert cmp.runs[1]["emulator"] in ("KVM", "TCG") and cmp.runs[1]["kernel_version"].startswith("6.1.")
    html = open(os.path.join(folder, "matrix.html")).read()
    assert "socklab matrix" in html and cmp.runs[1]["kernel"] in html


def test_the_guests_ss_snapshots_are_printed_by_ss_after_the_run(matrix):
    """In the guest a named snapshot keeps the kernel's sock_diag answer; on the host `ss -tanoi` prints it."""
    from harness.record import CaseRecord
    folder, out = matrix
    guest = next(os.path.join(folder, d) for d in os.listdir(folder)
                 if os.path.isdir(os.path.join(folder, d)) and not d.startswith("host-"))
    snaps = []
    for case in os.listdir(os.path.join(guest, "cases")):
        case_dir = os.path.join(guest, "cases", case)
        rec = CaseRecord.load(os.path.join(case_dir, "case.json"))
        named = [s for s in rec.ss if s.diag]
        snaps += named
        for s in named:
            assert os.path.getsize(os.path.join(case_dir, s.diag)) > 0
            assert s.text in open(os.path.join(case_dir, "ss.txt")).read()
    assert snaps, "the connection cases took no named ss snapshot in the guest"
    for s in snaps:
        assert s.source == "ss replay", (s.label, s.source)
        assert s.text.splitlines()[0].split()[:2] == ["State", "Recv-Q"] and s.text.splitlines()[0].rstrip().endswith("Process")
    assert re.search(r"\d+ ss snapshots printed by ss from the answers the guest recorded", out), out[-2000:]
