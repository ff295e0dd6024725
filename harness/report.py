"""The static HTML report of a run, readable offline, for three readers: someone asking "what does
article 000 claim, and what did Linux do", someone checking one experiment, someone debugging a case.

`<run_dir>/index.html`, the overview: verdict and outcome counts and settings; the claims by article
(every claim row, its verdict on this run, the one-line evidence and links to the cases that judged
it; harness/claimtable.py); the eleven states and the state-diagram edges; the cases grouped by
experiment. `<run_dir>/cases/<case>/index.html`, one page per case (harness/casepage.py): the
evidence, the ladder, steps, `ss`, transitions and artifacts. So the evidence of any claim is two
clicks from the overview at most (a case link in the claim's row, and the page it opens). No network:
CSS and SVG are inline; every text is escaped; nothing is wider than a 1280 px window.
"""

from __future__ import annotations

import os
import re

from . import casepage, claimtable
from .claimtable import short_name
from .page import e, shell, word, write
from .results import build_results, counts, settings_text

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

def case_anchor(case: dict) -> str:
    return "case-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(case.get("dir") or case["id"]))


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
    if results.get("interrupted"):
        out += "; INTERRUPTED: the run stopped before its end"
    return out + (f"; report: {report_path}" if report_path else "")


def case_href(case: dict) -> str:
    """The link from the overview to a case's page (or, without a case folder, to its row)."""
    return casepage.page_path(case) or f"#{case_anchor(case)}"


def _header(results: dict) -> list[str]:
    n = counts(results)
    s = results.get("settings") or {}
    out = [f"<h1>socklab run {e(results['run'])}</h1>",
           f'<p>kernel <b>{e(results.get("kernel"))}</b> &middot; socklab {e(results.get("harness"))} &middot; '
           f'written {e(results.get("created"))} &middot; settings: {e(settings_text(results) or "defaults")}</p>',
           ('<p class=failed><b>INTERRUPTED</b>: this run was stopped before its end; the cases below are those '
            'it reached (a case in flight has outcome "interrupted").</p>' if results.get("interrupted") else ""),
           '<nav class=toc><a href="#claims">claims by article</a><a href="#states">the eleven states</a>'
           '<a href="#edges">state-diagram edges</a><a href="#experiments">cases by experiment</a>'
           '<a href="#settings">settings</a></nav>',
           "<table><tr><th>verdicts</th>"
           + "".join(f"<td>{word(k)} {v}</td>" for k, v in n["verdicts"].items()) + "</tr><tr><th>outcomes</th>"
           + "".join(f"<td>{word(k)} {v}</td>" for k, v in sorted(n["outcomes"].items())) + "</tr></table>"]
    return out


def _settings(results: dict) -> list[str]:
    s = results.get("settings") or {}
    out = ['<h2 id="settings">Settings</h2><table><tr><th>profile</th><td>' + e(s.get("profile") or "-") + "</td></tr>"
           "<tr><th>link MTU</th><td>" + e(", ".join(map(str, s.get("mtus") or [])) or "-") + "</td></tr>"]
    common = s.get("common_sysctls") or {}
    for k, v in (s.get("sysctls") or {}).items():
        where = "every case" if k in common else "some cases"
        shown = ", ".join(v) if isinstance(v, list) else v
        out.append(f"<tr><th>{e(k)}</th><td>{e(shown)} <span class=small>({where})</span></td></tr>")
    out.append("</table>")
    return out


def _case_link(case: dict, cls: str = "case") -> str:
    return f'<a class="{cls}" href="{e(case_href(case))}" title="{e(case["id"])}">{e(short_name(case))}</a>'


CASES_SHOWN = 6       # case links per row of the states and edges tables; the rest counted


def _case_links(ids: list, results: dict, *, title=None) -> str:
    by_id = {c["id"]: c for c in results.get("cases", [])}
    links = [_case_link(by_id[i]) if i in by_id else e(i) for i in ids[:CASES_SHOWN]]
    more = len(ids) - CASES_SHOWN
    return " ".join(links) + (f" <span class=small>and {more} more</span>" if more > 0 else "")


def _states(results: dict) -> list[str]:
    out = ['<h2 id="states">The eleven states</h2>']
    recorded = results.get("states")
    if recorded:
        out.append("<p class=small>A state counts as reached when a socket entered it (CLOSED: a transition "
                   "into CLOSE, not a history that starts there). Sources: <b>ss</b> snapshots, the "
                   "<b>trace</b> (sock:inet_sock_set_state), the <b>timewait</b> probes (the kernel's timewait "
                   "socket, where the kernel has kprobe events).</p>"
                   "<table class=wide><colgroup><col style=\"width:14%\"><col style=\"width:7%\">"
                   "<col style=\"width:22%\"><col></colgroup>"
                   "<tr><th>state</th><th>cases</th><th>seen by</th><th>cases that reached it</th></tr>")
        for row in recorded:
            counts = row.get("counts") or {}
            seen = ", ".join(f"{src} {counts[src]}" for src in ("ss", "trace", "timewait") if counts.get(src))
            ids = [c["id"] for c in row.get("cases", [])]
            out.append(f"<tr><th>{e(row['state'])}</th><td>{len(ids)}</td><td>{e(seen or 'not reached')}</td>"
                       f"<td>{_case_links(ids, results)}</td></tr>")
        out.append("</table>")
        return out
    out.append("<p class=small>Which cases reached each state, and where it was seen: "
               '<span class="both">both</span> (ss and trace), <span class="ss">ss</span> only, '
               '<span class="trace">trace</span> only. CLOSED is ss&rsquo;s UNCONN and the trace&rsquo;s CLOSE; '
               "the trace never shows TIME_WAIT (see README).</p>"
               "<table class=wide><colgroup><col style=\"width:13%\"><col style=\"width:6%\"><col><col><col>"
               "</colgroup><tr><th>state</th><th>cases</th><th>ss + trace</th><th>ss only</th><th>trace only</th></tr>")
    for state, hits in state_table(results).items():
        cells = []
        for src in ("both", "ss", "trace"):
            cells.append("<td>" + " ".join(_case_link(c, f"case {src}") for c, s in hits if s == src) + "</td>")
        out.append(f"<tr><th>{state}</th><td>{len(hits)}</td>{''.join(cells)}</tr>")
    out.append("</table>")
    return out


