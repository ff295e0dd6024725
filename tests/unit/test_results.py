"""harness.results on real runs (data/results/, see its README.txt): the file, its checks, normalisation."""

import json
import os
import shutil
from pathlib import Path

import pytest

from harness import results
from harness.results import ResultsError, build_results, load_results, write_results

DATA = Path(__file__).parent / "data" / "results"
NOACCEPT = "cases/test_setup.py::test_listen_without_accept_completes_handshake[ipv4]"
NOLISTEN = "cases/test_setup.py::test_connect_to_bound_port_without_listen_is_refused[ipv4]"
GEN = "tests/unit/data/results/gen_cases.py::"


def run_copy(tmp_path, name):
    """A writable copy of a fixture run folder."""
    dst = tmp_path / name
    shutil.copytree(DATA / name, dst)
    return dst


def cases(res):
    return {c["id"]: c for c in res["cases"]}


@pytest.fixture(scope="module")
def base():
    return build_results(DATA / "base")


def test_header(base):
    assert base["schema"] == 2 and base["kind"] == "socklab-results"
    assert base["run"] == "base"
    assert base["kernel"] == os.uname().release
    assert base["harness"] == results.harness_version() != ""
    assert [c["id"] for c in base["cases"]] == sorted(c["id"] for c in base["cases"])
    assert len(base["cases"]) == 7


def test_settings_union_common_and_mtu(base):
    s = base["settings"]
    assert s["sysctls"] == {"net.ipv4.tcp_keepalive_time": "600"}        # the fixture cases' own override
    assert s["common_sysctls"] == {}                                  # not in the test_setup cases
    assert s["mtus"] == [1500] and s["profile"] is None
    nots = build_results(DATA / "nots", profile="no-timestamps")
    assert nots["settings"]["common_sysctls"] == {"net.ipv4.tcp_timestamps": "0"}
    assert nots["settings"]["profile"] == "no-timestamps"
    assert results.settings_text(nots) == "profile no-timestamps net.ipv4.tcp_timestamps=0 (+1 per-case sysctls)"


def test_case_entry_ids_and_normalised_behaviour(base):
    c = cases(base)[NOACCEPT]
    assert (c["experiment"], c["article"], c["family"], c["outcome"], c["verdict"]) == \
        ("CONN-NOACCEPT", "004", "ipv4", "passed", "confirmed")
    assert c["claim"].startswith("a server that called listen() but never accept()")
    b = c["behaviour"]
    assert b["segments"] == [
        "client > server  S   0:0(0) <mss 1460,sackOK,TS,nop,wscale 10>",
        "server > client  S.  0:0(0) ack 1 <mss 1460,sackOK,TS,nop,wscale 10>",
        "client > server  .   1:1(0) ack 1 <nop,nop,TS>",
    ]
    assert b["ss"] == {"the server's ESTAB entry": {"server": ["ESTAB", "LISTEN 1/5"]},
                       "after connect": {"client": ["ESTAB"], "server": ["ESTAB", "LISTEN 1/5"]}}
    assert b["transitions"] == [
        {"socket": "client:eph > server:50000", "states": ["CLOSE", "SYN_SENT", "ESTABLISHED"]},
        {"socket": "server:50000 > client:eph", "states": ["LISTEN", "SYN_RECV", "ESTABLISHED"]},
        {"socket": "server:50000 listener", "states": ["CLOSE", "LISTEN"]},
    ]
    assert b["steps"] == {"server": ["socket", "bind", "listen"], "client": ["socket", "connect"]}


def test_dropped_failed_and_skipped_cases(base):
    by = cases(base)
    drop = by[GEN + "test_drop[ipv4]"]
    assert drop["behaviour"]["segments"][:2] == [
        "client > server  S   0:0(0) <mss 1460,sackOK,TS,nop,wscale 10> (dropped)",
        "client > server  S   0:0(0) <mss 1460,sackOK,TS,nop,wscale 10>"]
    assert drop["verdict"] == "confirmed" and drop["claim"] == "a lost SYN is retransmitted"
    fail = by[GEN + "test_fail[ipv4]"]
    assert (fail["outcome"], fail["when"], fail["verdict"]) == ("failed", "call", "differs")
    assert fail["verdicts"][0]["setting"] == "net.ipv4.example=1"
    assert "deliberate failure <b>" in fail["longrepr"]
    assert fail["behaviour"]["steps"] == {"client": ["socket", "connect ECONNREFUSED"]}
    skip = by[GEN + "test_skipped[ipv4]"]
    assert skip["behaviour"] is None and skip["outcome"] == "skipped" and skip["when"] == "setup"
    assert skip["longrepr"] == "Skipped: skipped before its lab existed"
    assert list(skip["artifacts"]) == ["outcome.json"]
    close = by[GEN + "test_close[ipv4]"]
    assert close["behaviour"]["ss"]["after close"] == {"client": ["TIME-WAIT"], "server": ["LISTEN 0/5"]}
    assert close["sysctls"] == {"net.ipv4.tcp_keepalive_time": "600"}


