"""harness.plugin seen from outside: pytest (pytester) on small case files, as root, and once in a
subprocess as an unprivileged user."""

from __future__ import annotations

import json
import os
import re
import tempfile

import pytest

from harness import privileges

from .conftest import child_env, case_run_argv, unprivileged_argv

CASES = '''
import pytest

from harness.judge import judge, verdict_if


def test_both(family):
    assert family in ("ipv4", "ipv6")


@pytest.mark.families("ipv4")
def test_v4_only(family):
    assert family == "ipv4"


@pytest.mark.families("ipv6")
def test_v6_only(family):
    assert family == "ipv6"


def test_no_family():
    pass


@judge("ITEST-VERDICT", claims=[], text="a connect to a listener succeeds")
def connect_succeeds(rec):
    call = rec.call("connect")
    return verdict_if(call.ok, f"connect() returned {call.result()}")


@judge("ITEST-NOVERDICT", claims=[], text="a claim whose case never takes the snapshot it needs")
def needs_a_snapshot(rec):
    return verdict_if(not rec.snapshot("client", "never taken").rows, "no rows")


@pytest.mark.article("004")
@pytest.mark.claim(connect_succeeds)
def test_with_verdict(lab, family):
    assert lab.family == family
    srv = lab.server.socket()
    srv.bind(50000)
    srv.listen(1)
    lab.client.socket().connect(lab.hosts.server, 50000)


@pytest.mark.claim(needs_a_snapshot)
@pytest.mark.families("ipv4")
def test_without_verdict(lab, family):
    lab.client.socket()


@pytest.mark.claim(connect_succeeds)
@pytest.mark.families("ipv4")
def test_failing_with_claim(lab, family):
    assert False, "the case's own failure"


@pytest.mark.families("ipv4")
def test_trace_unavailable(lab, family):
    lab.trace, lab.trace_unavailable = None, "tracefs switched off by the test"
    lab.expect_transitions("client", "CLOSE -> SYN_SENT")
'''

SUMMARY_RE = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS) (\S+)", re.M)
SKIP_RE = re.compile(r"^SKIPPED \[(\d+)\] (\S+?):(\d+): (.*)$", re.M)


@pytest.fixture
def plugin_run(run_pytest):
    """One pytest run (as root, in this process) of CASES with every outcome in the short summary."""
    return run_pytest(CASES, "-rA")


def outcomes(run) -> dict:
    """{nodeid: [outcomes]} from the short test summary (a teardown error comes after a PASSED)."""
    out = {}
    for word, nodeid in SUMMARY_RE.findall(run.output):
        out.setdefault(nodeid, []).append(word)
    return out


def test_family_parametrisation_ids_and_the_families_marker(plugin_run):
    """`family` runs as [ipv4] and [ipv6]; families(...) restricts it; a case without it is not parametrised."""
    got = outcomes(plugin_run)
    ids = {n.split("::")[1] for n in got}
    assert {i for i in ids if not i.startswith(("test_with", "test_failing", "test_trace"))} == {
        "test_both[ipv4]", "test_both[ipv6]", "test_v4_only[ipv4]", "test_v6_only[ipv6]", "test_no_family"}
    for i in ("test_both[ipv4]", "test_both[ipv6]", "test_v4_only[ipv4]", "test_v6_only[ipv6]", "test_no_family"):
        assert got[f"test_case.py::{i}"] == ["PASSED"], plugin_run.output
    for fam in ("ipv4", "ipv6"):
        assert got[f"test_case.py::test_with_verdict[{fam}]"] == ["PASSED"], plugin_run.output


def test_trace_unavailable_becomes_a_skip_with_its_reason(plugin_run):
    """TraceUnavailable raised inside a case is a skip at the case's own line, saying why."""
    skips = SKIP_RE.findall(plugin_run.output)
    reason = "kernel state transitions unavailable: tracefs switched off by the test"
    assert [(n, path, r) for n, path, _, r in skips] == [("1", "test_case.py", reason)], plugin_run.output
    assert "test_case.py::test_trace_unavailable[ipv4]" not in outcomes(plugin_run)
    outcome = plugin_run.json("test_case.py::test_trace_unavailable[ipv4]", "case.json")["outcome"]
    assert outcome["outcome"] == "skipped" and outcome["longrepr"].endswith(reason), outcome


