"""The HTML report in a real browser: headless Chromium renders a copied fixture run (the `base` run
of tests/unit/data/results, see its README.txt) and the tests check what a person would see there:
in the DOM after rendering (counts, claims, ladders, the eleven states, links) and in the pixels of
a screenshot (not blank, ladders drawn, the dropped SYN in red, coloured verdict words). Chromium's
own net log shows that nothing left the machine. Needs Chromium, not root.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import time
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness import browser, ladder, report
from harness.errors import SetupError
from harness.results import build_results, load_case

DATA = Path(__file__).parent.parent / "unit" / "data" / "results"
DROP = "tests/unit/data/results/gen_cases.py::test_drop[ipv4]"
STATES = ["CLOSED", "LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
          "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT"]
# Tall enough for the whole base report (about 10,200 px at this width), as a person scrolling sees it.
WINDOW = (1400, 12000)
WHITE = (255, 255, 255)
HOST_LINE = (0x44, 0x44, 0x44)      # ladder.svg_ladder: the client and server lines, stroke #444
DROPPED = (0xcc, 0x00, 0x00)        # ladder._arrow: a dropped segment, stroke #c00
ARROW = (0x22, 0x22, 0x22)          # ladder.svg_ladder: the arrowhead marker, fill #222


@pytest.fixture(autouse=True)
def _root_only():
    """Overrides the integration tests' root check: rendering a report needs no privileges."""