def test_artifacts_are_relative_to_the_run(base):
    c = cases(base)[NOACCEPT]
    assert c["artifacts"]["pcap"] == f"{c['dir']}/packets.pcap"
    assert c["dir"].startswith("cases/")
    for path in c["artifacts"].values():
        assert not os.path.isabs(path) and (DATA / "base" / path).is_file()


def test_two_runs_of_one_kernel_normalise_equal(base):
    again = cases(build_results(DATA / "again"))
    for cid, c in cases(base).items():
        assert again[cid]["behaviour"] == c["behaviour"], cid
    # ... although the raw records differ in what the normalisation drops
    raw = [json.loads((DATA / run / cases(base)[NOACCEPT]["dir"] / "case.json").read_text()) for run in ("base", "again")]
    assert raw[0]["segments"][0]["options"] != raw[1]["segments"][0]["options"]       # TS values
    assert raw[0]["segments"][0]["sport"] != raw[1]["segments"][0]["sport"]           # ephemeral port
    assert raw[0]["hosts"] != raw[1]["hosts"]                                         # addresses


def test_the_outcome_in_the_record_reads_as_outcome_json_did(base):
    """again/ is a schema-3 run (the pytest outcome inside case.json; FIX-SKIP, skipped before its lab
    existed, has the plugin's own record); base/ is older (outcome.json beside case.json): the
    results of both carry the same ids and outcomes."""
    again = cases(build_results(DATA / "again"))
    assert not list((DATA / "again").glob("cases/*/outcome.json"))
    keys = ("experiment", "article", "articles", "family", "outcome", "when", "verdict")
    assert {cid: {k: c[k] for k in keys} for cid, c in again.items()} == \
        {cid: {k: c[k] for k in keys} for cid, c in cases(base).items()}
    assert "deliberate failure <b>" in again[GEN + "test_fail[ipv4]"]["longrepr"]
    skip = again[GEN + "test_skipped[ipv4]"]
    assert skip["longrepr"] == "Skipped: skipped before its lab existed"
    assert skip["behaviour"] is None and list(skip["artifacts"]) == ["case.json"]


def test_records_before_schema_3_load_without_outcome_and_an_outcome_round_trips(tmp_path):
    """Every recorded case of tests/records (schema 2) and of the fixture runs still loads, without
    an outcome; a record's outcome is written into case.json and read back typed."""
    from harness.record import SCHEMA, CaseRecord, Outcome
    from tests.counterfactuals import RECORDS
    old = sorted(Path(RECORDS).glob("*.json")) + sorted(DATA.glob("*/cases/*/case.json"))
    assert len(old) >= 61 + 17
    loaded = [CaseRecord.load(str(p)) for p in old]
    assert all(r.outcome is None for r in loaded if r.schema < 3)
    rec = loaded[0]
    rec.outcome, rec.schema = Outcome("failed", "call", "AssertionError: x"), SCHEMA
    rec.save(str(tmp_path / "case.json"))
    back = CaseRecord.load(str(tmp_path / "case.json"))
    assert (back.outcome, back.lab, back.schema) == (Outcome("failed", "call", "AssertionError: x"), True, 3)
    assert json.loads((tmp_path / "case.json").read_text())["outcome"]["outcome"] == "failed"


def test_a_real_change_stands_out(base):
    nots = cases(build_results(DATA / "nots"))
    c = nots[NOACCEPT]["behaviour"]
    assert c["segments"][0] == "client > server  S   0:0(0) <mss 1460,nop,nop,sackOK,nop,wscale 10>"
    assert c["ss"] == cases(base)[NOACCEPT]["behaviour"]["ss"]


def test_segment_line_drops_values_that_change_between_runs():
    seg = {"t": 1.5, "src": "server", "dst": "client", "flags": "P.", "seq": 1, "len": 5, "ack": 6, "win": 501,
           "options": [["nop", None], ["nop", None], ["TS", [123, 456]], ["sack", [[7, 9], [11, 12]]]],
           "sport": 50000, "dport": 41000, "dropped_by": "drop1"}
    assert results.segment_line(seg) == "server > client  P.  1:6(5) ack 6 <nop,nop,TS,sack 2> (dropped)"
    assert results.segment_line(dict(seg, options=[], dropped_by=None, ack=None), conn=2) == \
        "server > client  P.  1:6(5) #2"


