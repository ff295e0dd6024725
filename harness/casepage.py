"""One case's page of the report: `<run_dir>/cases/<case>/index.html`, next to the case's artifacts.

From the top: what the case judged (each claim, its verdict and the evidence), the outcome and any
failure text, the settings, the steps with results and errnos, the ladder (each host's calls, state
changes and windows on its own side), the `ss` snapshots as printed, the transitions per socket, the
fault rules and notes, and links to the pcap and the other artifacts.
"""

from __future__ import annotations

import os

from . import ladder
from .claimtable import evidence, short_name
from .page import e, shell, word
from .results import fixed_ports, load_case, socket_name

PAGE = "index.html"


def page_path(case: dict) -> str:
    """The case page, relative to the run folder: cases/<case>/index.html."""
    return f"{case['dir']}/{PAGE}" if case.get("dir") else ""


def _articles(case: dict) -> str:
    arts = case.get("articles")
    if arts is None and case.get("article"):
        arts = str(case["article"]).split(",")
    return ", ".join(arts or [])


def _steps(rec: dict) -> str:
    addrs = {a: role for role, v in (rec.get("hosts") or {}).items() for a in v.values() if a}
    rows = ["<table class=wide><colgroup><col style=\"width:9%\"><col style=\"width:14%\"><col>"
            "<col style=\"width:16%\"></colgroup><tr><th>t ms</th><th>program (host)</th><th>call</th><th>result</th></tr>"]
    for c in sorted(rec.get("calls", []), key=lambda c: c.get("t0") or 0):
        res = c.get("errno") or (f"error {c['error']}" if c.get("error") else "ok")
        cls = "failed" if c.get("error") else ("differs" if c.get("errno") else "passed")
        host = c.get("role") or ladder.side_of(c.get("program"))
        who = e(c.get("program")) + ("" if c.get("program") == host else f" <span class=small>({e(host)})</span>")
        rows.append(f"<tr><td>{(c.get('t0') or 0) * 1000:.3f}</td><td>{who}</td>"
                    f"<td><code>{e(ladder.call_text(c, addrs))}</code></td><td class={cls}>{e(res)}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _transitions(rec: dict) -> str:
    if rec.get("trace_unavailable"):
        return f"<p class=small>state trace unavailable: {e(rec['trace_unavailable'])}</p>"
    lost = ""
    if rec.get("trace_lost"):
        n = rec["trace_lost"].get("count")
        lost = (f"<p class=failed>the trace lost {e(n if n is not None else 'some')} events: these histories may "
                f"be incomplete ({e('; '.join(rec['trace_lost'].get('lines') or []))})</p>")
    hists = rec.get("transitions", [])
    if not hists:
        return lost + "<p class=small>(no transitions traced)</p>"
    rows = [lost + "<table class=wide><colgroup><col style=\"width:28%\"><col><col style=\"width:28%\"></colgroup>"
            "<tr><th>socket</th><th>kernel states</th><th>at ms</th></tr>"]
    fixed = fixed_ports(rec)
    for h in hists:
        rows.append(f"<tr><td>{e(socket_name(h, fixed))}<br><span class=small>{e(h.get('local'))}:"
                    f"{e(h.get('local_port'))} &gt; {e(h.get('peer'))}:{e(h.get('peer_port'))}</span></td>"
                    f"<td>{e(' -> '.join(h.get('states', [])))}</td>"
                    f"<td>{e(', '.join(f'{t * 1000:.3f}' for t in h.get('times', [])))}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def _verdicts(case: dict) -> list[str]:
    verdicts = case.get("verdicts") or []
    if not verdicts:
        what = "an observation: no claim is judged by this case" if case.get("experiment") else "no claim"
        return [f'<h2 id="evidence">Verdict</h2><p class=small>{e(what)}</p>']
    rows = ['<h2 id="evidence">Claims judged and the evidence</h2><table class=wide><colgroup>'
            '<col style="width:11%"><col style="width:10%"><col style="width:36%"><col></colgroup>'
            "<tr><th>claims</th><th>verdict</th><th>claim (our words)</th><th>evidence</th></tr>"]
    for v in verdicts:
        nums = ", ".join(str(n) for n in v.get("claims") or []) or "-"
        judge = f"<br><span class=small>{e(v.get('judge'))}</span>" if v.get("judge") else ""
        rows.append(f"<tr><td>{e(nums)}{judge}</td><td>{word(v.get('verdict'))}</td><td>{e(v.get('claim'))}</td>"
                    f"<td>{e(evidence(v))}</td></tr>")
    rows.append("</table>")
    return rows


def render(run_dir: str, case: dict, results: dict) -> str:
    """The HTML text of one case's page."""
    back = "../../index.html"
    exp = case.get("experiment")
    out = [f'<p class=small><a href="{back}">&larr; run {e(results.get("run"))}</a>'
           + (f' &middot; <a href="{back}#exp-{e(exp)}">experiment {e(exp)}</a>' if exp else "") + "</p>",
           f"<h1>{e(short_name(case))}</h1>",
           f"<p><code>{e(case['id'])}</code><br>experiment <b>{e(exp or '-')}</b> &middot; article "
           f"{e(_articles(case) or '-')} &middot; {e(case.get('family') or '-')} &middot; outcome "
           f"{word(case.get('outcome'))} &middot; verdict {word(case.get('verdict'))} &middot; kernel "
           f"{e(case.get('kernel') or results.get('kernel'))}</p>"]
    if case.get("claim") and not case.get("verdicts"):
        out.append(f"<p><b>Claim:</b> {e(case['claim'])}</p>")
    out += _verdicts(case)
    if case.get("longrepr"):
        label = {"skipped": "reason", "xfailed": "expected failure"}.get(case.get("outcome"),
                                                                        f"failure ({e(case.get('when'))})")
        out.append(f"<h3>{label}</h3><pre>{e(case['longrepr'])}</pre>")
    rec = load_case(os.path.join(run_dir, case["dir"]))[0] if case.get("dir") else None
    if rec is not None:
        sysctls = ", ".join(f"{k}={v}" for k, v in (case.get("sysctls") or {}).items()) or "none"
        out.append(f"<p class=small>link MTU {e(rec.get('mtu'))} &middot; sysctls: {e(sysctls)} &middot; "
                   f"duration {e(rec.get('duration'))} s</p>")
        out.append('<h2 id="ladder">Ladder</h2><p class=small>Time runs down, one row per event; each host\'s '
                   "calls, state changes and advertised windows (where 0 or changed) beside its own line; a dropped "
                   "segment is dashed red and ends in an X.</p>" + ladder.svg_ladder(rec, title=case["id"]))
        out.append('<h2 id="steps">Steps</h2>' + _steps(rec))
        out.append('<h2 id="ss">ss snapshots</h2>')
        for snap in rec.get("ss", []):
            out.append(f"<p class=small>{e(snap.get('role'))} [{e(snap.get('label'))}] "
                       f"+{snap.get('t', 0) * 1000:.3f} ms</p><pre>{e(snap.get('text'))}</pre>")
        if not rec.get("ss"):
            out.append("<p class=small>(no snapshots)</p>")
        out.append('<h2 id="transitions">Transitions per socket</h2>' + _transitions(rec))
        extra = [(f["t"], f"fault ({f.get('role')}): {f['text']}") for f in rec.get("faults", [])]
        extra += [(n["t"], n["text"]) for n in rec.get("notes", [])]
        if extra:
            out.append("<h3>Faults and notes</h3><ul class=plain>" + "".join(
                f"<li>+{t * 1000:.3f} ms: {e(text)}</li>" for t, text in sorted(extra)) + "</ul>")
    case_dir = os.path.join(run_dir, case["dir"]) if case.get("dir") else run_dir
    links = []
    for name, path in sorted((case.get("artifacts") or {}).items(), key=lambda kv: kv[1]):
        rel = os.path.relpath(os.path.join(run_dir, path), case_dir)
        if rel != PAGE:
            links.append(f'<li><a href="{e(rel)}">{e(os.path.basename(path))}</a> <span class=small>({e(name)})</span></li>')
    out.append('<h2 id="artifacts">Artifacts</h2><ul class=plain>' + "".join(links) + "</ul>")
    return shell(f"{short_name(case)}: socklab {results.get('run')}", out)
