"""Comparing runs: which cases behaved differently, appeared, disappeared, or flipped verdict.

`compare(paths)` loads two or more results files (or run folders) and compares every later run with
the first: a case's normalised behaviour (segments, ss states, transitions, steps; see
harness/results.py) must be equal, its verdict and outcome the same. `Comparison.text()` is for
the terminal, `write_compare_html()` writes one offline HTML page with the differing cases side by
side (aligned lines and both SVG ladders), and `Comparison.changed` gives the exit code.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from html import escape

from . import casepage, claimtable, ladder
from .page import CSS
from .results import ASPECTS, FILENAME, ResultsError, build_results, load_case, load_results, settings_text


@dataclass
class CaseDiff:
    """A case whose behaviour in run `run` differs from the first run's in `aspects`."""

    id: str
    run: int
    aspects: list
    before: dict
    after: dict


@dataclass
class Flip:
    """A verdict or outcome of case `id` that is not the first run's."""

    id: str
    run: int
    what: str           # "verdict" or "outcome"
    before: object
    after: object


@dataclass
class Comparison:
    runs: list                                      # loaded results, the first is the reference
    diffs: list = field(default_factory=list)       # CaseDiff
    added: list = field(default_factory=list)       # (run index, case id): not in the first run
    missing: list = field(default_factory=list)     # (run index, case id): in the first run only
    flips: list = field(default_factory=list)       # Flip
    timing: list = field(default_factory=list)      # (case id, run index, aspect, why): differs, declared timing-dependent

    @property
    def changed(self) -> bool:
        """True when anything differs from the first run."""
        return bool(self.diffs or self.added or self.missing or self.flips)

    def letter(self, i: int) -> str:
        return chr(ord("A") + i) if i < 26 else f"R{i}"

    def header(self, i: int) -> str:
        """A run's column header: its kernel release and settings."""
        r = self.runs[i]
        emulator = f" [{r['emulator']}]" if r.get("emulator") else ""
        return f"{r['kernel']}{emulator} {settings_text(r)}"

    def case_ids(self) -> list:
        ids: dict = {}
        for r in self.runs:
            for c in r["cases"]:
                ids.setdefault(c["id"], None)
        return sorted(ids)

    def case(self, i: int, case_id: str) -> dict | None:
        return _by_id(self.runs[i]).get(case_id)

    def diff_of(self, i: int, case_id: str) -> CaseDiff | None:
        return next((d for d in self.diffs if d.run == i and d.id == case_id), None)

    def text(self) -> str:
        """The comparison for a terminal: runs, differing cases side by side, added/missing/flipped."""
        out = ["socklab compare"]
        for i, r in enumerate(self.runs):
            out.append(f"  {self.letter(i)}  {r['run']}: kernel {self.header(i)}  ({len(r['cases'])} cases)  {r.get('path', '')}")
        timing = [f"{self.letter(j)}: {cid}: {aspect} differ, not counted: the case declares them timing-dependent"
                  + (f" ({why})" if why else "") for cid, j, aspect, why in self.timing]
        if not self.changed:
            out += timing + ["no differences: every case behaved as in " + self.letter(0)]
            return "\n".join(out) + "\n"
        for d in self.diffs:
            a, b = self.letter(0), self.letter(d.run)
            out.append(f"\n{b} differs from {a}: {d.id}: {', '.join(d.aspects)}")
            for aspect in d.aspects:
                rows = side_by_side(aspect_lines(d.before, aspect), aspect_lines(d.after, aspect))
                width = max([len(x or "") for x, _, _ in rows] + [len(a)])
                out.append(f"  [{aspect}]")
                out.append(f"     {a:<{width}} | {b}")
                out += [f"  {'  ' if same else '>>'} {x or '':<{width}} | {y or ''}".rstrip() if x is not ELIDED
                        else f"     ... {y} equal line(s)" for x, y, same in _elide(rows)]
        for i, cid in self.added:
            out.append(f"added in {self.letter(i)}: {cid}")
        for i, cid in self.missing:
            out.append(f"missing in {self.letter(i)}: {cid}")
        for f in self.flips:
            out.append(f"{f.what} flipped in {self.letter(f.run)}: {f.id}: {f.before} -> {f.after}")
        if len(self.runs) > 2:
            out.append("\n" + self.matrix_text())
        n = len({d.id for d in self.diffs})
        out += timing
        out.append(f"\n{n} case(s) behave differently, {len(self.added)} added, {len(self.missing)} missing, "
                   f"{len(self.flips)} verdict/outcome flip(s)")
        return "\n".join(out) + "\n"

    def cell(self, i: int, case_id: str) -> tuple[str, str]:
        """(text, marker) of one case in run i: 'passed/confirmed' and '' / '*' (behaviour differs) /
        '+' (added) / '-' (absent) / '!' (verdict or outcome flipped)."""
        c = self.case(i, case_id)
        if c is None:
            return "-", "-" if self.case(0, case_id) is not None else ""
        text = c["outcome"] + (f"/{c['verdict']}" if c.get("verdict") else "")
        if i == 0:
            return text, ""
        if self.case(0, case_id) is None:
            return text, "+"
        marks = ("*" if self.diff_of(i, case_id) else "") + \
                ("!" if any(f.run == i and f.id == case_id for f in self.flips) else "")
        return text, marks

    def matrix_text(self) -> str:
        """Cases by run; * behaviour differs from the first run, ! verdict/outcome flipped, + added."""
        ids = self.case_ids()
        w = max([len(i) for i in ids] + [4])
        heads = [f"{self.letter(i)}: {self.header(i)}" for i in range(len(self.runs))]
        cw = max([len(h) for h in heads] + [22])
        lines = [(f"{'case':<{w}}  " + "  ".join(f"{h:<{cw}}" for h in heads)).rstrip()]
        for cid in ids:
            cells = []
            for i in range(len(self.runs)):
                text, mark = self.cell(i, cid)
                cells.append(f"{(text + ' ' + mark).strip():<{cw}}")
            lines.append((f"{cid:<{w}}  " + "  ".join(cells)).rstrip())
        return "\n".join(lines)