def test_second_connection_is_numbered_and_ports_become_eph():
    rec = {"hosts": {"client": {"ipv4": "198.18.1.1", "ipv6": "2001:db8::1"}, "server": {"ipv4": "198.18.1.2", "ipv6": None}},
           "calls": [{"op": "bind", "args": {"port": 50000}, "program": "server", "t0": 0.1}],
           "segments": [dict(src="client", dst="server", flags="S", seq=0, len=0, ack=None, options=[], sport=p, dport=50000)
                        for p in (40001, 40002, 40001)],
           "ss": [{"role": "server", "label": "accepted 198.18.1.1:40001", "rows": []},
                  {"role": "server", "label": "accepted 198.18.1.1:40001", "rows": []}],
           "transitions": [{"local_role": "client", "local_port": 40002, "peer_role": "server", "peer_port": 50000,
                            "states": ["CLOSE", "SYN_SENT"]}]}
    assert [s[-2:] for s in results.normal_segments(rec)] == ["#1", "#1", "#2"]     # connection by connection
    assert results.normal_ss(rec) == {"accepted <client>:eph": {"server": []}, "accepted <client>:eph #2": {"server": []}}
    assert results.normal_transitions(rec) == [{"socket": "client:eph > server:50000", "states": ["CLOSE", "SYN_SENT"]}]


def _syn(src, sport, raw_seq, flags="S", dport=50000):
    dst = "server" if src == "client" else "client"
    ports = (sport, dport) if src == "client" else (dport, sport)
    return dict(src=src, dst=dst, flags=flags, seq=0, len=0, ack=None if flags == "S" else 1, options=[],
                sport=ports[0], dport=ports[1], raw_seq=raw_seq)


def test_a_new_syn_on_a_used_port_pair_is_a_new_connection():
    """A SYN with a new ISN on a port pair seen before starts a connection of its own (the kernel
    chose the freed port again, or a 4-tuple reused out of TIME-WAIT): numbered as it comes, so a
    run where the port was reused and one where it was not normalise alike."""
    reused = {"segments": [_syn("client", 40001, 111), _syn("client", 40001, 111),       # a retransmission
                           _syn("client", 40002, 222), _syn("client", 40001, 333),       # the freed port again
                           _syn("server", 40001, 444, flags="S.")]}
    fresh = {"segments": [_syn("client", 40001, 111), _syn("client", 40001, 111),
                          _syn("client", 40002, 222), _syn("client", 40003, 333),
                          _syn("server", 40003, 444, flags="S.")]}
    assert [s[-2:] for s in results.normal_segments(reused)] == ["#1", "#1", "#2", "#3", "#3"]
    assert results.normal_segments(reused) == results.normal_segments(fresh)
    # A simultaneous open (each side's first SYN) is one connection; a record without raw numbers
    # (before they were kept) numbers by port pair as before.
    both = {"segments": [_syn("client", 40001, 111), _syn("server", 40001, 555), _syn("client", 40001, 111)]}
    assert not [s for s in results.normal_segments(both) if "#" in s]
    old = {"segments": [dict(s, raw_seq=None) for s in reused["segments"]]}
    assert [s[-2:] for s in results.normal_segments(old)] == ["#1", "#1", "#1", "#1", "#2"]


def test_summary_verdict_order():
    assert results.summary_verdict([]) is None
    assert results.summary_verdict([{"verdict": "confirmed"}, {"verdict": "differs"}]) == "differs"
    assert results.summary_verdict([{"verdict": "refuted"}, {"verdict": "differs"}]) == "refuted"


def test_write_and_load_round_trip(tmp_path):
    run = run_copy(tmp_path, "base")
    path = write_results(run, profile="p1")
    assert path == os.path.join(run, "results.json")
    data = load_results(path)
    assert data["settings"]["profile"] == "p1" and len(data["cases"]) == 7
    assert load_results(run)["cases"] == data["cases"]              # a run folder works too
    assert results.counts(data) == {"verdicts": {"confirmed": 5, "refuted": 0, "differs": 1, "none": 1},
                                    "outcomes": {"passed": 5, "failed": 1, "skipped": 1}}


@pytest.mark.parametrize("content, message", [
    ('{"kind": "socklab-results", "schema": 3, "cases": []}', "results schema 3, this socklab reads schema 2"),
    ('{"schema": 1, "cases": []}', "not a socklab results file"),
    ('[1, 2]', "not a socklab results file"),
    ('not json at all', "not JSON"),
])
def test_load_rejects_what_is_not_ours(tmp_path, content, message):
    path = tmp_path / "results.json"
    path.write_text(content)
    with pytest.raises(ResultsError, match=message):
        load_results(path)