def test_a_claim_without_verdict_fails(plugin_run):
    """A case whose judge cannot find what it needs in the record errors at teardown, saying what was
    not observed; one that failed already is not judged."""
    got = outcomes(plugin_run)
    assert got["test_case.py::test_without_verdict[ipv4]"] == ["PASSED", "ERROR"], plugin_run.output
    assert re.search(r"ERROR at teardown of test_without_verdict\[ipv4\] _+\nthe case could not observe what its "
                     r"claim needs: no ss snapshot of client labelled 'never taken'", plugin_run.output), plugin_run.output
    assert got["test_case.py::test_failing_with_claim[ipv4]"] == ["FAILED"], plugin_run.output
    case = plugin_run.json("test_case.py::test_without_verdict[ipv4]", "case.json")
    assert (case["outcome"]["when"], case["outcome"]["outcome"], case["experiment"]) == (
        "teardown", "error", "ITEST-NOVERDICT")
    assert "could not observe" in case["outcome"]["longrepr"]
    assert plugin_run.returncode == pytest.ExitCode.TESTS_FAILED


def test_case_folder_holds_the_case_record_with_its_outcome_and_artifacts(plugin_run):
    """case.json (with the ids, the claim, the computed verdict and the pytest outcome) next to the
    README's artifacts; no second record (outcome.json) beside it."""
    nodeid = "test_case.py::test_with_verdict[ipv6]"
    folder = plugin_run.case_dir(nodeid)
    case = plugin_run.json(nodeid, "case.json")
    assert (case["name"], case["articles"], case["schema"], case["lab"]) == (nodeid, ["004"], 3, True)
    assert case["outcome"] == {"outcome": "passed", "when": "call", "longrepr": None}
    assert not os.path.exists(os.path.join(folder, "outcome.json"))
    assert (case["family"], case["experiment"], case["judges"]) == ("ipv6", "ITEST-VERDICT",
                                                                    ["ITEST-VERDICT:connect_succeeds"])
    assert [(v["verdict"], v["evidence"], v["claim"]) for v in case["verdicts"]] == [
        ("confirmed", "connect() returned 0", "a connect to a listener succeeds")]
    assert [s["flags"] for s in case["segments"][:3]] == ["S", "S.", "."]
    assert [c["op"] for c in case["calls"]][:4] == ["socket", "bind", "listen", "socket"]
    for name in ("packets.pcap", "segments.txt", "transitions.txt", "timeline.txt", "timeline.json"):
        assert os.path.getsize(os.path.join(folder, name)) > 0, name
    assert os.path.exists(os.path.join(folder, "ss.txt"))     # empty: the case took no snapshot


OUTCOMES = '''
import os
import signal

import pytest


def test_passes(lab):
    lab.client.socket()


def test_fails(lab):
    lab.client.socket()
    assert 1 == 2, "the case's own failure"


def test_skips_in_the_case(lab):
    pytest.skip("nothing to see here")


@pytest.mark.skip(reason="skipped before its lab existed")
def test_skipped_at_setup(lab):
    pass


@pytest.mark.xfail(reason="known to fail here", strict=True)
def test_expected_failure(lab):
    assert 1 == 2


@pytest.mark.experiment("ITEST-STOP")
def test_stopped(lab):
    lab.client.socket()
    os.kill(os.getpid(), signal.SIGINT)


def test_never_reached(lab):
    pass
'''


def test_the_case_record_carries_the_pytest_outcome_and_no_outcome_json_is_written(run_pytest):
    """passed, failed, skipped (in the case, and before its lab existed), xfailed and interrupted: each
    in the case's case.json, the lab's own record where a lab was built; no outcome.json anywhere."""
    run = run_pytest(OUTCOMES, subprocess=True)        # the SIGINT must stop that pytest, not this one
    assert run.returncode == pytest.ExitCode.INTERRUPTED, run.output
    got = {}
    for name in ("passes", "fails", "skips_in_the_case", "skipped_at_setup", "expected_failure", "stopped"):
        rec = run.json(f"test_case.py::test_{name}", "case.json")
        got[name] = (rec["outcome"]["outcome"], rec["outcome"]["when"], rec["lab"], bool(rec.get("hosts")))
    assert got == {"passes": ("passed", "call", True, True), "fails": ("failed", "call", True, True),
                   "skips_in_the_case": ("skipped", "call", True, True),
                   "skipped_at_setup": ("skipped", "setup", False, False),
                   "expected_failure": ("xfailed", "call", True, True),
                   "stopped": ("interrupted", "call", True, True)}, got
    assert "the case's own failure" in run.json("test_case.py::test_fails", "case.json")["outcome"]["longrepr"]
    assert run.json("test_case.py::test_skipped_at_setup", "case.json")["outcome"]["longrepr"] == \
        "Skipped: skipped before its lab existed"
    assert run.json("test_case.py::test_stopped", "case.json")["experiment"] == "ITEST-STOP"
    cases = os.path.join(run.run_dir, "cases")
    assert not [f for d in os.listdir(cases) for f in os.listdir(os.path.join(cases, d)) if f == "outcome.json"]
    assert len(os.listdir(cases)) == 6          # test_never_reached never started
    with open(os.path.join(run.run_dir, "results.json")) as fh:
        results = {c["id"].split("::")[1]: c for c in json.load(fh)["cases"]}
    assert {k: c["outcome"] for k, c in results.items()} == {f"test_{k}": v[0] for k, v in got.items()}
    assert results["test_skipped_at_setup"]["behaviour"] is None


