"""report and compare refuse a corrupt record with one line, and compare never writes into a run (no privileges)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.results import write_results

DATA = Path(__file__).parent / "data" / "results"


def tree_digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def two_runs(tmp_path):
    for name in ("base", "again"):
        shutil.copytree(DATA / name, tmp_path / name)
    write_results(str(tmp_path / "base"))
    return tmp_path / "base", tmp_path / "again"       # "again" has no results.json: read from its cases


def corrupt_one_case(run: Path) -> Path:
    case = sorted(run.glob("cases/*/case.json"))[0]
    case.write_text(case.read_text()[:100])            # cut short, as a disk-full write would leave it
    return case


def one_error_line(capsys, prefix: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(prefix), err
    return err[0]


def test_compare_reads_a_run_folder_without_writing_into_it(two_runs, capsys):
    base, again = two_runs
    before = tree_digest(base), tree_digest(again)
    assert main(["compare", str(base), str(again)]) in (0, 1)
    assert (tree_digest(base), tree_digest(again)) == before
    assert not (again / "results.json").exists()


def test_compare_refuses_a_corrupt_case_and_writes_nothing(two_runs, capsys):
    base, again = two_runs
    bad = corrupt_one_case(again)
    before = tree_digest(again)
    assert main(["compare", str(base), str(again)]) == 2
    line = one_error_line(capsys, "socklab compare: ")
    assert str(bad) in line and "corrupt case record" in line
    assert tree_digest(again) == before


def test_report_refuses_a_corrupt_case(two_runs, capsys):
    base, _ = two_runs
    bad = corrupt_one_case(base)
    before = tree_digest(base)
    assert main(["report", str(base)]) == 2
    line = one_error_line(capsys, "socklab report: ")
    assert str(bad) in line
    assert tree_digest(base) == before


@pytest.mark.parametrize("edit", [lambda d: d.pop("cases"), lambda d: d.update(cases=[])], ids=["no-key", "empty"])
def test_compare_on_a_results_file_without_cases_is_a_usage_error(two_runs, tmp_path, capsys, edit):
    base, _ = two_runs
    data = json.loads((base / "results.json").read_text())
    edit(data)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(data))
    assert main(["compare", str(base / "results.json"), str(empty)]) == 2     # 1 would mean "runs differ"
    line = one_error_line(capsys, "socklab compare: ")
    assert str(empty) in line and "cases" in line