def test_load_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(ResultsError, match="socklab report"):
        load_results(tmp_path)


def test_empty_run_folder(tmp_path):
    res = build_results(tmp_path)
    assert res["cases"] == [] and res["settings"]["mtus"] == []


def test_lab_folders_without_outcome_are_left_out(tmp_path):
    # The harness's own tests (marked no_report) build labs, so their folders hold case.json, but
    # the plugin writes no outcome.json for them: they are not cases of the run.
    run = run_copy(tmp_path, "base")
    src = run / cases(build_results(run))[NOACCEPT]["dir"]
    d = run / "cases" / "tests_integration_test_x.py__test_harness"
    d.mkdir()
    (d / "case.json").write_text((src / "case.json").read_text())
    assert "tests/integration/test_x.py::test_harness" not in cases(build_results(run))
    assert len(build_results(run)["cases"]) == 7


def test_a_truncated_case_json_is_refused_naming_the_file(tmp_path):
    """Never a silently shorter report (case.json is written atomically: a truncated one is damage)."""
    run = run_copy(tmp_path, "base")
    c = cases(build_results(run))[NOACCEPT]
    (run / c["dir"] / "case.json").write_text('{"segments": [')
    with pytest.raises(ResultsError, match=f"^{run / c['dir'] / 'case.json'}: corrupt case record"):
        build_results(run)


def test_states_and_edges_tables_of_a_real_run(base):
    """results.json carries the eleven states and every diagram edge, built from the run's case records."""
    assert [r["state"] for r in base["states"]] == ["CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED",
                                                    "FIN-WAIT-1", "FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK",
                                                    "TIME-WAIT"]
    assert len(base["edges"]) == 30 and all(e["status"] in ("taken", "shown not taken", "not taken") for e in base["edges"])
    edges = {e["id"]: e for e in base["edges"]}
    assert NOACCEPT in edges["LISTEN -> SYN-RECEIVED"]["cases"]
    assert NOLISTEN in edges["SYN-SENT -> CLOSED (rcv RST)"]["cases"]        # the refused connect
    listen = next(r for r in base["states"] if r["state"] == "LISTEN")
    assert NOACCEPT in [c["id"] for c in listen["cases"]]


def test_summaries_stand_for_case_json_only_while_it_is_unchanged(tmp_path):
    """write_summary() (done in the background by the process that ran the case) gives the same
    results and pages as building them at the end; an edited case.json is read again."""
    from harness import report
    run = run_copy(tmp_path, "base")
    fresh = build_results(run)
    for d in results.case_dirs(str(run)):
        results.write_summary(str(run), d)
    used: set = set()
    summarised = build_results(run, summarised=used)
    strip = lambda r: {k: v for k, v in r.items() if k != "created"}      # noqa: E731
    assert strip(summarised) == strip(fresh)
    with_record = {c["dir"] for c in fresh["cases"] if (run / c["dir"] / "case.json").is_file()}
    assert used == with_record and len(used) >= 5
    page = run / cases(fresh)[NOACCEPT]["dir"] / "index.html"
    by_summary = page.read_text()
    report.write_report(str(run), fresh)
    assert page.read_text() == by_summary

    # An edited record (here: the verdict turned) is not hidden by its old summary.
    case_json = run / cases(fresh)[NOACCEPT]["dir"] / "case.json"
    rec = json.loads(case_json.read_text())
    rec["verdicts"][0]["verdict"] = "refuted"
    case_json.write_text(json.dumps(rec))
    os.utime(case_json, ns=(1, 1))
    used.clear()
    again = build_results(run, summarised=used)
    assert cases(again)[NOACCEPT]["verdict"] == "refuted"
    assert cases(fresh)[NOACCEPT]["verdict"] == "confirmed"
    assert used == with_record - {cases(fresh)[NOACCEPT]["dir"]}


class _Dist:
    def __init__(self, **files):
        self.files = files

    def read_text(self, name):
        return self.files.get(name)


def test_the_version_is_read_from_either_kind_of_metadata_as_text():
    headers = "Metadata-Version: 2.1\nName: socklab\nVersion: 1.2.3\n\nVersion: not this one, the description\n"
    assert results.version_of(_Dist(METADATA=headers)) == "1.2.3"
    assert results.version_of(_Dist(**{"PKG-INFO": headers})) == "1.2.3"      # a socklab.egg-info
    assert results.version_of(_Dist()) is None
    import importlib.metadata
    assert results.version_of(importlib.metadata.distribution("socklab")) == importlib.metadata.version("socklab")
