"""The HTML report in a real browser: headless Chromium renders a copied fixture run (the `base` run
of tests/unit/data/results, see its README.txt, with schema-2 results made by hand: tests/unit/schema2.py)
in a 1280 px window, and the tests check what a person would see there: in the DOM after rendering
(counts, every claim by article with its verdict and case links, two clicks from a claim to its
evidence, the eleven states, cases by experiment, the ladder), in every element's box (nothing wider
than the window, on the overview and every case page), and in the pixels of the screenshots (not
blank, the ladder drawn, the dropped SYN in red, coloured verdict words). Chromium's own net log shows
that nothing left the machine. The screenshots of the overview and of one case are kept under
reports/browser-test/. Needs Chromium, not root.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import lxml.etree
import lxml.html
import pytest
from PIL import Image

from harness import browser, ladder, report
from harness import states as harness_states
from harness.errors import SetupError
from harness.results import load_case
from harness.segment import windows

from ..unit.schema2 import CLAIMS, base_run

DATA = Path(__file__).parent.parent / "unit" / "data" / "results"
DROP = "tests/unit/data/results/gen_cases.py::test_drop[ipv4]"
STATES = list(harness_states.RFC)       # the report names the eleven states as RFC 9293 does
WIDTH = 1280
# Tall enough for the whole page at this width (the overview with its claims, states and edge tables,
# the FIX-DROP case about 2,400 px).
OVERVIEW_WINDOW = (WIDTH, 8000)
CASE_WINDOW = (WIDTH, 3200)
SHOTS = Path(__file__).resolve().parents[2] / "reports" / "browser-test"
WHITE = (255, 255, 255)
HOST_LINE = (0x44, 0x44, 0x44)      # ladder.svg_ladder: the client and server lines, stroke #444
DROPPED = (0xcc, 0x00, 0x00)        # ladder._arrow: a dropped segment, stroke #c00
ARROW = (0x22, 0x22, 0x22)          # ladder.svg_ladder: the arrowhead marker, fill #222


@pytest.fixture(autouse=True)
def _root_only():
    """Overrides the integration tests' root check: rendering a report needs no privileges."""


# -- the DOM after rendering -------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def parse_dom(text: str):
    return lxml.html.document_fromstring(text)


def elements(el) -> list:
    """The element children of `el` (no comments)."""
    return [c for c in el if isinstance(c.tag, str)]


def shown(el) -> str:
    """The visible text: without <title> tooltips (an SVG <text> starts with one)."""
    parts = [el.text or ""]
    for child in el:
        if child.tag != "title" and isinstance(child.tag, str):
            parts.append(shown(child))
        parts.append(child.tail or "")
    return "".join(parts)


def squash(text: str) -> str:
    return " ".join(text.split())


# -- the screenshot, decoded with the standard library -------------------------------------------------

_EQUALS = [bytes(1 if i == v else 0 for i in range(256)) for v in range(256)]


class Screenshot:
    """The pixels of a PNG screenshot, searched by exact colour."""

    def __init__(self, path: str):
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        self.width, self.height = rgb.size
        self.bpp, stride, data = 3, 3 * rgb.size[0], rgb.tobytes()
        self.rows = [data[y * stride:(y + 1) * stride] for y in range(self.height)]
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


# -- the rendered pages ----------------------------------------------------------------------------------

@dataclass
class Rendered:
    path: Path
    dom: object             # the lxml tree of the page
    shot: Screenshot
    net_log: dict


@dataclass
class Site:
    run: Path
    results: dict
    overview: Rendered
    case: Rendered          # the FIX-DROP case's page


def _render(html: Path, png: Path, size, net: Path) -> Rendered:
    dom = browser.render(str(html), str(png), size=size, timeout=90, net_log=str(net))
    with open(net) as fh:
        log = json.load(fh)
    return Rendered(html, parse_dom(dom), Screenshot(str(png)), log)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    """Name: site. Scope: module. Depends: nothing. The base run copied, its report written from schema-2
    results, the overview and the FIX-DROP case page rendered once; their screenshots kept in reports/."""
    try:
        browser.find()
    except SetupError as exc:
        pytest.skip(str(exc))
    tmp = tmp_path_factory.mktemp("browser")
    run, results = base_run(tmp)
    t = time.monotonic()
    index = Path(report.write_report(str(run), results))
    written = time.monotonic() - t
    t = time.monotonic()
    overview = _render(index, tmp / "overview.png", OVERVIEW_WINDOW, tmp / "net-overview.json")
    case = _render(run / case_of(results, DROP)["dir"] / "index.html", tmp / "case.png", CASE_WINDOW,
                   tmp / "net-case.json")
    print(f"timings: write_report {written:.2f} s, two Chromium renders {time.monotonic() - t:.2f} s")
    SHOTS.mkdir(parents=True, exist_ok=True)
    # atomically: the module's tests can run on several xdist workers, each with its own site
    for src, name in (("overview.png", "overview.png"), ("case.png", "case-FIX-DROP.png")):
        part = SHOTS / f".{name}.{os.getpid()}"
        shutil.copyfile(tmp / src, part)
        os.replace(part, SHOTS / name)
    return Site(run, results, overview, case)


