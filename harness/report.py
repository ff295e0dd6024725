"""The static HTML report of a run: `<run_dir>/index.html`, one file, readable offline.

An overview (verdict and outcome counts, settings, kernel, the cases with links, and which of the
eleven RFC 793 states each case reached, seen in `ss`, in the state trace, or both), then one
section per case: claim, verdicts, outcome and failure text, steps, the SVG ladder, the `ss`
snapshots as printed, the transitions per socket, and links to the pcap and other artifacts. No
network: CSS and SVG are inline, no fonts or scripts are loaded. Every text is escaped.
"""

from __future__ import annotations

import os
import re
from html import escape

from . import ladder
from .results import build_results, counts, fixed_ports, load_case, settings_text, socket_name

STATES = ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
          "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT")
FROM_SS = {"UNCONN": "CLOSED", "CLOSE": "CLOSED", "LISTEN": "LISTEN", "SYN-SENT": "SYN_SENT",
           "SYN-RECV": "SYN_RECEIVED", "ESTAB": "ESTABLISHED", "FIN-WAIT-1": "FIN_WAIT_1",
           "FIN-WAIT-2": "FIN_WAIT_2", "CLOSE-WAIT": "CLOSE_WAIT", "CLOSING": "CLOSING",
           "LAST-ACK": "LAST_ACK", "TIME-WAIT": "TIME_WAIT"}