def _by_id(results: dict) -> dict:
    return {c["id"]: c for c in results["cases"]}


def aspect_lines(behaviour: dict | None, aspect: str) -> list[str]:
    """One aspect of a normalised behaviour as lines, for side-by-side display."""
    value = (behaviour or {}).get(aspect)
    if not value:
        return []
    if aspect == "segments":
        return list(value)
    if aspect == "ss":
        return [f"[{label}] {role}: {', '.join(states) or '(none)'}"
                for label, roles in value.items() for role, states in sorted(roles.items())]
    if aspect == "transitions":
        return [f"{h['socket']}: {' -> '.join(h['states'])}" for h in value]
    if aspect == "steps":
        return [f"{prog}: {', '.join(ops)}" for prog, ops in sorted(value.items())]
    return [str(value)]


def side_by_side(a: list[str], b: list[str]) -> list[tuple]:
    """Rows (left, right, same) aligning two line lists; a line missing on one side is None."""
    rows = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            rows += [(x, x, True) for x in a[i1:i2]]
        else:
            left, right = a[i1:i2], b[j1:j2]
            for k in range(max(len(left), len(right))):
                rows.append((left[k] if k < len(left) else None, right[k] if k < len(right) else None, False))
    return rows


ELIDED = object()


def _elide(rows: list[tuple], context: int = 2) -> list[tuple]:
    """Rows with long runs of equal lines cut to `context` lines around each difference."""
    near = {i + d for i, r in enumerate(rows) if not r[2] for d in range(-context, context + 1)}
    out, skipped = [], 0
    for i, row in enumerate(rows):
        if i in near:
            if skipped:
                out.append((ELIDED, skipped, True))
                skipped = 0
            out.append(row)
        else:
            skipped += 1
    if skipped:
        out.append((ELIDED, skipped, True))
    return out


def compare(paths: list[str]) -> Comparison:
    """Compare the results files (or run folders) in `paths`, each later one with the first."""
    if len(paths) < 2:
        raise ValueError("compare needs at least two results files")
    runs = [_load(p) for p in paths]
    for run in runs:
        if not run["cases"]:
            raise ResultsError(f"{run['path']}: no cases in this results file: nothing to compare")
    return compare_runs(runs)