# -- the DOM after rendering -------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict
    children: list = field(default_factory=list)    # Nodes and strings

    def iter(self, tag: str | None = None):
        if tag is None or self.tag == tag:
            yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.iter(tag)

    def elements(self) -> list[Node]:
        return [c for c in self.children if isinstance(c, Node)]

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def shown(self) -> str:
        """The visible text: without <title> tooltips (an SVG <text> starts with one)."""
        return "".join(c if isinstance(c, str) else c.shown() for c in self.children if
                       not (isinstance(c, Node) and c.tag == "title"))


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse_dom(text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def squash(text: str) -> str:
    return " ".join(text.split())


# -- the screenshot, decoded with the standard library -------------------------------------------------

def _add_lanes(a: int, b: int, low7: int, high: int) -> int:
    """Byte-wise (a + b) mod 256 of two ints holding one byte per lane, with no carry between lanes."""
    return ((a & low7) + (b & low7)) ^ ((a ^ b) & high)


def decode_png(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """(width, height, bytes per pixel, rows) of an 8-bit RGB or RGBA PNG, not interlaced.
    Sub and Up rows are undone a whole row at a time in big-int byte lanes; Average and Paeth byte by byte."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"PNG depth {depth}, colour type {colour}, interlace {interlace}: "
                         f"only 8-bit RGB (2) or RGBA (6), not interlaced, is decoded here")
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    if len(raw) != height * (stride + 1):
        raise ValueError(f"PNG data is {len(raw)} bytes, expected {height * (stride + 1)}")
    low7 = int.from_bytes(b"\x7f" * stride, "little")
    high = int.from_bytes(b"\x80" * stride, "little")
    full = (1 << (8 * stride)) - 1
    rows, prev = [], bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], raw[start + 1:start + 1 + stride]
        if kind == 1:       # Sub: a running sum along the row, by doubling steps (lane i += lane i-k)
            x, shift = int.from_bytes(line, "little"), 8 * bpp
            while shift < 8 * stride:
                x = _add_lanes(x, (x << shift) & full, low7, high)
                shift *= 2
            line = x.to_bytes(stride, "little")
        elif kind == 2:     # Up
            line = _add_lanes(int.from_bytes(line, "little"), int.from_bytes(prev, "little"),
                              low7, high).to_bytes(stride, "little")
        elif kind == 3:     # Average
            out = bytearray(line)
            for i in range(stride):
                out[i] = (out[i] + ((out[i - bpp] if i >= bpp else 0) + prev[i]) // 2) & 255
            line = bytes(out)
        elif kind == 4:     # Paeth
            out = bytearray(line)
            for i in range(stride):
                b = prev[i]
                if i < bpp:
                    out[i] = (out[i] + b) & 255
                    continue
                a, c = out[i - bpp], prev[i - bpp]
                if b == c:
                    pred = a
                else:
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                out[i] = (out[i] + pred) & 255
            line = bytes(out)
        elif kind != 0:
            raise ValueError(f"PNG row {y}: unknown filter type {kind}")
        rows.append(line)
        prev = line
    return width, height, bpp, rows


_EQUALS = [bytes(1 if i == v else 0 for i in range(256)) for v in range(256)]


class Screenshot:
    """The pixels of a PNG screenshot, searched by exact colour."""

    def __init__(self, path: str):
        with open(path, "rb") as fh:
            self.width, self.height, self.bpp, self.rows = decode_png(fh.read())
        self._masks: dict = {}

    def mask(self, rgb) -> list[bytes]:
        """Per row, one byte per pixel: 1 where the pixel is exactly `rgb` (alpha ignored)."""
        if rgb not in self._masks:
            out = []
            for row in self.rows:
                m = -1
                for ch, value in enumerate(rgb):
                    m &= int.from_bytes(row[ch::self.bpp].translate(_EQUALS[value]), "big")
                out.append(m.to_bytes(self.width, "big"))
            self._masks[rgb] = out
        return self._masks[rgb]

    def pixels(self, rgb) -> list[tuple[int, int]]:
        """(x, y) of every pixel of exactly `rgb`."""
        out = []
        for y, m in enumerate(self.mask(rgb)):
            x = m.find(1)
            while x >= 0:
                out.append((x, y))
                x = m.find(1, x + 1)
        return out

    def non_white_share(self) -> float:
        return 1 - sum(m.count(1) for m in self.mask(WHITE)) / (self.width * self.height)

    def last_content_row(self) -> int:
        return max((y for y, m in enumerate(self.mask(WHITE)) if m.count(1) < self.width), default=-1)


def vertical_lines(pixels, min_run: int = 40, max_gap: int = 12) -> dict[int, list[tuple[int, int]]]:
    """{x: [(y0, y1), ...]}: columns holding vertical runs of `pixels` at least `min_run` long, the
    runs in order; gaps up to `max_gap` (where a dot or an arrow covers the line) are bridged."""
    columns: dict = {}
    for x, y in pixels:
        columns.setdefault(x, []).append(y)
    out = {}
    for x, ys in columns.items():
        runs = []
        for y in sorted(ys):
            if runs and y - runs[-1][1] <= max_gap:
                runs[-1][1] = y
            else:
                runs.append([y, y])
        runs = [(a, b) for a, b in runs if b - a + 1 >= min_run]
        if runs:
            out[x] = runs
    return out


# -- the rendered page -----------------------------------------------------------------------------------

@dataclass
class Page:
    run: Path
    results: dict
    dom: Node
    shot: Screenshot
    net_log: dict
    sections: dict          # case id -> the elements of its section (its <h2> to the next)
    seconds: dict


def _sections(dom: Node, results: dict) -> dict:
    body = next(dom.iter("body"))
    anchors = {report.case_anchor(c): c["id"] for c in results["cases"]}
    out, current = {}, None
    for el in body.elements():
        if el.tag == "h2":
            current = anchors.get(el.attrs.get("id"))
            if current:
                out[current] = []
        if current:
            out[current].append(el)
    return out


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Page:
    """Name: page. Scope: module. Depends: nothing. The base run copied, its report written and rendered once."""
    try:
        browser.find()
    except SetupError as exc:
        pytest.skip(str(exc))
    tmp = tmp_path_factory.mktemp("browser")
    run = tmp / "base"
    shutil.copytree(DATA / "base", run)
    seconds = {}
    t = time.monotonic()
    index = report.write_report(str(run))
    seconds["write_report"] = time.monotonic() - t
    t = time.monotonic()
    dom_text = browser.render(index, str(tmp / "shot.png"), size=WINDOW, timeout=60, net_log=str(tmp / "net.json"))
    seconds["chromium"] = time.monotonic() - t
    t = time.monotonic()
    shot = Screenshot(str(tmp / "shot.png"))
    seconds["png decode"] = time.monotonic() - t
    with open(tmp / "net.json") as fh:
        net_log = json.load(fh)
    results = build_results(str(run))
    dom = parse_dom(dom_text)
    print("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()))
    return Page(run, results, dom, shot, net_log, _sections(dom, results), seconds)


def case_of(page: Page, case_id: str) -> dict:
    return next(c for c in page.results["cases"] if c["id"] == case_id)


def ladder_of(page: Page, case_id: str) -> Node:
    svgs = [s for el in page.sections[case_id] for s in el.iter("svg")]
    assert len(svgs) == 1, f"{case_id}: {len(svgs)} <svg> in its section"
    return svgs[0]


def record(page: Page, case: dict) -> dict | None:
    return load_case(str(page.run / case["dir"]))[0]


# -- what the DOM shows --------------------------------------------------------------------------------

def _table_after(dom: Node, tag: str, heading: str) -> Node:
    body = next(dom.iter("body")).elements()
    for i, el in enumerate(body):
        if el.tag == tag and squash(el.text()).startswith(heading):
            rest = [t for e in body[i:i + 3] for t in e.iter("table")]
            assert rest, f"no table after the {tag} {heading!r}"
            return rest[0]
    raise AssertionError(f"no {tag} {heading!r} in the page")


def test_overview_shows_verdict_and_outcome_counts(page):
    table = _table_after(page.dom, "h2", "Overview")
    rows = {squash(tr.elements()[0].text()): tr.elements()[1:] for tr in table.iter("tr")}
    assert [squash(td.text()) for td in rows["verdicts"]] == ["confirmed 5", "refuted 0", "differs 1", "none 1"]
    assert [squash(td.text()) for td in rows["outcomes"]] == ["failed 1", "passed 5", "skipped 1"]
    for td in rows["verdicts"] + rows["outcomes"]:
        word = next(td.iter("span"))
        assert word.attrs.get("class") == word.text(), f"{word.text()!r} is not styled as itself"
    assert squash(next(page.dom.iter("h1")).text()) == "socklab run base"


def test_cases_table_lists_every_case_with_its_claim(page):
    table = _table_after(page.dom, "h3", "Cases")
    rows = [tr.elements() for tr in table.iter("tr")][1:]
    assert len(rows) == len(page.results["cases"]) == 7
    for cells, case in zip(rows, page.results["cases"]):
        link = next(cells[0].iter("a"))
        assert squash(link.text()) == case["id"]
        assert link.attrs["href"] == "#" + report.case_anchor(case)
        texts = [squash(td.text()) for td in cells[1:]]
        assert texts == [case.get("experiment") or "", case.get("article") or "", case.get("family") or "",
                         case["outcome"], case.get("verdict") or "none", squash(case.get("claim") or "")]


def test_every_case_section_shows_its_claim(page):
    assert list(page.sections) == [c["id"] for c in page.results["cases"]]
    claims = 0
    for case in page.results["cases"]:
        heading, *rest = page.sections[case["id"]]
        assert squash(heading.text()) == case["id"]
        shown = [squash(el.text()) for el in rest if el.tag == "p" and squash(el.text()).startswith("Claim:")]
        if case.get("claim"):
            assert shown == [f"Claim: {squash(case['claim'])}"], case["id"]
            claims += 1
        else:
            assert shown == [], case["id"]
    assert claims == 6      # FIX-SKIP has no claim marker
    # HTML in a claim is shown as text, never as markup.
    assert "Claim: connect to a closed port is <refused> & 'reported'" in [
        squash(el.text()) for el in page.sections["tests/unit/data/results/gen_cases.py::test_fail[ipv4]"]]
    assert not list(page.dom.iter("refused"))


def _arrows(svg: Node) -> list[Node]:
    """The lines that draw segments (ladder._arrow): solid with an arrowhead marker, or dashed red
    when dropped. The host lines (#444), pause lines (#bbb) and the X of a drop (a path) are not."""
    return [ln for ln in svg.iter("line") if ln.attrs.get("marker-end") or ln.attrs.get("stroke") == "#c00"]


def test_ladders_draw_one_arrow_per_segment(page):
    ladders = [s for s in page.dom.iter("svg") if s.attrs.get("class") == "ladder"]
    with_record = [c for c in page.results["cases"] if record(page, c) is not None]
    assert len(ladders) == len(with_record) == 6
    for case in with_record:
        rec = record(page, case)
        svg = ladder_of(page, case["id"])
        title = next(t for t in svg.elements() if t.tag == "title")
        assert title.text() == case["id"]
        arrows = _arrows(svg)
        assert len(arrows) == len(rec["segments"]), case["id"]
        # Document order is time order: each arrow points from its segment's sender to its receiver.
        for line, seg in zip(arrows, rec["segments"]):
            rightwards = float(line.attrs["x2"]) > float(line.attrs["x1"])
            assert rightwards == (seg["src"] == "client"), (case["id"], seg)
            assert (line.attrs.get("stroke") == "#c00") == bool(seg.get("dropped_by")), (case["id"], seg)
        markers = {m.attrs["id"] for m in svg.iter("marker")}
        for line in arrows:
            if line.attrs.get("marker-end"):
                assert line.attrs["marker-end"] in {f"url(#{m})" for m in markers}, "arrowhead marker missing"


def test_dropped_syn_is_a_red_dashed_arrow_ending_in_an_x(page):
    rec = record(page, case_of(page, DROP))
    assert [(s["src"], s["flags"], s.get("dropped_by")) for s in rec["segments"]] == [
        ("client", "S", "drop1"), ("client", "S", None), ("server", "S.", None), ("client", ".", None)]
    svg = ladder_of(page, DROP)
    arrows = _arrows(svg)
    assert [a.attrs.get("stroke") for a in arrows] == ["#c00", "#222", "#222", "#222"]
    dropped = arrows[0]
    assert dropped.attrs.get("stroke-dasharray") and not dropped.attrs.get("marker-end")
    assert squash(next(dropped.iter("title")).text()) == "dropped by drop1"
    crosses = [p for p in svg.iter("path") if p.attrs.get("stroke") == "#c00"]
    assert len(crosses) == 1
    labels = [squash(t.shown()) for t in svg.iter("text") if t.attrs.get("fill") == "#c00"]
    assert labels == [ladder.segment_body(rec["segments"][0])]
    assert labels[0].startswith("S 0:0(0) <mss")


def test_eleven_states_table_names_all_eleven(page):
    table = _table_after(page.dom, "h3", "The eleven states")
    rows = [tr.elements() for tr in table.iter("tr")]
    assert [squash(c.text()) for c in rows[0]] == ["state", "cases", "ss + trace", "ss only", "trace only"]
    assert [squash(r[0].text()) for r in rows[1:]] == STATES
    ids = {el.attrs["id"] for el in page.dom.iter() if "id" in el.attrs}
    shown = {}
    for r in rows[1:]:
        links = [a for td in r[2:] for a in td.iter("a")]
        assert int(r[1].text()) == len(links), squash(r[0].text())
        assert all(a.attrs["href"][1:] in ids for a in links)
        shown[r[0].text()] = [[squash(a.text()) for a in td.iter("a")] for td in r[2:]]
    assert shown["CLOSING"] == [[], [], []]
    assert shown["TIME_WAIT"] == [[], ["FIX-CLOSE/ipv4"], []]         # the trace never shows TIME_WAIT
    assert shown["ESTABLISHED"][0] == ["CONN-NOACCEPT/ipv4", "FIX-DROP/ipv4"]


def test_nothing_is_loaded_from_the_network(page):
    """Every src/href is a link inside the page or to a file of the run; Chromium's net log shows no
    DNS query, no TCP socket and no byte sent while it rendered the page."""
    assert not [el.tag for el in page.dom.iter() if el.tag in ("script", "link", "img", "iframe", "object", "embed")]
    ids = {el.attrs["id"] for el in page.dom.iter() if "id" in el.attrs}
    files = 0
    for el in page.dom.iter():
        for name in ("src", "href", "xlink:href"):
            value = el.attrs.get(name)
            if value is None:
                continue
            assert not re.match(r"(?i)(https?:)?//|[a-z][a-z0-9+.-]*:", value), f"<{el.tag} {name}={value!r}>"
            if value.startswith("#"):
                assert value[1:] in ids, f"<{el.tag} {name}={value!r}>: no such anchor"
            else:
                assert (page.run / value).is_file(), f"<{el.tag} {name}={value!r}>: no such file in the run"
                files += 1
    assert files >= 6 * 3           # case.json, outcome.json, packets.pcap of each case with a lab
    assert not re.search(r"url\((?!#)", "".join(s.text() for s in page.dom.iter("style")))
    types = {v: k for k, v in page.net_log["constants"]["logEventTypes"].items()}
    sources = {v: k for k, v in page.net_log["constants"]["logSourceType"].items()}
    sent = [types[e["type"]] for e in page.net_log["events"]
            if types[e["type"]].endswith("BYTES_SENT") or types[e["type"]] == "DNS_TRANSACTION_ATTEMPT"]
    tcp = [e for e in page.net_log["events"] if sources[e["source"]["type"]] == "TCP_SOCKET"]
    assert sent == [] and tcp == [], f"Chromium sent {sent} and opened {len(tcp)} TCP socket events"


# -- what the screenshot shows -------------------------------------------------------------------------

def test_screenshot_is_not_blank(page):
    shot = page.shot
    assert (shot.width, shot.height) == WINDOW
    share = shot.non_white_share()
    assert share >= 0.08, f"only {share:.1%} of the screenshot is not white"
    last = shot.last_content_row()
    assert 8000 <= last < shot.height - 200, (
        f"the page ends at row {last} of {shot.height}: cut short, or taller than the window (raise WINDOW)")


def _host_lines(page: Page) -> tuple[int, int, list]:
    """(client x, server x, [(y0, y1) of each ladder]) from the host lines in the screenshot."""
    lines = vertical_lines(page.shot.pixels(HOST_LINE))
    xs = sorted(lines)
    clusters = []
    for x in xs:
        if clusters and x - clusters[-1][-1] <= 1:
            clusters[-1].append(x)
        else:
            clusters.append([x])
    assert len(clusters) == 2, f"vertical #444 lines at x {clusters}: expected the client and the server line"
    client = max(clusters[0], key=lambda x: len(lines[x]))
    server = max(clusters[1], key=lambda x: len(lines[x]))
    return client, server, lines[client]


def test_screenshot_shows_every_ladder_at_its_size(page):
    client, server, runs = _host_lines(page)
    assert abs((server - client) - (ladder.X_SERVER - ladder.X_CLIENT)) <= 2
    ladders = [s for s in page.dom.iter("svg") if s.attrs.get("class") == "ladder"]
    assert len(runs) == len(ladders), f"host lines drawn {len(runs)} times for {len(ladders)} ladders"
    for (y0, y1), svg in zip(runs, ladders):
        # A host line goes from y=24 to the ladder's height - 6 (ladder.svg_ladder).
        assert abs((y1 - y0 + 1) - (int(svg.attrs["height"]) - 30)) <= 3, (y0, y1, svg.attrs["height"])


def test_screenshot_shows_the_dropped_syn_in_red(page):
    client, server, runs = _host_lines(page)
    order = [c["id"] for c in page.results["cases"] if record(page, c) is not None]
    y0, y1 = runs[order.index(DROP)]
    red = page.shot.pixels(DROPPED)
    assert len(red) >= 20, f"{len(red)} pixels of the dropped-segment red #c00"
    assert all(client < x < server and y0 <= y <= y1 for x, y in red), \
        "red pixels outside the gap between the host lines of the FIX-DROP ladder"
    cross_x = client + 0.85 * (server - client)      # ladder._arrow: the X at 85% of the way
    assert any(abs(x - cross_x) <= 6 for x, _ in red), f"no red near x={cross_x:.0f} (the X of the drop)"
    heads = [(x, y) for x, y in page.shot.pixels(ARROW) if y0 <= y <= y1]
    assert any(server - 12 <= x < server for x, _ in heads), "no arrowhead at the server line"
    assert any(client < x <= client + 12 for x, _ in heads), "no arrowhead at the client line"


def test_screenshot_colours_the_verdict_words(page):
    _, _, runs = _host_lines(page)
    above = runs[0][0]          # the overview, above the first ladder
    for word, colour in (("confirmed", (0x11, 0x66, 0x11)), ("differs", (0xa6, 0x5f, 0x00)),
                         ("failed", (0xbb, 0x00, 0x00))):
        assert any(y < above for _, y in page.shot.pixels(colour)), f"no {word} colour {colour} in the overview"