def _edges(results: dict) -> list[str]:
    out = ['<h2 id="edges">State-diagram edges</h2>']
    recorded = results.get("edges")
    if not recorded:
        return out + ["<p class=small>not recorded: this results file carries no \"edges\" "
                      "(they come from harness/diagram.py).</p>"]
    counts: dict = {}
    for row in recorded:
        counts[row.get("status")] = counts.get(row.get("status"), 0) + 1
    out.append(f"<p class=small>Every edge of RFC 9293's figure 5 (with its notes) and the RST edges of sections "
               f"3.10.7.3-4: {counts.get('taken', 0)} taken, {counts.get('shown not taken', 0)} shown not taken "
               f"(a case made the event happen and Linux did something else), {counts.get('not taken', 0)} not "
               f"taken by any case of this run.</p>"
               "<table class=wide><colgroup><col style=\"width:21%\"><col style=\"width:17%\">"
               "<col style=\"width:11%\"><col></colgroup>"
               "<tr><th>edge</th><th>event</th><th>status</th><th>evidence</th></tr>")
    for row in recorded:
        status = row.get("status") or "?"
        if status == "taken":
            ev = (row.get("evidence") or [{}])[0]
            how = (f"{e(ev.get('transition', ''))} of {e(ev.get('socket', ''))} ({e(ev.get('source', ''))}"
                   + (f"; {e(ev['note'])}" if ev.get("note") else "") + ")") if ev else ""
            cell = f"{how}<br>{_case_links(row.get('cases') or [], results)}"
        elif status == "shown not taken":
            shown = (row.get("shown") or [{}])[0]
            cell = f"{e(shown.get('evidence', ''))}<br>{_case_links(row.get('shown_cases') or [], results)}"
        else:
            cell = "<span class=small>no case of this run took it</span>"
        out.append(f"<tr><th>{e(row.get('id'))}</th><td class=small>{e(row.get('event', ''))} "
                   f"<span class=small>({e(row.get('where', ''))})</span></td><td>{e(status)}</td><td>{cell}</td></tr>")
    out.append("</table>")
    return out


def _experiments(results: dict) -> list[str]:
    info = claimtable.experiment_info([results])
    groups: dict = {}
    for c in results["cases"]:
        groups.setdefault(c.get("experiment") or "", []).append(c)
    order = [x for x in info if x in groups] + sorted(x for x in groups if x not in info and x) \
        + ([""] if "" in groups else [])
    out = ['<h2 id="experiments">Cases by experiment</h2>',
           "<table class=wide><colgroup><col style=\"width:17%\"><col style=\"width:8%\"><col style=\"width:35%\">"
           "<col></colgroup><tr><th>experiment</th><th>articles</th><th>what it asks</th><th>cases: outcome, verdict</th></tr>"]
    for x in order:
        cases = groups[x]
        meta = info.get(x) or {}
        arts = meta.get("articles") or sorted({a for c in cases for a in (c.get("articles") or
                                                                          str(c.get("article") or "").split(",")) if a})
        what = meta.get("claim") or next((c.get("claim") for c in cases if c.get("claim")), "")
        if meta.get("observation_only"):
            what = f"{what} (observation)" if what else "(observation)"
        items = "".join(f"<li>{_case_link(c)} {word(c.get('outcome'))} {word(c.get('verdict')) if c.get('verdict') else ''}</li>"
                        for c in cases)
        out.append(f'<tr id="exp-{e(x)}"><td>{e(x or "(no experiment)")}</td><td>{e(", ".join(arts))}</td>'
                   f"<td>{e(what)}</td><td><ul class=plain>{items}</ul></td></tr>")
    out.append("</table>")
    return out


def render_report(run_dir: str, results: dict | None = None) -> str:
    """The HTML text of the run's overview page."""
    results = results or build_results(run_dir)
    groups = {c.get("experiment") for c in results["cases"]}
    body = _header(results)
    body += claimtable.render([results], lambda i, c: case_href(c),
                              headers=[f"verdict ({results.get('kernel')})"],
                              experiment_href=lambda x: f"#exp-{x}" if x in groups else None)
    body += _states(results) + _edges(results) + _experiments(results) + _settings(results)
    return shell(f"socklab {results['run']}", body)


def write_report(run_dir: str, results: dict | None = None, written: set = frozenset()) -> str:
    """Write `<run_dir>/index.html` and every case's page (from `results`, or from the run folder as it
    is), but those of the case folders in `written` (pages written with their summary); returns the
    overview's path."""
    results = results or build_results(run_dir)
    for c in results["cases"]:
        if c.get("dir") and c["dir"] not in written and os.path.isdir(os.path.join(run_dir, c["dir"])):
            write(os.path.join(run_dir, casepage.page_path(c)), casepage.render(run_dir, c, results))
    return write(os.path.join(run_dir, "index.html"), render_report(run_dir, results))