RELEASED = '''
import gc
import weakref

from harness.wait import wait_until

seen = []


def test_builds_a_lab(lab):
    seen.append(weakref.ref(lab))
    lab.client.socket()


def test_the_lab_before_is_gone(request):
    # Its programs' reader threads end a moment after their control sockets close: wait for that.
    def gone():
        gc.collect()
        return seen[0]() is None
    assert seen
    wait_until(gone, 2.0, "the previous case's lab to be freed")
'''


def test_a_case_lab_is_released_once_its_reports_are_made(run_pytest):
    """The plugin drops its reference to a case's Lab after the case's last report: the labs of a
    worker (frames, segments, snapshots) do not pile up until the session ends."""
    run = run_pytest(RELEASED)
    assert run.returncode == pytest.ExitCode.OK, run.output


TEXT_CLAIM = '''
import pytest


@pytest.mark.claim("the client goes CLOSE -> SYN_SENT")
def test_claim_as_text(lab):
    lab.client.socket()
'''


def test_a_claim_marker_without_a_judge_fails_at_setup_saying_how(run_pytest):
    """The retired lab.verdict() style (a claim's text in the marker) is one line at set-up naming
    what a claim case needs: a judge; no lab is built for it."""
    run = run_pytest(TEXT_CLAIM)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.output
    assert "@pytest.mark.claim holds 'the client goes CLOSE -> SYN_SENT': a claim case must carry a judge via " \
           "@pytest.mark.claim(judge_fn)" in run.output, run.output
    assert "lab.verdict" not in run.output
    rec = run.json("test_case.py::test_claim_as_text", "case.json")
    assert (rec["outcome"]["outcome"], rec["outcome"]["when"], rec["lab"]) == ("failed", "setup", False)


UNPRIVILEGED = '''
import os

import pytest

from harness import privileges


def test_runs_without_privileges():
    assert (os.getuid(), os.geteuid(), os.getgid()) == (65534, 65534, 65534)
    assert privileges.missing() == privileges.REASON


def test_lab_in_both_families(lab, family):
    pass


def test_lab_alone(lab):
    pass


def test_hosts_only(hosts):
    pass


@pytest.mark.families("ipv6")
def test_lab_v6(lab, family):
    pass
'''


def test_without_privileges_cases_skip_with_one_reason_line(spawn):
    """As uid 65534 without capabilities: plain tests run, every lab/hosts case skips, one grouped reason line."""
    with tempfile.TemporaryDirectory(prefix="socklab-itest-", dir="/tmp") as folder:
        os.chmod(folder, 0o777)          # the unprivileged user reads the case and writes its reports
        with open(os.path.join(folder, "test_case.py"), "w") as fh:
            fh.write(UNPRIVILEGED)
        with open(os.path.join(folder, "pytest.ini"), "w") as fh:
            fh.write("[pytest]\n")          # pins the rootdir to this folder
        env = dict(child_env(), HOME=folder)
        run = spawn(unprivileged_argv(case_run_argv(folder), folder), cwd=folder, env=env)
        returncode = run.finish(timeout=60)
    assert returncode == pytest.ExitCode.OK, run.output
    assert re.search(r"^1 passed, 5 skipped", run.output, re.M), run.output
    assert run.output.count(privileges.REASON) == 1, run.output
    assert re.search(rf"^SKIPPED \[5\] .*: {re.escape(privileges.REASON)}$", run.output, re.M), run.output


FORKED = '''
import json
import os
import sys
import warnings


def test_where_am_i(lab, family):
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as cmd, open(f"/proc/{os.getppid()}/comm") as comm:
        parent = {"cmdline": cmd.read().replace(b"\\0", b" ").decode(), "comm": comm.read().strip()}
    with open(os.path.join(os.path.dirname(__file__), f"parent-{family}"), "w") as fh:
        json.dump({**parent, "stdin": os.readlink("/proc/self/fd/0"),
                   "hooks": [type(f).__name__ for f in sys.meta_path].count("AssertionRewritingHook"),
                   "recording": warnings.showwarning is not warnings._showwarning_orig}, fh)
    assert lab.family in ("ipv4", "ipv6")
'''


