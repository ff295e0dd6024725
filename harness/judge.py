"""Claims judged from what the kernel did: observe, then judge.

A case drives the calls and records what the kernel did (harness/record.py); an article's claim is
judged by a pure function of that record, written next to the case:

    @judge("CLOSE-4WAY", claims=[16, 52], text="closing takes FIN, ACK, FIN, ACK; each FIN takes one "
                                              "sequence number")
    def four_way(rec: CaseRecord) -> Verdict:
        fins = rec.segments(PORT, flags="F")
        ...
        return verdict_if(holds, f"client FIN seq {fin.seq} acked with {ack.ack}, ...")

    @pytest.mark.claim(four_way)
    def test_four_way_close(lab, family):
        ...the steps, waiting for events, asserting nothing about the article's outcome...

A judge returns `confirmed`, `refuted` or `differs` (true only under a setting the case observed,
named) with one sentence of evidence. It must be computable whichever way the kernel behaves: a
kernel that contradicts the article gives a verdict, not a failure. When the record lacks what the
claim needs (a snapshot the case never took, no trace), the judge raises `Unobservable` (the
record's own questions do) and the case fails saying so.

Judges register by id ("CLOSE-4WAY:four_way") so `socklab judge RUN_DIR` can judge a recorded run
again from its case.json files (`rejudge`), without running anything.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from dataclasses import dataclass

from . import articles
from .errors import SocklabError
from .record import CaseRecord, RecordError, Unobservable, VerdictRecord

__all__ = ["judge", "Judge", "Verdict", "confirmed", "refuted", "differs", "verdict_if", "Unobservable",
           "REGISTRY", "load_judges", "judge_record", "JudgeError"]

WORDS = ("confirmed", "refuted", "differs")


class JudgeError(SocklabError):
    """A judge that cannot be used: unknown id, malformed result, or a module that does not import."""


@dataclass(frozen=True)
class Verdict:
    verdict: str
    evidence: str
    setting: str | None = None

    def __post_init__(self):
        if self.verdict not in WORDS:
            raise JudgeError(f"verdict must be one of {', '.join(WORDS)}, not {self.verdict!r}")
        if self.verdict == "differs" and not self.setting:
            raise JudgeError("a 'differs' verdict names the setting under which the claim holds (setting=)")


def confirmed(evidence: str) -> Verdict:
    return Verdict("confirmed", evidence)


def refuted(evidence: str) -> Verdict:
    return Verdict("refuted", evidence)


def differs(evidence: str, setting: str) -> Verdict:
    return Verdict("differs", evidence, setting)


def verdict_if(holds: bool, evidence: str, *, setting: str | None = None) -> Verdict:
    """confirmed when `holds`; otherwise differs when `setting` names the setting under which the
    claim was seen to hold, refuted when it does not hold at all."""
    if holds:
        return confirmed(evidence)
    return differs(evidence, setting) if setting else refuted(evidence)


@dataclass(frozen=True)
class Judge:
    """A claim of the articles and the function that judges it from a case record."""

    experiment: str
    claims: tuple[int, ...]
    text: str
    fn: object
    module: str

    @property
    def id(self) -> str:
        return f"{self.experiment}:{self.fn.__name__}"

    @property
    def articles(self) -> list[str]:
        return articles.articles_of(self.experiment)

    def __call__(self, record: CaseRecord) -> VerdictRecord:
        v = self.fn(record)
        if not isinstance(v, Verdict):
            raise JudgeError(f"judge {self.id} returned {v!r}, not a Verdict (use confirmed/refuted/differs/verdict_if)")
        return VerdictRecord(judge=self.id, experiment=self.experiment, claims=list(self.claims), claim=self.text,
                             verdict=v.verdict, evidence=v.evidence, setting=v.setting)

    def __repr__(self):
        return f"<judge {self.id}>"


REGISTRY: dict[str, Judge] = {}


def judge(experiment: str, *, claims, text: str | None = None):
    """Register the decorated function as the judge of `claims` (numbers of CLAIMS.md rows) in
    experiment `experiment`; `text` is the claim in our words (default: the docstring's first line)."""
    catalogue = articles.experiments()
    known = articles.claim_numbers()
    bad = [n for n in claims if n not in known]
    if bad:
        raise JudgeError(f"judge for {experiment}: claim number(s) {bad} are not in CLAIMS.md (1..{max(known)})")
    if claims and experiment not in catalogue:
        raise JudgeError(f"judge for {experiment}: claims of CLAIMS.md are judged in an experiment of "
                         f"EXPERIMENTS.md ({experiment} is not one); a claim of your own takes claims=[]")

    def register(fn):
        words = text or (fn.__doc__ or "").strip().splitlines()[0] if (text or fn.__doc__) else None
        if not words:
            raise JudgeError(f"judge {fn.__name__} for {experiment}: say the claim (text= or a docstring)")
        j = Judge(experiment, tuple(claims), words, fn, fn.__module__)
        REGISTRY[j.id] = j
        return j
    return register


def judge_record(record: CaseRecord, judges) -> list[VerdictRecord]:
    """Judge `record` with each judge; Unobservable propagates (the case could not be judged)."""
    return [j(record) for j in judges]


def load_judges(cases_dir: str = "cases") -> dict[str, Judge]:
    """Import every test module under `cases_dir` so that its judges register; returns the registry."""
    cases_dir = os.path.abspath(cases_dir)
    if not os.path.isdir(cases_dir):
        raise JudgeError(f"{cases_dir}: no such folder of cases (pass --cases)")
    if cases_dir not in sys.path:
        sys.path.insert(0, os.path.dirname(cases_dir))
    for path in sorted(glob.glob(os.path.join(cases_dir, "**", "test_*.py"), recursive=True)):
        rel = os.path.relpath(path, os.path.dirname(cases_dir))
        modname = rel[:-3].replace(os.sep, ".")
        if modname in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(modname, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as exc:
            del sys.modules[modname]
            raise JudgeError(f"{path}: could not import the module to load its judges: {exc!r}") from None
    return REGISTRY


def rejudge(case_json: str, registry: dict[str, Judge]) -> tuple[CaseRecord, list[VerdictRecord], str | None]:
    """Judge one recorded case again: (record, new verdicts, why it could not be judged or None)."""
    rec = CaseRecord.load(case_json)
    missing = [j for j in rec.judges if j not in registry]
    if missing:
        return rec, [], f"judge(s) {', '.join(missing)} not found among the cases' modules"
    try:
        return rec, judge_record(rec, [registry[j] for j in rec.judges]), None
    except Unobservable as exc:
        return rec, [], f"unobservable: {exc}"


__all__ += ["rejudge", "RecordError"]