def _load(path: str) -> dict:
    """A results file, or a run folder's results; a folder without results.json (an interrupted run)
    is read from its case folders in memory: comparing never writes into a run it reads."""
    if os.path.isdir(os.path.join(path, "cases")) and not os.path.exists(os.path.join(path, FILENAME)):
        data = build_results(path)
        data["path"] = os.path.abspath(path)
        return data
    return load_results(path)


def compare_runs(runs: list[dict]) -> Comparison:
    """Compare loaded results (load_results), each later one with the first."""
    cmp = Comparison(runs)
    ref = _by_id(runs[0])
    for i, r in enumerate(runs[1:], 1):
        cur = _by_id(r)
        cmp.added += [(i, cid) for cid in sorted(cur) if cid not in ref]
        cmp.missing += [(i, cid) for cid in sorted(ref) if cid not in cur]
        for cid in sorted(set(ref) & set(cur)):
            a, b = ref[cid], cur[cid]
            for what in ("outcome", "verdict"):
                if a.get(what) != b.get(what):
                    cmp.flips.append(Flip(cid, i, what, a.get(what), b.get(what)))
            if a.get("behaviour") is None or b.get("behaviour") is None:
                continue        # a case that did not run on one side: its outcome says so
            # An aspect the case declares timing-dependent (pytest.mark.timing_dependent) is not a
            # behaviour change: it is named in the comparison's notes, not counted.
            timing = {**(a.get("timing_dependent") or {}), **(b.get("timing_dependent") or {})}
            aspects = [x for x in ASPECTS if a["behaviour"].get(x) != b["behaviour"].get(x)]
            cmp.timing += [(cid, i, x, timing[x]) for x in aspects if x in timing]
            aspects = [x for x in aspects if x not in timing]
            if aspects:
                cmp.diffs.append(CaseDiff(cid, i, aspects, a["behaviour"], b["behaviour"]))
    return cmp


# -- HTML ----------------------------------------------------------------------------------------

EXTRA_CSS = """
.sbs td{font-family:monospace;font-size:12px;white-space:pre}.sbs tr.diff td{background:#fff0f0}
.pair{display:flex;gap:1em;flex-wrap:wrap}.pair>div{flex:1 1 600px;min-width:0}
.mark{color:#b00;font-weight:bold}
"""


def _e(value) -> str:
    return escape("" if value is None else str(value))


def _anchor(run: int, cid: str) -> str:
    return f"d{run}-" + "".join(ch if ch.isalnum() else "_" for ch in cid)


def _record(cmp: Comparison, i: int, cid: str) -> dict | None:
    """case.json of a case, found next to its results file; None when it is not there."""
    c = cmp.case(i, cid)
    base = os.path.dirname(cmp.runs[i].get("path") or "")
    if not c or not c.get("dir"):
        return None
    try:
        return load_case(os.path.join(base, c["dir"]))[0]
    except (OSError, ValueError):
        return None


def _sbs_html(cmp: Comparison, d: CaseDiff, aspect: str) -> str:
    rows = side_by_side(aspect_lines(d.before, aspect), aspect_lines(d.after, aspect))
    out = [f"<table class=sbs><tr><th></th><th>{_e(cmp.letter(0))}</th><th>{_e(cmp.letter(d.run))}</th></tr>"]
    for x, y, same in rows:
        out.append(f"<tr class=\"{'same' if same else 'diff'}\"><td>{'' if same else '&gt;&gt;'}</td>"
                   f"<td>{_e(x)}</td><td>{_e(y)}</td></tr>")
    return "".join(out) + "</table>"


def _diff_section(cmp: Comparison, d: CaseDiff) -> list[str]:
    a, b = cmp.letter(0), cmp.letter(d.run)
    out = [f'<h2 id="{_anchor(d.run, d.id)}">{_e(d.id)}: {_e(b)} differs from {_e(a)}</h2>',
           f"<p>differs in: <b>{_e(', '.join(d.aspects))}</b></p>"]
    for aspect in d.aspects:
        out.append(f"<h3>{_e(aspect)}</h3>" + _sbs_html(cmp, d, aspect))
    out.append("<h3>Ladders</h3><div class=pair>")
    for i, letter in ((0, a), (d.run, b)):
        rec = _record(cmp, i, d.id)
        run = cmp.runs[i]["run"]
        body = (ladder.svg_ladder(rec, title=f"{run}: {d.id}") if rec is not None else
                "<pre>" + _e(ladder.text_ladder((d.before if i == 0 else d.after).get("segments", []))) + "</pre>")
        out.append(f"<div><p><b>{_e(letter)}</b> {_e(run)} ({_e(cmp.header(i))})</p>{body}</div>")
    out.append("</div>")
    return out


