"""`socklab judge RUN_DIR`: a recorded run judged again without running anything."""

from __future__ import annotations

import json
import os

import pytest

from harness.cli import main
from harness.results import load_results
from tests.counterfactuals import RECORDS

CASES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "cases")


def _run_folder(tmp_path, names, *, before_schema_3=False):
    """A run folder holding recorded cases as the plugin leaves them: case.json with the pytest
    outcome in it, or (`before_schema_3`) beside it in outcome.json, as older runs have it."""
    run = tmp_path / "run-recorded"
    for name in names:
        d = run / "cases" / name
        d.mkdir(parents=True)
        rec = json.loads(open(os.path.join(RECORDS, f"{name}.json")).read())
        outcome = {"when": "call", "outcome": "passed", "longrepr": None}
        if before_schema_3:
            (d / "outcome.json").write_text(json.dumps({"nodeid": rec["name"], "experiment": rec["experiment"],
                                                        "family": rec["family"], **outcome}))
        else:
            rec.update(outcome=outcome, schema=3)
        (d / "case.json").write_text(json.dumps(rec))
    return run


def _verdicts(run):
    return {c["id"]: [(v["judge"], v["verdict"]) for v in c["verdicts"]] for c in load_results(str(run))["cases"]}


@pytest.mark.parametrize("before_schema_3", [False, True], ids=["outcome-in-record", "outcome-json"])
def test_rejudging_a_run_gives_its_own_verdicts(tmp_path, capsys, before_schema_3):
    run = _run_folder(tmp_path, ["CONN-NOLISTEN", "CLOSE-4WAY", "TIMEWAIT-4TUPLE"], before_schema_3=before_schema_3)
    assert main(["report", str(run)]) == 0
    recorded = _verdicts(run)
    assert main(["judge", str(run), "--cases", CASES]) == 0
    out = capsys.readouterr().out
    assert "0 case(s) judged otherwise than recorded" in out, out
    assert _verdicts(run) == recorded
    assert sum(len(v) for v in recorded.values()) == 8          # 1 + 6 + 1 claims
    assert os.path.exists(run / "index.html")
    assert {c["outcome"] for c in load_results(str(run))["cases"]} == {"passed"}


def test_rejudging_an_edited_record_changes_the_verdict(tmp_path, capsys):
    run = _run_folder(tmp_path, ["LINGER0"])
    path = run / "cases" / "LINGER0" / "case.json"
    rec = json.loads(path.read_text())
    for seg in rec["segments"]:
        if seg["src"] == "client" and "R" in seg["flags"]:
            seg["flags"] = "F."
    path.write_text(json.dumps(rec))
    assert main(["judge", str(run), "--cases", CASES]) == 0
    assert "1 case(s) judged otherwise than recorded" in capsys.readouterr().out
    assert [v for vs in _verdicts(run).values() for v in vs] == [("LINGER0:rst_closes", "refuted")]


def test_judge_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["judge", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
