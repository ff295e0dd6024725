"""harness.compare on real runs (data/results/, see its README.txt): equal runs, a real change,
added/missing/flipped cases, more than two runs, the HTML page."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from harness.compare import compare, side_by_side, write_compare_html
from harness.results import ResultsError, write_results

DATA = Path(__file__).parent / "data" / "results"
GEN = "tests/unit/data/results/gen_cases.py::"
NOACCEPT = "cases/test_setup.py::test_listen_without_accept_completes_handshake[ipv4]"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """results.json of each fixture run, written into writable copies."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name in ("base", "again", "nots"):
        shutil.copytree(DATA / name, root / name)
        out[name] = write_results(str(root / name))
    return out


def edited(runs, tmp_path, name, edit):
    """A copy of results file `name` changed by edit(data), next to its run's case folders."""
    data = json.loads(Path(runs[name]).read_text())
    edit(data)
    path = Path(runs[name]).parent / f"edited-{tmp_path.name}.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_two_runs_of_one_kernel_compare_equal(runs):
    cmp = compare([runs["base"], runs["again"]])
    assert not cmp.changed
    assert (cmp.diffs, cmp.added, cmp.missing, cmp.flips) == ([], [], [], [])
    assert "no differences: every case behaved as in A" in cmp.text()


def test_timestamps_off_flags_exactly_the_cases_whose_segments_change(runs):
    cmp = compare([runs["base"], runs["nots"]])
    assert cmp.changed
    base = {c["id"]: c for c in json.loads(Path(runs["base"]).read_text())["cases"]}
    nots = {c["id"]: c for c in json.loads(Path(runs["nots"]).read_text())["cases"]}
    expected = {cid for cid, c in base.items()
                if c["behaviour"] and c["behaviour"]["segments"] != nots[cid]["behaviour"]["segments"]}
    assert {d.id for d in cmp.diffs} == expected
    assert len(expected) == 5                                        # every case that sent a SYN
    assert GEN + "test_quiet[ipv4]" not in expected and GEN + "test_skipped[ipv4]" not in expected
    assert all(d.aspects == ["segments"] for d in cmp.diffs)
    assert (cmp.added, cmp.missing, cmp.flips) == ([], [], [])
    text = cmp.text()
    assert f"B differs from A: {NOACCEPT}: segments" in text
    assert re.search(r">> client > server  S   0:0\(0\) <mss 1460,sackOK,TS,nop,wscale 10> +\| "
                     r"client > server  S   0:0\(0\) <mss 1460,nop,nop,sackOK,nop,wscale 10>", text)
    assert "net.ipv4.tcp_timestamps=0" in text


def test_added_missing_and_flipped(runs, tmp_path):
    def edit(data):
        cases = {c["id"]: c for c in data["cases"]}
        del cases[GEN + "test_quiet[ipv4]"]
        cases[GEN + "test_drop[ipv4]"]["verdict"] = "refuted"
        cases[NOACCEPT]["outcome"] = "failed"
        cases["cases/new.py::test_new[ipv4]"] = dict(cases[NOACCEPT], id="cases/new.py::test_new[ipv4]")
        data["cases"] = sorted(cases.values(), key=lambda c: c["id"])
    cmp = compare([runs["base"], edited(runs, tmp_path, "again", edit)])
    assert cmp.changed and cmp.diffs == []
    assert cmp.missing == [(1, GEN + "test_quiet[ipv4]")]
    assert cmp.added == [(1, "cases/new.py::test_new[ipv4]")]
    assert {(f.id, f.what, f.before, f.after) for f in cmp.flips} == {
        (GEN + "test_drop[ipv4]", "verdict", "confirmed", "refuted"), (NOACCEPT, "outcome", "passed", "failed")}
    text = cmp.text()
    assert f"missing in B: {GEN}test_quiet[ipv4]" in text and "added in B: cases/new.py::test_new[ipv4]" in text
    assert f"verdict flipped in B: {GEN}test_drop[ipv4]: confirmed -> refuted" in text


