"""Claims by article: every claim row of the articles (results["claims"], else harness/articles.json),
its verdict on each run of a report or a matrix of runs, the one-line evidence and links to the cases
that judged it. Used by the run's overview (one run) and by `socklab compare --html` (a matrix).

A case's verdict judges a claim row when the verdict's claim numbers ("claims": [16, 52]) meet the
row's numbers. Several cases (families, experiments) may judge one row: the row shows the strongest
word (refuted, then differs, then confirmed) and the counts when they disagree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from .page import VERDICTS, e, word

ARTICLES_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "articles.json")


def _articles_file() -> dict:
    try:
        with open(ARTICLES_JSON) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def claim_rows(runs: list[dict]) -> list[dict]:
    """The claim rows the runs were judged against: the first run's "claims", else articles.json's."""
    for r in runs:
        if r.get("claims"):
            return list(r["claims"])
    return list(_articles_file().get("claims") or [])


def article_titles(runs: list[dict]) -> dict:
    """{article id: title}: from a results file if it carries them, else articles.json."""
    for r in runs:
        if isinstance(r.get("articles"), dict):
            return dict(r["articles"])
    return dict(_articles_file().get("articles") or {})


def experiment_info(runs: list[dict]) -> dict:
    """{experiment id: {"claim", "articles", ...}} from a results file or articles.json (may be empty)."""
    for r in runs:
        if isinstance(r.get("experiments"), dict):
            return dict(r["experiments"])
    return dict(_articles_file().get("experiments") or {})


def _numbers(row: dict) -> set:
    return {int(n) for n in row.get("numbers") or [] if str(n).isdigit()}


def judgements(results: dict, row: dict, index: dict | None = None) -> list[tuple[dict, dict]]:
    """(case, verdict) of every verdict in the run that judges claim `row`, in the run's order;
    `index` is by_claim(results), to look many rows up in one run."""
    index = by_claim(results) if index is None else index
    found = {position: (case, v) for n in _numbers(row) for case, v, position in index.get(n, ())}
    return [found[position] for position in sorted(found)]


def by_claim(results: dict) -> dict[int, list[tuple[dict, dict, int]]]:
    """{claim number: [(case, verdict, position in the run)]}: the run's verdicts by the claims they judge."""
    index: dict = {}
    position = 0
    for case in results.get("cases", []):
        for v in case.get("verdicts") or []:
            for n in {int(n) for n in v.get("claims") or [] if str(n).isdigit()}:
                index.setdefault(n, []).append((case, v, position))
            position += 1
    return index


def strongest(pairs: list[tuple[dict, dict]]) -> str | None:
    words = {v.get("verdict") for _, v in pairs}
    return next((w for w in ("refuted", "differs", "confirmed") if w in words), None)


def evidence(v: dict) -> str:
    """A verdict's one-line evidence (schema 2 "evidence"; "observed" in older records)."""
    text = v.get("evidence") or v.get("observed") or ""
    return text + (f" (decided by {v['setting']})" if v.get("setting") else "")


def short_name(case: dict) -> str:
    """'CONN-NOACCEPT/ipv4' (experiment and family), or the test id when the case has no experiment."""
    if case.get("experiment"):
        return case["experiment"] + (f"/{case['family']}" if case.get("family") else "")
    return case["id"]


def _cell(pairs, href_of) -> str:
    if not pairs:
        return '<span class="notjudged">not judged</span>'
    top = strongest(pairs)
    counts = {w: sum(1 for _, v in pairs if v.get("verdict") == w) for w in VERDICTS}
    mixed = sum(1 for n in counts.values() if n) > 1
    head = word(top) + (" <span class=small>(" + ", ".join(f"{n} {w}" for w, n in counts.items() if n) + ")</span>"
                        if mixed else "")
    seen, links = set(), []
    for case, v in pairs:
        if case["id"] in seen:
            continue
        seen.add(case["id"])
        links.append(f'<a class="case {e(v.get("verdict"))}" href="{e(href_of(case))}" title="{e(evidence(v))}">'
                     f"{e(short_name(case))}</a>")
    return head + "<br><span class=small>" + " ".join(links) + "</span>"


