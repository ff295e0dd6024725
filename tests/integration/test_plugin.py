"""harness.plugin seen from outside: pytest (pytester) on small case files, as root, and once in a
subprocess as an unprivileged user."""

from __future__ import annotations

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
    outcome = plugin_run.json("test_case.py::test_trace_unavailable[ipv4]", "outcome.json")
    assert outcome["outcome"] == "skipped" and outcome["longrepr"].endswith(reason), outcome


def test_a_claim_without_verdict_fails(plugin_run):
    """A case whose judge cannot find what it needs in the record errors at teardown, saying what was
    not observed; one that failed already is not judged."""
    got = outcomes(plugin_run)
    assert got["test_case.py::test_without_verdict[ipv4]"] == ["PASSED", "ERROR"], plugin_run.output
    assert re.search(r"ERROR at teardown of test_without_verdict\[ipv4\] _+\nthe case could not observe what its "
                     r"claim needs: no ss snapshot of client labelled 'never taken'", plugin_run.output), plugin_run.output
    assert got["test_case.py::test_failing_with_claim[ipv4]"] == ["FAILED"], plugin_run.output
    outcome = plugin_run.json("test_case.py::test_without_verdict[ipv4]", "outcome.json")
    assert (outcome["when"], outcome["outcome"], outcome["experiment"]) == ("teardown", "error", "ITEST-NOVERDICT")
    assert "could not observe" in outcome["longrepr"]
    assert plugin_run.returncode == pytest.ExitCode.TESTS_FAILED


def test_case_folder_holds_outcome_case_and_artifacts(plugin_run):
    """outcome.json and case.json (with the claim and the computed verdict) next to the README's artifacts."""
    nodeid = "test_case.py::test_with_verdict[ipv6]"
    folder = plugin_run.case_dir(nodeid)
    outcome = plugin_run.json(nodeid, "outcome.json")
    assert {k: outcome[k] for k in ("nodeid", "experiment", "article", "family", "outcome")} == {
        "nodeid": nodeid, "experiment": "ITEST-VERDICT", "article": "004", "family": "ipv6", "outcome": "passed"}
    case = plugin_run.json(nodeid, "case.json")
    assert (case["family"], case["experiment"], case["judges"]) == ("ipv6", "ITEST-VERDICT",
                                                                    ["ITEST-VERDICT:connect_succeeds"])
    assert [(v["verdict"], v["evidence"], v["claim"]) for v in case["verdicts"]] == [
        ("confirmed", "connect() returned 0", "a connect to a listener succeeds")]
    assert [s["flags"] for s in case["segments"][:3]] == ["S", "S.", "."]
    assert [c["op"] for c in case["calls"]][:4] == ["socket", "bind", "listen", "socket"]
    for name in ("packets.pcap", "segments.txt", "transitions.txt", "timeline.txt", "timeline.json"):
        assert os.path.getsize(os.path.join(folder, name)) > 0, name
    assert os.path.exists(os.path.join(folder, "ss.txt"))     # empty: the case took no snapshot


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