def test_a_case_that_ran_only_once_is_an_outcome_flip_not_a_behaviour_diff(runs, tmp_path):
    def edit(data):
        for c in data["cases"]:
            if c["id"] == NOACCEPT:
                c.update(behaviour=None, outcome="skipped")
    cmp = compare([runs["base"], edited(runs, tmp_path, "again", edit)])
    assert cmp.diffs == [] and [(f.id, f.what) for f in cmp.flips] == [(NOACCEPT, "outcome")]


def test_three_runs_table_marks_differences_from_the_first(runs):
    cmp = compare([runs["base"], runs["again"], runs["nots"]])
    assert {d.run for d in cmp.diffs} == {2}
    assert cmp.cell(0, NOACCEPT) == ("passed/confirmed", "")
    assert cmp.cell(1, NOACCEPT) == ("passed/confirmed", "")
    assert cmp.cell(2, NOACCEPT) == ("passed/confirmed", "*")
    assert cmp.cell(2, GEN + "test_skipped[ipv4]") == ("skipped", "")
    assert cmp.cell(2, GEN + "test_quiet[ipv4]") == ("passed/confirmed", "")
    table = cmp.matrix_text().splitlines()
    assert "C: " in table[0] and "net.ipv4.tcp_timestamps=0" in table[0]
    row = next(line for line in table if line.startswith(NOACCEPT))
    assert row.split()[1:] == ["passed/confirmed", "passed/confirmed", "passed/confirmed", "*"]
    assert cmp.header(0) == cmp.header(1) != cmp.header(2)


def test_html_page(runs, tmp_path):
    cmp = compare([runs["base"], runs["nots"]])
    out = write_compare_html(cmp, str(tmp_path / "cmp.html"))
    html = Path(out).read_text()
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    assert "<script" not in html
    assert html.count("<svg") == 2 * len(cmp.diffs)                     # both ladders of each differing case
    assert html.count('<tr class="diff">') >= len(cmp.diffs)
    assert "&lt;mss 1460,nop,nop,sackOK,nop,wscale 10&gt;" in html


def test_html_falls_back_to_text_ladders_without_case_records(runs, tmp_path):
    def edit(data):
        for c in data["cases"]:
            c["dir"] = "gone/" + c["dir"]
    cmp = compare([edited(runs, tmp_path, "base", edit), runs["nots"]])
    html = Path(write_compare_html(cmp, str(tmp_path / "cmp.html"))).read_text()
    assert html.count("<svg") == len(cmp.diffs) and "|-- S 0:0(0)" in html


def test_side_by_side_aligns_an_inserted_line():
    rows = side_by_side(["a", "b", "c"], ["a", "x", "b", "c"])
    assert rows == [("a", "a", True), (None, "x", False), ("b", "b", True), ("c", "c", True)]


def test_inputs_are_checked(runs, tmp_path):
    with pytest.raises(ValueError, match="at least two"):
        compare([runs["base"]])
    bad = tmp_path / "other.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(ResultsError, match="not a socklab results file"):
        compare([runs["base"], str(bad)])


def test_text_cuts_long_runs_of_equal_lines(runs, tmp_path):
    def edit(data):
        for c in data["cases"]:
            if c["id"] == GEN + "test_close[ipv4]":
                c["behaviour"]["segments"][-1] = "client > server  R   7:7(0)"
    text = compare([runs["base"], edited(runs, tmp_path, "again", edit)]).text()
    assert "     ... 6 equal line(s)" in text
    assert re.search(r">> client > server  \.   7:7\(0\) ack 2 <nop,nop,TS> +\| client > server  R   7:7\(0\)\n", text)


