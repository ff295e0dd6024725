"""Choosing cases by experiment and article (-k, --experiment, --article, `socklab run`), a selection
that matches nothing, and pytest's own outcome words (xfailed, xpassed) in the record, the results
and the summary line. pytest (pytester) runs on a small case file; no lab, so no root needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Articles come from the experiment's catalogue row (harness/articles.json): CONN-DATA 004,
# TIMEWAIT-LEN 000-003, SIM-OPEN 000.
CASES = '''
import pytest


@pytest.mark.article("004")
@pytest.mark.experiment("CONN-DATA")
def test_data():
    pass


@pytest.mark.experiment("TIMEWAIT-LEN")
def test_listen_only():
    pass


@pytest.mark.experiment("CONN-DATA")
@pytest.mark.xfail(reason="known to fail here")
def test_expected_failure():
    assert 1 == 2


@pytest.mark.experiment("SIM-OPEN")
@pytest.mark.xfail(reason="may fail")
def test_unexpected_pass():
    pass
'''


@pytest.fixture(autouse=True)
def _root_only():
    """Overrides the integration tests' root check: these cases build no lab."""


def ran(run) -> list[str]:
    return sorted(os.path.basename(d).rsplit("__", 1)[-1] for d in os.listdir(os.path.join(run.run_dir, "cases")))


def test_experiment_and_article_ids_are_keywords(run_pytest):
    run = run_pytest(CASES, "-k", "CONN-DATA")
    assert run.returncode == 0, run.output
    assert ran(run) == ["test_data", "test_expected_failure"]
    run = run_pytest(CASES, "-k", "001 or SIM-OPEN")
    assert ran(run) == ["test_listen_only", "test_unexpected_pass"], run.output


def test_experiment_and_article_options_select_by_id(run_pytest):
    run = run_pytest(CASES, "--experiment", "TIMEWAIT-LEN", "--experiment", "SIM-OPEN")
    assert run.returncode == 0 and ran(run) == ["test_listen_only", "test_unexpected_pass"], run.output
    run = run_pytest(CASES, "--article", "004")
    assert ran(run) == ["test_data", "test_expected_failure"], run.output
    run = run_pytest(CASES, "--article", "004", "--experiment", "TIMEWAIT-LEN")
    assert run.returncode == 5 and "matched no case" in run.output, run.output


def test_a_selection_matching_nothing_says_so_and_lists_the_ids(run_pytest):
    run = run_pytest(CASES, "-k", "CONN-SYNSENT-DROP")
    assert run.returncode == 5, run.output
    line = next(l for l in run.output.splitlines() if "matched no case" in l)
    assert line == "socklab: the selection -k 'CONN-SYNSENT-DROP' matched no case."
    known = next(l for l in run.output.splitlines() if l.strip().startswith("known experiments:"))
    assert {"CONN-DATA", "CONN-NOACCEPT", "TIMEWAIT-LEN"} <= set(known.split(":", 1)[1].replace(",", " ").split())
    assert not os.path.exists(run.run_dir)          # nothing ran: no run folder, no report


def test_a_mistyped_id_is_a_usage_error_naming_the_closest(run_pytest):
    run = run_pytest(CASES, "--experiment", "CONN-DATX")
    assert run.returncode == 4, run.output
    assert "--experiment CONN-DATX: no such id in harness/articles.json; closest: CONN-DATA" in run.output


def test_socklab_run_passes_the_selection_on(tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "test_sel.py").write_text(CASES)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    argv = [sys.executable, "-m", "harness.cli", "run", "--cases", str(cases), "--reports", str(tmp_path / "r"), "-n", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(argv + ["--name", "sel", "--experiment", "TIMEWAIT-LEN"], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.listdir(tmp_path / "r" / "sel" / "cases") == ["cases_test_sel.py__test_listen_only"]
    assert f"socklab: run sel: report {tmp_path / 'r' / 'sel' / 'index.html'}" in proc.stdout
    proc = subprocess.run(argv + ["--name", "none", "--article", "003", "--experiment", "CONN-DATA"], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "matched no case" in proc.stdout and "artifacts in" not in proc.stdout
    assert "socklab: run none: no case ran (pytest exit status 5); nothing written" in proc.stdout
    assert not (tmp_path / "r" / "none").exists()


def test_xfail_and_xpass_are_named_as_pytest_names_them(run_pytest):
    run = run_pytest(CASES, "-k", "expected_failure or unexpected_pass")
    assert run.returncode == 0, run.output
    xfail = run.json("test_case.py::test_expected_failure", "case.json")["outcome"]
    xpass = run.json("test_case.py::test_unexpected_pass", "case.json")["outcome"]
    assert (xfail["outcome"], xpass["outcome"]) == ("xfailed", "xpassed")
    assert xfail["longrepr"].startswith("xfail: known to fail here\n") and "assert 1 == 2" in xfail["longrepr"]
    with open(os.path.join(run.run_dir, "results.json")) as fh:
        results = json.load(fh)
    assert sorted(c["outcome"] for c in results["cases"]) == ["xfailed", "xpassed"]
    summary = next(l for l in run.output.splitlines() if l.startswith("socklab: 2 cases"))
    assert summary.startswith("socklab: 2 cases (1 xfailed, 1 xpassed);"), summary
    with open(os.path.join(run.run_dir, "index.html")) as fh:
        page = fh.read()
    assert '<span class="xfailed">xfailed</span>' in page and '<span class="xpassed">xpassed</span>' in page


def test_an_interrupted_case_is_recorded_as_interrupted(run_pytest):
    """Ctrl-C (SIGINT) in the middle of a case: pytest stops, and the case's outcome says interrupted."""
    run = run_pytest('''
import os, signal
import pytest


@pytest.mark.experiment("CONN-DATA")
def test_stopped():
    os.kill(os.getpid(), signal.SIGINT)
''', subprocess=True)          # the SIGINT must stop that pytest, not this one
    assert run.returncode == 2, run.output
    assert run.json("test_case.py::test_stopped", "case.json")["outcome"]["outcome"] == "interrupted"
    with open(os.path.join(run.run_dir, "results.json")) as fh:
        assert [c["outcome"] for c in json.load(fh)["cases"]] == ["interrupted"]
    assert "socklab: 1 cases (1 interrupted)" in run.output
