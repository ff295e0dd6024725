"""harness.report and harness.ladder on real runs (data/results/, see its README.txt)."""

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import ladder, report
from harness.results import build_results

DATA = Path(__file__).parent / "data" / "results"
GEN = "tests/unit/data/results/gen_cases.py::"
NOACCEPT = "cases/test_setup.py::test_listen_without_accept_completes_handshake[ipv4]"


@pytest.fixture(scope="module")
def base():
    return build_results(DATA / "base")


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    run = tmp_path_factory.mktemp("rep") / "base"
    shutil.copytree(DATA / "base", run)
    path = report.write_report(str(run))
    assert path == str(run / "index.html")
    return Path(path).read_text()


def record(case_id, run="base"):
    case = {c["id"]: c for c in build_results(DATA / run)["cases"]}[case_id]
    return json.loads((DATA / run / case["dir"] / "case.json").read_text())


def shown(el):
    """The visible text of an SVG <text> (its <title> tooltip comes first)."""
    title = el.find("{http://www.w3.org/2000/svg}title")
    return title.tail if title is not None else el.text


def test_report_is_offline(html):
    assert "<script" not in html.lower().replace("&lt;script", "")
    assert not re.search(r"<link|@import|src=|url\((?!#)", html)
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}   # the SVG namespace only


def test_everything_is_escaped(html):
    assert "ECONNREFUSED &lt;script&gt;" in html
    assert "deliberate failure &lt;b&gt;" in html
    assert "connect to a closed port is &lt;refused&gt; &amp; &#x27;reported&#x27;" in html
    assert "deliberate failure <b>" not in html and "<script>" not in html


def test_overview_counts_settings_and_kernel(html, base):
    assert f"kernel <b>{base['kernel']}</b>" in html
    assert '<span class="confirmed">confirmed</span> 5' in html
    assert '<span class="differs">differs</span> 1' in html
    assert '<span class="failed">failed</span> 1' in html
    assert "net.ipv4.tcp_keepalive_time</th><td>600 <span class=small>(some cases)</span>" in html
    line = report.summary_line(base, "/x/index.html")
    assert line == ("socklab: 7 cases (1 failed, 5 passed, 1 skipped); verdicts: 5 confirmed, 0 refuted, "
                    "1 differs, 1 none; report: /x/index.html")


def test_every_case_link_has_its_section(html, base):
    for c in base["cases"]:
        anchor = report.case_anchor(c)
        assert f'href="#{anchor}"' in html and f'id="{anchor}"' in html


def test_eleven_states_table(base):
    table = report.state_table(base)
    assert list(table) == list(report.STATES) and len(table) == 11
    where = {state: {report.short_name(c): src for c, src in hits} for state, hits in table.items()}
    assert where["LISTEN"]["CONN-NOACCEPT/ipv4"] == "both"
    assert where["ESTABLISHED"]["CONN-NOACCEPT/ipv4"] == "both"
    assert where["SYN_RECEIVED"]["CONN-NOACCEPT/ipv4"] == "trace"
    assert where["TIME_WAIT"] == {"FIX-CLOSE/ipv4": "ss"}
    assert set(where["FIN_WAIT_1"]) == set(where["LAST_ACK"]) == {"FIX-CLOSE/ipv4"}
    assert where["CLOSING"] == {}
    assert "FIX-SKIP/ipv4" not in where["CLOSED"]


def test_case_section_holds_steps_ladder_ss_transitions_artifacts(html, base):
    case = {c["id"]: c for c in base["cases"]}[NOACCEPT]
    section = html.split(f'id="{report.case_anchor(case)}"')[1].split("<h2")[0]
    assert "connect(3, server, 50000) = 0" in section
    assert section.count("<svg") == 1
    assert "LISTEN 1      5" in section                                   # ss verbatim
    assert "LISTEN -&gt; SYN_RECV -&gt; ESTABLISHED" in section
    assert 'href="cases/cases_test_setup.py__test_listen_without_accept_completes_handshake_ipv4/packets.pcap"' in section
    assert html.count("<svg") == sum(1 for c in base["cases"] if c["behaviour"] is not None)
    fail = html.split("FIX-FAIL</b>")[1].split("<h2")[0]
    assert "failure (call)" in fail and "connect(3, server, 50000) ECONNREFUSED" in fail


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