def case_of(results: dict, case_id: str) -> dict:
    return next(c for c in results["cases"] if c["id"] == case_id)


def record(site: Site, case: dict) -> dict | None:
    return load_case(str(site.run / case["dir"]))[0]


def page_dom(site: Site, href: str):
    """A page of the report reached by a link of the overview, parsed from its file."""
    path = (site.run / href.split("#")[0]).resolve()
    assert path.is_file(), f"link {href!r} leads to no file"
    return parse_dom(path.read_text())


def links(node) -> list:
    return [a for a in node.iter("a") if a.attrib.get("href")]


# -- the overview ----------------------------------------------------------------------------------------

def test_overview_shows_verdict_and_outcome_counts(site):
    table = next(site.overview.dom.iter("table"))
    rows = {squash(elements(tr)[0].text_content()): elements(tr)[1:] for tr in table.iter("tr")}
    assert [squash(td.text_content()) for td in rows["verdicts"]] == ["confirmed 4", "refuted 1", "differs 1", "none 1"]
    assert [squash(td.text_content()) for td in rows["outcomes"]] == ["failed 1", "passed 5", "skipped 1"]
    for td in rows["verdicts"] + rows["outcomes"]:
        word = next(td.iter("span"))
        assert word.attrib.get("class") == word.text_content(), f"{word.text_content()!r} is not styled as itself"
    assert squash(next(site.overview.dom.iter("h1")).text_content()) == "socklab run base"


def claim_rows(site: Site) -> dict:
    """{(article, claim id): the <tr>} of the claims-by-article tables, as rendered."""
    out = {}
    for tr in site.overview.dom.iter("tr"):
        m = re.fullmatch(r"claim-(\d+)-(.+)", tr.attrib.get("id", ""))
        if m:
            out[m.groups()] = tr
    return out


def test_every_claim_row_is_shown_under_each_of_its_articles(site):
    rows = claim_rows(site)
    assert sorted(rows) == sorted((a, c["id"]) for c in CLAIMS for a in c["articles"])
    for (article, cid), tr in rows.items():
        claim = next(c for c in CLAIMS if c["id"] == cid)
        cells = [squash(td.text_content()) for td in elements(tr)]
        assert cells[0].startswith(cid) and cells[1] == squash(claim["text"]), (article, cid)
    heads = [squash(h.text_content()) for h in site.overview.dom.iter("h3")]
    assert [h.split(":")[0] for h in heads if h.startswith("Article")] == [f"Article {a}" for a in
                                                                        ("000", "001", "002", "003", "004")]


def test_every_case_is_linked_and_every_link_leads_somewhere(site):
    ids = {el.attrib["id"] for el in site.overview.dom.iter(tag=lxml.etree.Element) if "id" in el.attrib}
    pages = set()
    for a in links(site.overview.dom):
        href = a.attrib["href"]
        if href.startswith("#"):
            assert href[1:] in ids, f"no anchor {href}"
        else:
            page_dom(site, href)
            pages.add(href)
    assert pages == {f"{c['dir']}/index.html" for c in site.results["cases"]}


def test_from_the_overview_to_the_evidence_of_any_claim_in_two_clicks(site):
    """Click 1: a case in the claim's row; the page it opens shows, first, the verdict on that claim with
    the evidence, and the ladder. Every judged claim has such a case; an unjudged one says so."""
    judged = 0
    for (article, cid), tr in claim_rows(site).items():
        claim = next(c for c in CLAIMS if c["id"] == cid)
        cases = [a for a in links(tr) if "case" in a.attrib.get("class", "")]
        if not cases:
            assert "not judged" in squash(tr.text_content()), (article, cid)
            continue
        judged += 1
        for a in cases:
            dom = page_dom(site, a.attrib["href"])
            body = elements(next(dom.iter("body")))
            first = next(i for i, el in enumerate(body) if el.tag == "h2")
            assert body[first].attrib.get("id") == "evidence", a.attrib["href"]
            table = body[first + 1]
            rows = [[squash(td.text_content()) for td in elements(r)] for r in table.iter("tr")][1:]
            mine = [r for r in rows if set(claim["numbers"]) & {int(n) for n in re.findall(r"\d+", r[0].split()[0])}]
            assert mine, f"{a.attrib['href']}: no verdict on claim {cid}"
            assert squash(a.attrib["title"]).startswith(mine[0][3].split(" (decided by")[0])
            assert any(s.attrib.get("class") == "ladder" for s in dom.iter("svg")), a.attrib["href"]
    assert judged == 7           # every row of the five judged claims, under each of its articles