def _claims_matrix(cmp: Comparison, out_dir: str) -> list[str]:
    """Claims by article with one verdict column per run; case links go to each run's case pages."""
    def href(i: int, case: dict) -> str:
        base = os.path.dirname(cmp.runs[i].get("path") or "")
        return os.path.relpath(os.path.join(base, casepage.page_path(case)), out_dir) if case.get("dir") else ""
    return claimtable.render(cmp.runs, href, headers=[f"{cmp.letter(i)}: {cmp.header(i)}" for i in range(len(cmp.runs))])


def render_compare_html(cmp: Comparison, out_dir: str = ".") -> str:
    parts = ["<h1>socklab compare</h1><table><tr><th>run</th><th>name</th><th>kernel</th><th>settings</th>"
             "<th>socklab</th><th>cases</th><th>file</th></tr>"]
    for i, r in enumerate(cmp.runs):
        parts.append(f"<tr><td>{cmp.letter(i)}</td><td>{_e(r['run'])}</td><td>{_e(r['kernel'])}</td>"
                     f"<td>{_e(settings_text(r))}</td><td>{_e(r.get('harness'))}</td><td>{len(r['cases'])}</td>"
                     f"<td>{_e(r.get('path'))}</td></tr>")
    parts.append("</table>")
    n = len({d.id for d in cmp.diffs})
    parts.append(f"<p><b>{n}</b> case(s) behave differently, <b>{len(cmp.added)}</b> added, "
                 f"<b>{len(cmp.missing)}</b> missing, <b>{len(cmp.flips)}</b> verdict/outcome flip(s)."
                 + ("" if cmp.changed else " No differences.") + "</p>")
    parts.append("<h2>Cases by run</h2><p class=small>* behaviour differs from run A, ! verdict or outcome "
                 "flipped, + not in run A, - absent from this run.</p><table><tr><th>case</th>"
                 + "".join(f"<th>{cmp.letter(i)}: {_e(cmp.header(i))}</th>" for i in range(len(cmp.runs))) + "</tr>")
    for cid in cmp.case_ids():
        cells = []
        for i in range(len(cmp.runs)):
            text, mark = cmp.cell(i, cid)
            link = f'<a class=mark href="#{_anchor(i, cid)}">{_e(mark)}</a>' if "*" in mark else f"<span class=mark>{_e(mark)}</span>"
            cells.append(f"<td>{_e(text)} {link}</td>")
        parts.append(f"<tr><td>{_e(cid)}</td>{''.join(cells)}</tr>")
    parts.append("</table>")
    if cmp.added or cmp.missing or cmp.flips:
        parts.append("<h2>Added, missing, flipped</h2><ul>")
        parts += [f"<li>added in {cmp.letter(i)}: {_e(cid)}</li>" for i, cid in cmp.added]
        parts += [f"<li>missing in {cmp.letter(i)}: {_e(cid)}</li>" for i, cid in cmp.missing]
        parts += [f"<li>{_e(f.what)} flipped in {cmp.letter(f.run)}: {_e(f.id)}: {_e(f.before)} &rarr; {_e(f.after)}</li>"
                  for f in cmp.flips]
        parts.append("</ul>")
    parts += _claims_matrix(cmp, os.path.abspath(out_dir))
    for d in cmp.diffs:
        parts += _diff_section(cmp, d)
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>socklab compare</title>"
            f"<style>{CSS}{EXTRA_CSS}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_compare_html(comparison: Comparison, out_path: str) -> str:
    """Write the comparison as one offline HTML page at `out_path`; returns the path."""
    with open(out_path + ".tmp", "w") as fh:
        fh.write(render_compare_html(comparison, os.path.dirname(os.path.abspath(out_path))))
    os.replace(out_path + ".tmp", out_path)
    return out_path
