"""Baselines: recorded per kernel, reproduced by a run of the same kernel and settings, a change fails."""

import json
import shutil
from pathlib import Path

from harness import baseline
from harness.results import write_results

DATA = Path(__file__).parent / "data" / "results"


def run_copy(tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(DATA / name, dst)
    write_results(str(dst))
    return dst


def test_a_run_reproduces_the_baseline_of_its_kernel(tmp_path):
    folder = tmp_path / "baselines"
    path = baseline.record(str(run_copy(tmp_path, "base")), str(folder))
    kernel = json.loads(Path(path).read_text())["kernel"]
    assert Path(path).name == f"{kernel}.json"
    ok, text = baseline.check(str(run_copy(tmp_path, "again")), str(folder))
    assert ok is True and "reproduce the baseline" in text, text


def test_a_changed_behaviour_fails_with_the_comparison(tmp_path):
    folder = tmp_path / "baselines"
    path = Path(baseline.record(str(run_copy(tmp_path, "base")), str(folder)))
    data = json.loads(path.read_text())
    case = next(c for c in data["cases"] if c["behaviour"] and c["behaviour"]["segments"])
    case["behaviour"]["segments"][0] += " <changed>"
    path.write_text(json.dumps(data))
    ok, text = baseline.check(str(run_copy(tmp_path, "again")), str(folder))
    assert ok is False
    assert case["id"] in text and "<changed>" in text


def test_other_settings_are_not_compared(tmp_path):
    folder = tmp_path / "baselines"
    baseline.record(str(run_copy(tmp_path, "base")), str(folder))
    ok, text = baseline.check(str(run_copy(tmp_path, "nots")), str(folder))
    assert ok is None and "settings differ" in text


def test_no_baseline_for_this_kernel_says_how_to_record_one(tmp_path):
    ok, text = baseline.check(str(run_copy(tmp_path, "again")), str(tmp_path / "empty"))
    assert ok is None and "socklab baseline" in text