def test_cases_grouped_by_experiment(site):
    rows = {tr.attrib["id"][4:]: tr for tr in site.overview.dom.iter("tr") if tr.attrib.get("id", "").startswith("exp-")}
    for case in site.results["cases"]:
        hrefs = [a.attrib["href"] for a in links(rows[case["experiment"]])]
        assert f"{case['dir']}/index.html" in hrefs, case["id"]


def test_eleven_states_and_edges(site):
    heads = {el.attrib.get("id"): i for i, el in enumerate(elements(next(site.overview.dom.iter("body"))))}
    body = elements(next(site.overview.dom.iter("body")))
    states = next(t for t in body[heads["states"]:] if t.tag == "table")
    rows = [elements(tr) for tr in states.iter("tr")]
    assert [squash(r[0].text_content()) for r in rows[1:]] == STATES
    seen = {squash(r[0].text_content()): squash(r[2].text_content()) for r in rows[1:]}
    linked = {squash(r[0].text_content()): [squash(a.text_content()) for a in r[3].iter("a")] for r in rows[1:]}
    assert "FIX-CLOSE/ipv4" in linked["TIME-WAIT"] and "trace" not in seen["TIME-WAIT"]   # the trace never shows it
    assert linked["CLOSING"] == [] and seen["CLOSING"] == "not reached"
    edges = next(t for t in body[heads["edges"]:] if t.tag == "table")
    edge_rows = [elements(tr) for tr in edges.iter("tr")][1:]
    assert len(edge_rows) == 30                                               # every edge has a row
    status = {squash(r[0].text_content()): squash(r[2].text_content()) for r in edge_rows}
    assert status["LISTEN -> SYN-RECEIVED"] == "taken" and status["CLOSING -> TIME-WAIT"] == "not taken"


def test_nothing_is_loaded_from_the_network(site):
    """Every src/href is a link inside the page or to a file of the run; Chromium's net logs show no
    DNS query, no TCP socket and no byte sent while it rendered the overview and a case page."""
    for page in (site.overview, site.case):
        assert not [el.tag for el in page.dom.iter(tag=lxml.etree.Element) if el.tag in ("script", "link", "img", "iframe", "object", "embed")]
        ids = {el.attrib["id"] for el in page.dom.iter(tag=lxml.etree.Element) if "id" in el.attrib}
        for el in page.dom.iter(tag=lxml.etree.Element):
            for name in ("src", "href", "xlink:href"):
                value = el.attrib.get(name)
                if value is None:
                    continue
                assert not re.match(r"(?i)(https?:)?//|[a-z][a-z0-9+.-]*:", value), f"<{el.tag} {name}={value!r}>"
                if value.startswith("#"):
                    assert value[1:] in ids, f"<{el.tag} {name}={value!r}>: no such anchor"
                else:
                    assert (page.path.parent / value.split("#")[0]).is_file(), f"<{el.tag} {name}={value!r}>"
        assert not re.search(r"url\((?!#)", "".join(s.text_content() for s in page.dom.iter("style")))
        types = {v: k for k, v in page.net_log["constants"]["logEventTypes"].items()}
        sources = {v: k for k, v in page.net_log["constants"]["logSourceType"].items()}
        sent = [types[e["type"]] for e in page.net_log["events"]
                if types[e["type"]].endswith("BYTES_SENT") or types[e["type"]] == "DNS_TRANSACTION_ATTEMPT"]
        tcp = [e for e in page.net_log["events"] if sources[e["source"]["type"]] == "TCP_SOCKET"]
        assert sent == [] and tcp == [], f"{page.path}: Chromium sent {sent} and opened {len(tcp)} TCP socket events"


def test_nothing_is_wider_than_a_1280_px_window(site):
    """Every element of the overview and of every case page lies inside the window: no sideways scrolling."""
    pages = [site.run / "index.html"] + [site.run / c["dir"] / "index.html" for c in site.results["cases"]]
    for path in pages:
        m = browser.measure(str(path), width=WIDTH, timeout=90)
        assert m["viewport"] == WIDTH
        assert m["too_wide"] == [] and m["scroll_width"] <= WIDTH, f"{path}: {m}"


# -- the case page ---------------------------------------------------------------------------------------

def _arrows(svg) -> list:
    """The lines that draw segments (ladder._arrow): solid with an arrowhead marker, or dashed red
    when dropped. The host lines (#444), pause lines (#bbb) and the X of a drop (a path) are not."""
    return [ln for ln in svg.iter("line") if ln.attrib.get("marker-end") or ln.attrib.get("stroke") == "#c00"]


