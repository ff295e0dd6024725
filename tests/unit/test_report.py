"""harness.report and harness.ladder on real runs (data/results/, see its README.txt)."""

import json
from html import escape
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import ladder, report
from harness.results import build_results
from harness.segment import windows

from .schema2 import CLAIMS, base_run

DATA = Path(__file__).parent / "data" / "results"
GEN = "tests/unit/data/results/gen_cases.py::"
NOACCEPT = "cases/test_setup.py::test_listen_without_accept_completes_handshake[ipv4]"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The base run copied, its schema-2 results (made by hand) and the report written from them."""
    folder, results = base_run(tmp_path_factory.mktemp("rep"))
    path = report.write_report(str(folder), results)
    assert path == str(folder / "index.html")
    return folder, results


@pytest.fixture(scope="module")
def html(run):
    return (run[0] / "index.html").read_text()


def page_of(run, case_id):
    folder, results = run
    case = {c["id"]: c for c in results["cases"]}[case_id]
    return (folder / case["dir"] / "index.html").read_text()


def record(case_id, run="base"):
    case = {c["id"]: c for c in build_results(DATA / run)["cases"]}[case_id]
    return json.loads((DATA / run / case["dir"] / "case.json").read_text())


def shown(el):
    """The visible text of an SVG <text> (its <title> tooltip comes first)."""
    title = el.find("{http://www.w3.org/2000/svg}title")
    return title.tail if title is not None else el.text


def pages(run):
    folder, results = run
    yield "index.html", (folder / "index.html").read_text()
    for c in results["cases"]:
        yield c["id"], page_of(run, c["id"])


def test_report_is_offline(run):
    for name, text in pages(run):
        assert "<script" not in text.lower().replace("&lt;script", ""), name
        assert not re.search(r"<link|@import|src=|url\((?!#)", text), name
        assert set(re.findall(r"https?://[^\s\"'<>]+", text)) <= {"http://www.w3.org/2000/svg"}, name


def test_everything_is_escaped(run, html):
    fail = page_of(run, GEN + "test_fail[ipv4]")
    assert "ECONNREFUSED &lt;script&gt;" in fail and "deliberate failure &lt;b&gt;" in fail
    assert "connect to a closed port is &lt;refused&gt; &amp; &#x27;reported&#x27;" in html
    assert "listen() sent a segment &lt;b&gt;here&lt;/b&gt;" in html
    for _, text in pages(run):
        assert "deliberate failure <b>" not in text and "<script>" not in text and "<b>here</b>" not in text


def test_overview_counts_settings_and_kernel(html, run):
    results = run[1]
    assert f"kernel <b>{results['kernel']}</b>" in html
    assert '<span class="confirmed">confirmed</span> 4' in html and '<span class="refuted">refuted</span> 1' in html
    assert '<span class="differs">differs</span> 1' in html and '<span class="failed">failed</span> 1' in html
    assert "net.ipv4.tcp_keepalive_time</th><td>600 <span class=small>(some cases)</span>" in html
    line = report.summary_line(results, "/x/index.html")
    assert line == ("socklab: 7 cases (1 failed, 5 passed, 1 skipped); verdicts: 4 confirmed, 1 refuted, "
                    "1 differs, 1 none; report: /x/index.html")


def _claim_rows(html):
    """{(article, claim id): the row's HTML} of the claims-by-article tables."""
    return dict(((a, c), row) for a, c, row in re.findall(r'<tr id="claim-(\d+)-([^"]+)">(.*?)</tr>', html, re.S))


def test_every_claim_row_under_each_of_its_articles(html):
    rows = _claim_rows(html)
    assert sorted(rows) == sorted((a, c["id"]) for c in CLAIMS for a in c["articles"])
    for a in ("000", "002", "003", "004"):
        assert f'<h3 id="article-{a}">Article {a}' in html and f'href="#article-{a}"' in html
    # ids in document order: article by article
    order = re.findall(r'<tr id="claim-(\d+)-', html)
    assert order == sorted(order)


def test_claim_rows_carry_verdict_evidence_and_case_links(run, html):
    rows = _claim_rows(html)
    by_exp = {c.get("experiment"): c for c in run[1]["cases"]}
    noaccept = rows[("000", "1")]
    assert '<span class="confirmed">confirmed</span>' in noaccept
    link = f'href="{by_exp["CONN-NOACCEPT"]["dir"]}/index.html"'
    assert link in noaccept and ">CONN-NOACCEPT/ipv4</a>" in noaccept
    assert rows[("002", "1")] == noaccept                              # the same row under its other article
    evidence = by_exp["CONN-NOACCEPT"]["verdicts"][0]["evidence"]
    assert f"<td class=evidence>{escape(evidence)}</td>" in noaccept
    mixed = rows[("003", "40")]                                       # FIX-FAIL differs, CONN-NOLISTEN confirms
    assert '<span class="differs">differs</span> <span class=small>(1 confirmed, 1 differs)</span>' in mixed
    assert ">FIX-FAIL/ipv4</a>" in mixed and ">CONN-NOLISTEN/ipv4</a>" in mixed
    assert "(decided by net.ipv4.example=1)" in mixed
    assert '<span class="refuted">refuted</span>' in rows[("004", "41")]
    lonely = rows[("002", "99")]
    assert '<span class="notjudged">not judged</span>' in lonely
    assert '<a href="#exp-FIX-SKIP">FIX-SKIP</a>' in lonely and "NOT-BUILT" in lonely and 'href="#exp-NOT-BUILT"' not in lonely


def test_every_case_is_linked_and_its_page_has_the_evidence(run, html):
    """Two clicks: a case link in the overview opens a page whose first section is the evidence."""
    for c in run[1]["cases"]:
        href = f'{c["dir"]}/index.html'
        assert f'href="{href}"' in html, c["id"]
        text = page_of(run, c["id"])
        assert '<a href="../../index.html">' in text
        head = text.split('<h2 id="evidence">')[1].split("<h2")[0]
        for v in c["verdicts"]:
            assert escape(v["evidence"]) in head, c["id"]


def test_cases_grouped_by_experiment(run, html):
    section = html.split('<h2 id="experiments">')[1].split("<h2")[0]
    for c in run[1]["cases"]:
        row = re.search(rf'<tr id="exp-{re.escape(c["experiment"])}">(.*?)</tr>', section, re.S).group(1)
        assert f'href="{c["dir"]}/index.html"' in row


def test_states_and_edges_tables(run, tmp_path):
    results = run[1]
    table = report.state_table(results)
    assert list(table) == list(report.STATES) and len(table) == 11
    where = {state: {report.short_name(c): src for c, src in hits} for state, hits in table.items()}
    assert where["LISTEN"]["CONN-NOACCEPT/ipv4"] == "both"
    assert where["SYN_RECEIVED"]["CONN-NOACCEPT/ipv4"] == "trace"
    assert where["TIME_WAIT"] == {"FIX-CLOSE/ipv4": "ss"}
    assert where["CLOSING"] == {}
    assert results["edges"], "build_results records the edges (harness/diagram.py)"
    html = report.render_report(str(run[0]), dict(results, edges=None))      # an older results file
    assert "State-diagram edges</h2>\n<p class=small>not recorded" in html
    close = next(c for c in results["cases"] if c["experiment"] == "FIX-CLOSE")
    html = report.render_report(str(run[0]), results)
    edges = html.split('<h2 id="edges">')[1].split("<h2")[0]
    assert edges.count("<tr><th>") == 1 + 30                                # the header, then every edge a row
    assert "<tr><th>ESTABLISHED -&gt; FIN-WAIT-1</th>" in edges and f'href="{close["dir"]}/index.html"' in edges
    states = html.split('<h2 id="states">')[1].split("<h2")[0]
    time_wait = states.split("<tr><th>TIME-WAIT</th>")[1].split("</tr>")[0]
    assert "ss 1" in time_wait and f'href="{close["dir"]}/index.html"' in time_wait


def test_case_page_holds_ladder_steps_ss_transitions_artifacts(run):
    text = page_of(run, NOACCEPT)
    assert "connect(3, server, 50000) = 0" in text and text.count("<svg") == 1
    assert "LISTEN 1      5" in text                                   # ss verbatim
    assert "LISTEN -&gt; SYN_RECV -&gt; ESTABLISHED" in text
    assert 'href="packets.pcap"' in text and 'href="case.json"' in text
    fail = page_of(run, GEN + "test_fail[ipv4]")
    assert "failure (call)" in fail and "connect(3, server, 50000) ECONNREFUSED" in fail
    assert "<svg" not in page_of(run, GEN + "test_skipped[ipv4]")


def test_a_program_of_another_name_writes_its_calls_on_its_hosts_side():
    """lab.program("server", "restarted"): its calls belong to the server's line, named by program."""
    rec = record(NOACCEPT)
    rec["calls"].append({"program": "restarted", "role": "server", "op": "listen", "args": {"fd": 3, "backlog": 5},
                         "ret": 0, "t0": 0.5, "t1": 0.5})
    root = ET.fromstring(ladder.svg_ladder(rec))
    text = next(t for t in root.iter("{http://www.w3.org/2000/svg}text") if shown(t) == "restarted: listen(3, 5) = 0")
    assert float(text.get("x")) > ladder.X_SERVER and text.get("text-anchor") == "start"


def test_ladder_writes_windows_beside_the_sender():
    rec = record(NOACCEPT)
    root = ET.fromstring(ladder.svg_ladder(rec))
    wins = [t for t in root.iter("{http://www.w3.org/2000/svg}text") if (shown(t) or "").startswith("win ")]
    segs = rec["segments"]
    assert [shown(t) for t in wins] == [w for w in windows(segs) if w]
    for t in wins:
        client = float(t.get("x")) < ladder.X_CLIENT
        assert client == (t.get("text-anchor") == "end")
    assert any("(raw " in shown(t) and "<< 10)" in shown(t) for t in wins)


def test_svg_ladder_is_wellformed_with_one_arrow_per_segment():
    rec = record(NOACCEPT)
    svg = ladder.svg_ladder(rec, title="t")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    arrows = [el for el in root.iter(ns + "line") if el.get("marker-end")]
    assert len(arrows) == len(rec["segments"]) == 3
    # client -> server runs left to right and slants down; the SYN-ACK comes back right to left
    x = [(float(a.get("x1")), float(a.get("x2"))) for a in arrows]
    assert x[0][0] < x[0][1] and x[1][0] > x[1][1]
    assert all(float(a.get("y2")) > float(a.get("y1")) for a in arrows)
    texts = [shown(t) for t in root.iter(ns + "text")]
    assert "S. 0:0(0) ack 1 <mss 1460,sackOK,TS,nop,wscale 10>" in texts
    port = rec["transitions"][1]["local_port"]
    assert f"{port}>50000 SYN_SENT \u2192 ESTABLISHED" in texts and "listen(3, 5) = 0" in texts
    assert "50000 (listener) CLOSE \u2192 LISTEN" in texts
    assert not any(t.startswith("#") for t in texts)                       # one connection: no numbers


def test_svg_ladder_rows_are_even_and_long_pauses_broken():
    rec = record(GEN + "test_drop[ipv4]")
    root = ET.fromstring(ladder.svg_ladder(rec))
    ns = "{http://www.w3.org/2000/svg}"
    dashed = [el for el in root.iter(ns + "line") if el.get("stroke") == "#c00"]
    assert len(dashed) == 1 and dashed[0].get("stroke-dasharray")          # the dropped SYN
    assert float(dashed[0].get("x2")) < ladder.X_SERVER                    # ends before the receiver ...
    assert any(p.get("stroke") == "#c00" for p in root.iter(ns + "path"))  # ... with an X
    texts = [shown(t) or "" for t in root.iter(ns + "text")]
    assert any(re.fullmatch(r"\+1\d{3} ms", t) for t in texts)             # the 1 s SYN retransmission timer
    assert "added rule drop1: first 1 client > server flags S, dropped on arrival" in [t.find(ns + "title").text for t in root.iter(ns + "text") if t.find(ns + "title") is not None]
    times = [t for t in root.iter(ns + "text") if t.get("text-anchor") == "end" and re.fullmatch(r"\d+\.\d{3}", t.text or "")]
    ys = [float(t.get("y")) for t in times]
    steps = {round(b - a) for a, b in zip(ys, ys[1:])}
    assert steps == {ladder.ROW, 2 * ladder.ROW}                           # even rows, one break


def test_svg_ladder_of_an_empty_record():
    svg = ladder.svg_ladder({})
    assert "(no events recorded)" in svg
    ET.fromstring(svg)


def test_text_ladder():
    rec = record(GEN + "test_drop[ipv4]")
    text = ladder.text_ladder(rec["segments"]).splitlines()
    assert len(text) == 1 + len(rec["segments"])
    assert text[1].endswith("X  |  (dropped)") and "|-- S 0:0(0)" in text[1]
    assert "|<- S. 0:0(0) ack 1" in text[3]
    assert len({len(line.split("  (dropped)")[0]) for line in text[1:]}) == 1     # one lane width
    lines = ["client > server  S   0:0(0)", "server > client  R.  0:0(0) ack 1 (dropped)"]
    norm = ladder.text_ladder(lines).splitlines()
    assert norm[1].startswith("|-- S 0:0(0) ") and norm[2].startswith("| X R. 0:0(0) ack 1")
    assert ladder.text_ladder([]) == "(no segments)\n"


def test_call_text():
    addrs = {"198.18.0.2": "server"}
    assert ladder.call_text({"program": "client", "op": "connect", "args": {"fd": 3, "addr": "198.18.0.2", "port": 80,
                                                                           "nonblocking": False},
                             "errno": "ECONNREFUSED"}, addrs) == "connect(3, server, 80) ECONNREFUSED"
    assert ladder.call_text({"program": "server.child", "op": "accept", "args": {"fd": 3},
                             "ret": {"fd": 4, "peer": ["198.18.0.2", 4000]}}, addrs) == \
        "server.child: accept(3) = fd 4, peer server:4000"
    assert ladder.call_text({"program": "client", "op": "send", "args": {"fd": 3, "data": "x" * 100}, "ret": 100}) == \
        "send(3, <100 bytes>) = 100"


def test_svg_ladder_numbers_connections_when_there_are_several():
    seg = dict(t=0.001, src="client", dst="server", flags="S", seq=0, len=0, ack=None, options=[], dport=50000)
    rec = {"segments": [dict(seg, sport=41000), dict(seg, t=0.002, sport=41001)]}
    root = ET.fromstring(ladder.svg_ladder(rec))
    texts = [shown(t) for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "#1  client:41000 \u2194 server:50000" in texts and "#2  client:41001 \u2194 server:50000" in texts
    assert "#2 S 0:0(0)" in texts


def test_a_verdict_without_claim_numbers_is_shown_beside_its_experiment(run):
    """A case judged before its judge named claim numbers (a legacy verdict): the claim row stays "not
    judged", and names what each of its experiments' cases said."""
    import copy
    results = copy.deepcopy(run[1])
    for c in results["cases"]:
        if c["experiment"] in ("FIX-FAIL", "CONN-NOLISTEN"):
            for v in c["verdicts"]:
                v["claims"] = []
    next(r for r in results["claims"] if r["id"] == "99")["experiments"].append("CONN-NOACCEPT")
    rows = _claim_rows(report.render_report(str(run[0]), results))
    row = rows[("003", "40")]
    # CONN-NOACCEPT's verdict names claim 1: it says nothing about claim 99, which it is listed under
    assert '<a href="#exp-CONN-NOACCEPT">CONN-NOACCEPT</a></span>' in rows[("002", "99")]
    assert '<span class="notjudged">not judged</span>' in row
    assert '<a href="#exp-FIX-FAIL">FIX-FAIL</a> (<span class="differs">differs</span>)' in row
    assert '<a href="#exp-CONN-NOLISTEN">CONN-NOLISTEN</a> (<span class="confirmed">confirmed</span>)' in row