def test_html_matrix_shows_each_claims_verdict_per_run(runs, tmp_path):
    """A matrix of runs: the claims by article with one verdict column per run, and case links that
    reach each run's own case pages from where the page is written."""
    from .schema2 import CLAIMS, schema2

    def judged(refute):
        def edit(data):
            two = schema2(data)
            if not refute:          # schema2 turns FIX-QUIET to refuted; keep it confirmed in the reference
                for c in two["cases"]:
                    if c["experiment"] == "FIX-QUIET":
                        c["verdicts"][0]["verdict"] = c["verdict"] = "confirmed"
            data.update(two, schema=data["schema"])
        return edit
    a = edited(runs, tmp_path, "base", judged(False))
    b = edited(runs, tmp_path, "nots", judged(True))
    (tmp_path / "out").mkdir()
    html = Path(write_compare_html(compare([a, b]), str(tmp_path / "out" / "m.html"))).read_text()
    row = re.search(r'<tr id="claim-004-41">(.*?)</tr>', html, re.S).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row, re.S)
    assert '<span class="confirmed">confirmed</span>' in cells[2] and '<span class="refuted">refuted</span>' in cells[3]
    quiet = "tests_unit_data_results_gen_cases.py__test_quiet_ipv4"
    page = os.path.relpath(Path(b).parent / "cases" / quiet / "index.html", tmp_path / "out")
    assert f'href="{page}"' in cells[3] and page.startswith("../")
    assert len(re.findall(r'<tr id="claim-', html)) == sum(len(c["articles"]) for c in CLAIMS)
    assert "<th>A: " in html and "<th>B: " in html


def test_a_flipped_verdict_alone_is_a_change(runs, tmp_path):
    """Same behaviour, same cases, one verdict flipped: the comparison has changed (non-zero exit)."""
    def edit(data):
        for c in data["cases"]:
            if c["id"] == GEN + "test_drop[ipv4]":
                c["verdict"] = "refuted"
    cmp = compare([runs["base"], edited(runs, tmp_path, "again", edit)])
    assert (cmp.diffs, cmp.added, cmp.missing) == ([], [], [])
    assert [(f.id, f.what) for f in cmp.flips] == [(GEN + "test_drop[ipv4]", "verdict")]
    assert cmp.changed


def test_an_aspect_declared_timing_dependent_is_named_not_counted(tmp_path):
    """A case marked timing_dependent("segments") whose segments differ: noted, not a change; any other
    aspect still counts."""
    import json as _json

    from harness.compare import compare as _compare

    def results(name, segments, ss, timing):
        case = {"id": "c::t[ipv4]", "outcome": "passed", "verdict": "confirmed", "timing_dependent": timing,
                "behaviour": {"segments": segments, "ss": ss, "transitions": [], "steps": {}}}
        path = tmp_path / f"{name}.json"
        path.write_text(_json.dumps({"schema": 2, "kind": "socklab-results", "run": name, "kernel": "k",
                                     "settings": {}, "cases": [case]}))
        return str(path)
    a = results("a", ["S", "S.", "."], {}, {"segments": "delayed ACKs"})
    b = results("b", ["S", "S.", ".", "."], {}, {"segments": "delayed ACKs"})
    cmp = _compare([a, b])
    assert not cmp.changed and [t[2] for t in cmp.timing] == ["segments"]
    assert "declares them timing-dependent (delayed ACKs)" in cmp.text()
    c = results("c", ["S", "S.", ".", "."], {"x": {"client": ["ESTAB"]}}, {"segments": "delayed ACKs"})
    assert _compare([a, c]).changed                       # ss is not declared: it still counts
    d = results("d", ["S", "S.", ".", "."], {}, {})
    e = results("e", ["S", "S.", "."], {}, {})
    assert _compare([d, e]).changed


def test_a_timing_mark_for_emulators_counts_only_in_an_emulated_run(monkeypatch):
    """timing_dependent(..., emulated=True) (SYNRCVD-CLOSE's simultaneous open): recorded for a run
    under an emulator, so its differences are named, not counted; on a real machine the aspect is
    compared strictly. A plain mark counts everywhere."""
    from harness.plugin import _timing

    class Item:
        def iter_markers(self, name):
            assert name == "timing_dependent"
            return [pytest.mark.timing_dependent("segments", why="steps outlast the SYN timer", emulated=True).mark,
                    pytest.mark.timing_dependent("ss", why="reads interleave").mark]

    monkeypatch.delenv("SOCKLAB_EMULATOR", raising=False)
    assert _timing(Item()) == {"ss": "reads interleave"}
    monkeypatch.setenv("SOCKLAB_EMULATOR", "TCG")
    assert _timing(Item()) == {"segments": "steps outlast the SYN timer", "ss": "reads interleave"}