def test_case_ladder_draws_one_arrow_per_segment_and_the_drop(site):
    rec = record(site, case_of(site.results, DROP))
    svgs = [s for s in site.case.dom.iter("svg") if s.attrib.get("class") == "ladder"]
    assert len(svgs) == 1
    svg = svgs[0]
    arrows = _arrows(svg)
    assert [(s["src"], s["flags"], s.get("dropped_by")) for s in rec["segments"]] == [
        ("client", "S", "drop1"), ("client", "S", None), ("server", "S.", None), ("client", ".", None)]
    for line, seg in zip(arrows, rec["segments"]):
        assert (float(line.attrib["x2"]) > float(line.attrib["x1"])) == (seg["src"] == "client")
    assert [a.attrib.get("stroke") for a in arrows] == ["#c00", "#222", "#222", "#222"]
    assert squash(next(arrows[0].iter("title")).text_content()) == "dropped by drop1"
    assert len([p for p in svg.iter("path") if p.attrib.get("stroke") == "#c00"]) == 1


def test_case_ladder_shows_windows_and_calls_on_each_hosts_side(site):
    rec = record(site, case_of(site.results, DROP))
    svg = next(s for s in site.case.dom.iter("svg") if s.attrib.get("class") == "ladder")
    texts = [t for t in svg.iter("text")]
    wins = [t for t in texts if squash(shown(t)).startswith("win ")]
    assert [squash(shown(t)) for t in wins] == [w for w in windows(rec["segments"]) if w]
    assert any("(raw " in squash(shown(t)) for t in wins)
    by_text = {squash(shown(t)): t for t in texts}
    for call in rec["calls"]:
        left = [t for s, t in by_text.items() if s.startswith(call["op"] + "(")]
        assert left, call
        for t in left:
            on_server = float(t.attrib["x"]) > ladder.X_SERVER
            assert on_server == ((call.get("role") or call["program"]) == "server") or call["op"] == "socket"


# -- what the screenshots show -----------------------------------------------------------------------------

def test_screenshots_are_kept_and_not_blank(site):
    for page, name, size in ((site.overview, "overview.png", OVERVIEW_WINDOW), (site.case, "case-FIX-DROP.png", CASE_WINDOW)):
        shot = page.shot
        assert (shot.width, shot.height) == size
        assert shot.non_white_share() >= 0.04, f"{name}: only {shot.non_white_share():.1%} is not white"
        last = shot.last_content_row()
        assert 1000 <= last < shot.height - 200, f"{name}: the page ends at row {last} of {shot.height}"
        kept = SHOTS / name
        assert kept.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Screenshot(str(kept)).width == WIDTH


def _host_lines(shot: Screenshot) -> tuple[int, int, tuple[int, int]]:
    """(client x, server x, (y0, y1) of the ladder) from the host lines in a screenshot."""
    lines = vertical_lines(shot.pixels(HOST_LINE))
    clusters = []
    for x in sorted(lines):
        if clusters and x - clusters[-1][-1] <= 1:
            clusters[-1].append(x)
        else:
            clusters.append([x])
    assert len(clusters) == 2, f"vertical #444 lines at x {clusters}: expected the client and the server line"
    client = max(clusters[0], key=lambda x: len(lines[x]))
    server = max(clusters[1], key=lambda x: len(lines[x]))
    return client, server, lines[client][0]


def test_screenshot_shows_the_ladder_at_its_size_and_the_dropped_syn_in_red(site):
    client, server, (y0, y1) = _host_lines(site.case.shot)
    assert abs((server - client) - (ladder.X_SERVER - ladder.X_CLIENT)) <= 2        # not scaled down
    svg = next(s for s in site.case.dom.iter("svg") if s.attrib.get("class") == "ladder")
    assert abs((y1 - y0 + 1) - (int(svg.attrib["height"]) - 30)) <= 3
    red = site.case.shot.pixels(DROPPED)
    assert len(red) >= 20 and all(client < x < server and y0 <= y <= y1 for x, y in red)
    cross_x = client + 0.85 * (server - client)
    assert any(abs(x - cross_x) <= 6 for x, _ in red), f"no red near x={cross_x:.0f} (the X of the drop)"
    heads = [(x, y) for x, y in site.case.shot.pixels(ARROW) if y0 <= y <= y1]
    assert any(server - 12 <= x < server for x, _ in heads) and any(client < x <= client + 12 for x, _ in heads)
    assert max(x for x, _ in site.case.shot.pixels(HOST_LINE)) < WIDTH


def test_screenshot_colours_the_verdict_words(site):
    for word, colour in (("confirmed", (0x11, 0x66, 0x11)), ("differs", (0xa6, 0x5f, 0x00)),
                         ("refuted", (0xbb, 0x00, 0x00))):
        assert site.overview.shot.pixels(colour), f"no {word} colour {colour} in the overview"