@pytest.mark.parametrize("spawned", [False, True], ids=["forked", "spawned"])
def test_xdist_workers_are_forked_from_the_fork_server_unless_told_to_spawn(pytester, spawned):
    pytester.makepyfile(test_case=FORKED)
    args = ["-n", "2"] + (["--socklab-spawn-workers"] if spawned else [])
    reports = pytester.path / "reports"     # with assertion rewriting on: the workers' import hooks are checked
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "--socklab-reports", str(reports),
                                           "--socklab-run", "itest", *args, timeout=60)
    assert result.ret == 0, result.stdout.str()
    parents = [json.loads(p.read_text()) for p in pytester.path.glob("parent-*")]
    assert len(parents) == 2, parents       # one per family
    for parent in parents:
        if spawned:     # started by the controller itself: `python -mpytest ...` under pytester
            assert "pytest" in parent["cmdline"] and parent["comm"] != "socklab-forksrv", parent
        else:           # the fork server, forked from the controller
            assert parent["comm"] == "socklab-forksrv", parent
        # as a `python -c` worker of xdist's has them, not as the controller had them when it forked
        assert parent["hooks"] == 1 and parent["recording"] is False, parent
    with open(reports / "itest" / "results.json") as fh:
        results = json.load(fh)
    assert [c["outcome"] for c in results["cases"]] == ["passed", "passed"]
    from harness.results import harness_version     # as pytest's plugin list gave it to the plugin
    assert results["harness"] == harness_version() != "unknown"


CRASHING = '''
import os


def test_before():
    pass


def test_kills_its_worker():
    os.kill(os.getpid(), 9)


def test_after_1():
    pass


def test_after_2():
    pass
'''


def test_a_crashed_worker_ends_the_run_instead_of_hanging_it(pytester):
    """pytest-xdist 3.8.0 hangs a loadgroup run that replaces a crashed worker; under the plugin's
    loadgroup no worker is replaced, so the run ends, failing the case that crashed."""
    pytester.makepyfile(test_case=CRASHING)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--socklab-reports",
                                           str(pytester.path / "reports"), timeout=60)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["*worker 'gw*' crashed while running 'test_case.py::test_kills_its_worker'*",
                                 "*FAILED test_case.py::test_kills_its_worker*"])


EARLY_HELPERS = '''
import pytest


@pytest.fixture
def before_lab():
    from harness import launcher, tracefs
    return launcher._launcher is not None, tracefs._pool is not None


def test_helpers_started_at_collection(before_lab, lab):
    assert before_lab == (True, True)
'''

NO_LAB = '''
def test_no_lab():
    from harness import launcher, tracefs
    assert (launcher._launcher, tracefs._pool) == (None, None)
'''


IMPORT_AHEAD = '''
import os
import sys

import pytest

LATER = ("harness.sockdiag", "harness.ss", "harness.expect", "harness.artifacts", "harness.report", "harness.baseline")


@pytest.fixture
def imported_at_setup(lab):
    return [m for m in LATER if m in sys.modules]


def test_steps_begin(imported_at_setup, lab):
    from harness import importahead
    assert imported_at_setup == []
    thread = importahead._started[os.getpid()]
    assert thread.name == "socklab-import-ahead"
    thread.join(10)
    assert [m for m in importahead.CASE + importahead.RUN if m not in sys.modules] == []


def test_second_case(lab):
    from harness import importahead
    assert len(importahead._started) == 1
'''

NO_LAB_NO_AHEAD = '''
def test_no_lab():
    from harness import importahead
    assert importahead._started == {}
'''


def test_the_first_cases_steps_import_what_the_run_needs_later(run_pytest):
    """A lab's set-up imports only set-up's modules; when the first case's steps begin, the rest of
    the lab side and the report's side are imported in one thread, once per process; a session
    without labs starts none."""
    run = run_pytest(IMPORT_AHEAD, subprocess=True)
    assert run.returncode == 0, run.output
    run = run_pytest(NO_LAB_NO_AHEAD, subprocess=True)
    assert run.returncode == 0, run.output


@pytest.mark.parametrize("source", [EARLY_HELPERS, NO_LAB], ids=["lab", "no-lab"])
def test_a_session_with_labs_starts_its_launcher_and_first_instance_at_collection(run_pytest, source):
    """The socket-program launcher and the first tracefs instance are started when collection ends,
    so they overlap the lab side's import in the first case's set-up; a session without labs starts
    neither."""
    run = run_pytest(source, subprocess=True)
    assert run.returncode == 0, run.output