FROM_KERNEL = {"CLOSE": "CLOSED", "LISTEN": "LISTEN", "SYN_SENT": "SYN_SENT", "SYN_RECV": "SYN_RECEIVED",
               "NEW_SYN_RECV": "SYN_RECEIVED", "ESTABLISHED": "ESTABLISHED", "FIN_WAIT1": "FIN_WAIT_1",
               "FIN_WAIT2": "FIN_WAIT_2", "CLOSE_WAIT": "CLOSE_WAIT", "CLOSING": "CLOSING",
               "LAST_ACK": "LAST_ACK", "TIME_WAIT": "TIME_WAIT"}

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#111;max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.2em;border-top:2px solid #ccc;padding-top:.8em;margin-top:2em}
h3{font-size:1em;margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}pre{background:#f7f7f7;border:1px solid #ddd;padding:6px;overflow-x:auto;font-size:12px}
.passed,.confirmed{color:#116611;font-weight:bold}.failed,.error,.refuted{color:#b00;font-weight:bold}
.skipped,.none,.unknown{color:#777}.differs,.mixed{color:#a65f00;font-weight:bold}
.both{color:#116611}.ss{color:#1f4e9c}.trace{color:#6a3d9a}
.ladder{border:1px solid #ddd;background:#fff;max-width:100%;height:auto}
.small{font-size:.85em;color:#555}ul.plain{list-style:none;padding-left:0}
td a{white-space:nowrap}
"""


def case_anchor(case: dict) -> str:
    return "case-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(case.get("dir") or case["id"]))


def short_name(case: dict) -> str:
    """'CONN-NOACCEPT/ipv4' (experiment and family), or the test id when the case has no experiment."""
    if case.get("experiment"):
        return case["experiment"] + (f"/{case['family']}" if case.get("family") else "")
    return case["id"]


def observed_states(case: dict) -> dict:
    """{STATE: {"ss", "trace"}} for the eleven states this case reached, from its normalised behaviour."""
    out: dict = {}
    b = case.get("behaviour") or {}
    for roles in (b.get("ss") or {}).values():
        for states in roles.values():
            for s in states:
                name = FROM_SS.get(s.split(" ")[0])
                if name:
                    out.setdefault(name, set()).add("ss")
    for h in b.get("transitions") or []:
        for s in h.get("states", []):
            name = FROM_KERNEL.get(s)
            if name:
                out.setdefault(name, set()).add("trace")
    return out


def state_table(results: dict) -> dict:
    """{STATE: [(case, "ss" | "trace" | "both"), ...]} over every case of the run."""
    table: dict = {s: [] for s in STATES}
    for c in results["cases"]:
        for state, sources in observed_states(c).items():
            table[state].append((c, "both" if len(sources) == 2 else next(iter(sources))))
    return table


def summary_line(results: dict, report_path: str | None = None) -> str:
    """'socklab: 6 cases (5 passed, 1 failed); verdicts: 3 confirmed, ...; report: PATH'."""
    n = counts(results)
    outcomes = ", ".join(f"{v} {k}" for k, v in sorted(n["outcomes"].items()))
    verdicts = ", ".join(f"{v} {k}" for k, v in n["verdicts"].items())
    out = f"socklab: {len(results['cases'])} cases ({outcomes or 'none'}); verdicts: {verdicts}"
    return out + (f"; report: {report_path}" if report_path else "")


def _e(value) -> str:
    return escape("" if value is None else str(value))


def _word(word) -> str:
    word = word or "none"
    return f'<span class="{_e(word)}">{_e(word)}</span>'


def _link(case: dict) -> str:
    return f'<a href="#{case_anchor(case)}">{_e(case["id"])}</a>'


def _overview(results: dict) -> list[str]:
    n = counts(results)
    s = results.get("settings") or {}
    out = [f"<h1>socklab run {_e(results['run'])}</h1>",
           f'<p>kernel <b>{_e(results["kernel"])}</b> &middot; socklab {_e(results["harness"])} &middot; '
           f'written {_e(results.get("created"))} &middot; settings: {_e(settings_text(results))}</p>',
           "<h2>Overview</h2><table><tr><th>verdicts</th>"
           + "".join(f"<td>{_word(k)} {v}</td>" for k, v in n["verdicts"].items()) + "</tr><tr><th>outcomes</th>"
           + "".join(f"<td>{_word(k)} {v}</td>" for k, v in sorted(n["outcomes"].items())) + "</tr></table>",
           "<h3>Settings</h3><table><tr><th>profile</th><td>" + _e(s.get("profile") or "-") + "</td></tr>"
           + "<tr><th>link MTU</th><td>" + _e(", ".join(map(str, s.get("mtus") or [])) or "-") + "</td></tr>"]
    common = s.get("common_sysctls") or {}
    for k, v in (s.get("sysctls") or {}).items():
        where = "every case" if k in common else "some cases"
        shown = ", ".join(v) if isinstance(v, list) else v
        out.append(f"<tr><th>{_e(k)}</th><td>{_e(shown)} <span class=small>({where})</span></td></tr>")
    out.append("</table>")
    out.append("<h3>Cases</h3><table><tr><th>case</th><th>experiment</th><th>article</th><th>family</th>"
               "<th>outcome</th><th>verdict</th><th>claim</th></tr>")
    for c in results["cases"]:
        out.append(f"<tr><td>{_link(c)}</td><td>{_e(c.get('experiment'))}</td><td>{_e(c.get('article'))}</td>"
                   f"<td>{_e(c.get('family'))}</td><td>{_word(c['outcome'])}</td><td>{_word(c.get('verdict'))}</td>"
                   f"<td>{_e(c.get('claim'))}</td></tr>")
    out.append("</table>")
    out.append("<h3>The eleven states</h3><p class=small>Which cases reached each state, and where it was seen: "
               '<span class="both">both</span> (ss and trace), <span class="ss">ss</span> only, '
               '<span class="trace">trace</span> only. CLOSED is ss&rsquo;s UNCONN and the trace&rsquo;s CLOSE; '
               "the trace never shows TIME_WAIT (see README).</p>"
               "<table><tr><th>state</th><th>cases</th><th>ss + trace</th><th>ss only</th><th>trace only</th></tr>")
    for state, hits in state_table(results).items():
        cells = []
        for src in ("both", "ss", "trace"):
            cells.append("<td>" + ", ".join(f'<a class="{src}" href="#{case_anchor(c)}" title="{_e(c["id"])}">'
                                             f"{_e(short_name(c))}</a>" for c, s in hits if s == src) + "</td>")
        out.append(f"<tr><th>{state}</th><td>{len(hits)}</td>{''.join(cells)}</tr>")
    out.append("</table>")
    return out


def _steps(rec: dict) -> str:
    addrs = {a: role for role, v in (rec.get("hosts") or {}).items() for a in v.values() if a}
    rows = ["<table><tr><th>t ms</th><th>program</th><th>call</th><th>result</th></tr>"]
    for c in sorted(rec.get("calls", []), key=lambda c: c.get("t0") or 0):
        res = c.get("errno") or (f"error {c['error']}" if c.get("error") else "ok")
        cls = "failed" if c.get("error") else ("differs" if c.get("errno") else "passed")
        rows.append(f"<tr><td>{(c.get('t0') or 0) * 1000:.3f}</td><td>{_e(c.get('program'))}</td>"
                    f"<td><code>{_e(ladder.call_text(c, addrs))}</code></td><td class={cls}>{_e(res)}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _transitions(rec: dict) -> str:
    hists = rec.get("transitions", [])
    if rec.get("trace_unavailable"):
        return f"<p class=small>state trace unavailable: {_e(rec['trace_unavailable'])}</p>"
    if not hists:
        return "<p class=small>(no transitions traced)</p>"
    rows = ["<table><tr><th>socket</th><th>kernel states</th><th>at ms</th></tr>"]
    fixed = fixed_ports(rec)
    for h in hists:
        rows.append(f"<tr><td>{_e(socket_name(h, fixed))}<br><span class=small>{_e(h.get('local'))}:"
                    f"{_e(h.get('local_port'))} &gt; {_e(h.get('peer'))}:{_e(h.get('peer_port'))}</span></td>"
                    f"<td>{_e(' -> '.join(h.get('states', [])))}</td>"
                    f"<td>{_e(', '.join(f'{t * 1000:.3f}' for t in h.get('times', [])))}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _case_section(run_dir: str, case: dict) -> list[str]:
    out = [f'<h2 id="{case_anchor(case)}">{_e(case["id"])}</h2>',
           f"<p>experiment <b>{_e(case.get('experiment'))}</b> &middot; article {_e(case.get('article'))} &middot; "
           f"{_e(case.get('family'))} &middot; outcome {_word(case['outcome'])} &middot; verdict "
           f"{_word(case.get('verdict'))} &middot; <a href=\"#top\">top</a></p>"]
    if case.get("claim"):
        out.append(f"<p><b>Claim:</b> {_e(case['claim'])}</p>")
    if case.get("verdicts"):
        out.append("<ul>" + "".join(
            f"<li>{_word(v.get('verdict'))}: {_e(v.get('evidence') or v.get('observed'))}"
            + (f" <span class=small>(holds under {_e(v['setting'])})</span>" if v.get("setting") else "")
            + (f" <span class=small>[claim: {_e(v['claim'])}]</span>" if v.get("claim") != case.get("claim") else "")
            + "</li>" for v in case["verdicts"]) + "</ul>")
    if case.get("longrepr"):
        label = "reason" if case["outcome"] == "skipped" else f"failure ({_e(case.get('when'))})"
        out.append(f"<h3>{label}</h3><pre>{_e(case['longrepr'])}</pre>")
    rec = load_case(os.path.join(run_dir, case["dir"]))[0] if case.get("dir") else None
    if rec is not None:
        mtu = rec.get("mtu")
        sysctls = ", ".join(f"{k}={v}" for k, v in (case.get("sysctls") or {}).items()) or "none"
        out.append(f"<p class=small>link MTU {_e(mtu)} &middot; sysctls: {_e(sysctls)} &middot; "
                   f"duration {_e(rec.get('duration'))} s</p>")
        out.append("<h3>Steps</h3>" + _steps(rec))
        out.append("<h3>Ladder</h3>" + ladder.svg_ladder(rec, title=case["id"]))
        out.append("<h3>ss snapshots</h3>")
        for snap in rec.get("ss", []):
            out.append(f"<p class=small>{_e(snap.get('role'))} [{_e(snap.get('label'))}] "
                       f"t={snap.get('t', 0) * 1000:.3f} ms</p><pre>{_e(snap.get('text'))}</pre>")
        if not rec.get("ss"):
            out.append("<p class=small>(no snapshots)</p>")
        out.append("<h3>Transitions per socket</h3>" + _transitions(rec))
        extra = [(f["t"], f"fault ({f.get('role')}): {f['text']}") for f in rec.get("faults", [])]
        extra += [(n["t"], n["text"]) for n in rec.get("notes", [])]
        if extra:
            out.append("<h3>Faults and notes</h3><ul class=plain>" + "".join(
                f"<li>{t * 1000:.3f} ms: {_e(text)}</li>" for t, text in sorted(extra)) + "</ul>")
    out.append("<h3>Artifacts</h3><ul class=plain>" + "".join(
        f'<li><a href="{_e(path)}">{_e(os.path.basename(path))}</a> <span class=small>({_e(name)})</span></li>'
        for name, path in sorted((case.get("artifacts") or {}).items(), key=lambda kv: kv[1])) + "</ul>")
    return out


def render_report(run_dir: str, results: dict | None = None) -> str:
    """The HTML text of the run's report."""
    results = results or build_results(run_dir)
    body = _overview(results)
    for c in results["cases"]:
        body += _case_section(run_dir, c)
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>socklab {_e(results['run'])}</title><style>{CSS}</style></head>\n"
            '<body><a id="top"></a>\n' + "\n".join(body) + "\n</body></html>\n")


def write_report(run_dir: str, results: dict | None = None) -> str:
    """Write `<run_dir>/index.html` (from `results`, or from the run folder as it is); returns its path."""
    path = os.path.join(run_dir, "index.html")
    with open(path + ".tmp", "w") as fh:
        fh.write(render_report(run_dir, results))
    os.replace(path + ".tmp", path)
    return path
