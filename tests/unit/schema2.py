"""A results.json of schema 2 made by hand from the `base` fixture run (data/results/base): the real
case records, with the claim rows, judges' verdicts (claim numbers, evidence) and article lists that
the claims framework writes. Shared by the report's unit tests and its browser test."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from harness.results import build_results

DATA = Path(__file__).parent / "data" / "results"

CLAIMS = [
    {"id": "1", "numbers": [1], "articles": ["000", "002"], "where": "000:7, 002:8",
     "text": "LISTEN waits for connection requests from remote ports", "experiments": ["CONN-NOACCEPT"]},
    {"id": "16", "numbers": [16], "articles": ["004"], "where": "004:10",
     "text": "the active closer ends in TIME-WAIT", "experiments": ["FIX-CLOSE"]},
    {"id": "30-31", "numbers": [30, 31], "articles": ["004"], "where": "004:20-22",
     "text": "a lost SYN is retransmitted", "experiments": ["FIX-DROP"]},
    {"id": "40", "numbers": [40], "articles": ["003"], "where": "003:5",
     "text": "connect to a closed port is <refused> & 'reported'", "experiments": ["FIX-FAIL", "CONN-NOLISTEN"]},
    {"id": "41", "numbers": [41], "articles": ["003", "004"], "where": "003:9, 004:30",
     "text": "listen() alone sends nothing", "experiments": ["FIX-QUIET"]},
    {"id": "99", "numbers": [99], "articles": ["002"], "where": "002:30",
     "text": "a claim no case judged", "experiments": ["FIX-SKIP", "NOT-BUILT"]},
]
NUMBERS = {"CONN-NOACCEPT": [1], "FIX-CLOSE": [16], "FIX-DROP": [30, 31], "FIX-FAIL": [40], "CONN-NOLISTEN": [40],
           "FIX-QUIET": [41]}
REFUTED = "listen() sent a segment <b>here</b>"      # FIX-QUIET's verdict, turned to refuted by hand


def schema2(results: dict) -> dict:
    """The results of the base run (recorded before judges existed) with hand-made claim rows and
    verdicts naming claim numbers, as the claims framework writes schema 2."""
    out = copy.deepcopy(results)
    out["schema"] = 2
    out["claims"] = copy.deepcopy(CLAIMS)
    for c in out["cases"]:
        exp = c.get("experiment")
        c["articles"] = c.get("articles") or ([c["article"]] if c.get("article") else [])
        verdicts = []
        for v in c.get("verdicts") or []:
            verdicts.append({"judge": f"{exp}:judge", "experiment": exp, "claims": NUMBERS.get(exp, []),
                             "claim": v["claim"], "verdict": v["verdict"],
                             "evidence": v.get("evidence") or v.get("observed"), "setting": v.get("setting")})
        if exp == "FIX-QUIET":
            verdicts = [dict(verdicts[0], verdict="refuted", evidence=REFUTED)]
        c["verdicts"] = verdicts
        words = {v["verdict"] for v in verdicts}
        c["verdict"] = next((w for w in ("refuted", "differs", "confirmed") if w in words), None)
    return out


def base_run(tmp: Path) -> tuple[Path, dict]:
    """A copy of the base run folder under `tmp`, and its schema-2 results."""
    run = tmp / "base"
    shutil.copytree(DATA / "base", run)
    return run, schema2(build_results(str(run)))