def render(runs: list[dict], href: Callable[[int, dict], str], *, headers: list[str] | None = None,
           experiment_href: Callable[[str], str | None] | None = None) -> list[str]:
    """The claims-by-article section: one table per article, one row per claim, one verdict column per
    run (`headers` name them), the evidence of the first run that judged it. `href(i, case)` is the
    link to a case of run i; `experiment_href(id)` the link to an experiment (or None)."""
    rows = claim_rows(runs)
    titles = article_titles(runs)
    headers = headers or [f"verdict on {r.get('kernel', '?')}" for r in runs]
    out = ['<h2 id="claims">Claims by article</h2>']
    if not rows:
        return out + ["<p class=small>no claims recorded: this results file carries no \"claims\" and "
                      "harness/articles.json is not there.</p>"]
    articles = sorted({a for r in rows for a in r.get("articles") or []} | set(titles))
    out.append("<p class=small>Every claim of the articles, in our words; its verdict on each run, the "
               "evidence from the record, and the cases that judged it (hover a case for its evidence; "
               "click it for the steps, ladder and snapshots).</p>")
    out.append('<nav class=toc>' + "".join(f'<a href="#article-{e(a)}">{e(a)}</a>' for a in articles) + "</nav>")
    width = max(9, 24 // len(runs))
    ran: dict = {}              # experiment -> strongest verdict, in the first run, not tied to claim numbers
    for case in runs[0].get("cases", []):
        loose = [(case, v) for v in case.get("verdicts") or [] if not v.get("claims")]
        if case.get("experiment") and loose:
            before = [(case, {"verdict": ran[case["experiment"]]})] if case["experiment"] in ran else []
            ran[case["experiment"]] = strongest(before + loose)
    indexes = [by_claim(run) for run in runs]
    for a in articles:
        mine = [r for r in rows if a in (r.get("articles") or [])]
        judged = [[judgements(run, r, index) for run, index in zip(runs, indexes)] for r in mine]
        tally = {w: sum(1 for j in judged if strongest(j[0]) == w) for w in VERDICTS}
        tally["not judged"] = sum(1 for j in judged if not j[0])
        out.append(f'<h3 id="article-{e(a)}">Article {e(a)}: {e(titles.get(a, ""))}</h3>'
                   f"<p class=small>{len(mine)} claims: " + ", ".join(f"{n} {w}" for w, n in tally.items()) + "</p>")
        if not mine:
            continue
        out.append("<table class=wide><colgroup><col style=\"width:7%\"><col style=\"width:30%\">"
                   + "".join(f'<col style="width:{width}%">' for _ in runs) + "<col></colgroup>"
                   "<tr><th>claim</th><th>what the article says (our words)</th>"
                   + "".join(f"<th>{e(h)}</th>" for h in headers) + "<th>evidence</th></tr>")
        for r, per_run in zip(mine, judged):
            first = next((pairs for pairs in per_run if pairs), [])
            top = strongest(first)
            ev = next((evidence(v) for _, v in first if v.get("verdict") == top), "")
            if not first:
                exps = []
                for x in r.get("experiments") or []:
                    link = experiment_href(x) if experiment_href else None
                    said = ran.get(x)      # a case of that experiment gave a verdict not tied to claim numbers
                    exps.append((f'<a href="{e(link)}">{e(x)}</a>' if link else e(x)) + (f" ({word(said)})" if said else ""))
                ev = ("<span class=small>experiments: " + ", ".join(exps) + "</span>") if exps else ""
            else:
                ev = e(ev)
            out.append(f'<tr id="claim-{e(a)}-{e(r["id"])}"><td>{e(r["id"])}<br><span class=small>{e(r.get("where"))}'
                       f"</span></td><td>{e(r.get('text'))}</td>"
                       + "".join(f"<td>{_cell(pairs, lambda c, i=i: href(i, c))}</td>" for i, pairs in enumerate(per_run))
                       + f"<td class=evidence>{ev}</td></tr>")
        out.append("</table>")
    return out
