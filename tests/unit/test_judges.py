"""Every claim can come out either way.

For every judge: on the case it was recorded from, it gives the recorded verdict (so `socklab judge`
reproduces a run), and on that record edited into the other outcome it gives the other verdict
(tests/counterfactuals). Every judge has such a test, every claim of CLAIMS.md has a judge, and every
experiment of EXPERIMENTS.md a case.
"""

from __future__ import annotations

import inspect
import os

import pytest

from harness import articles
from harness.judge import REGISTRY, load_judges
from tests.counterfactuals import all_flips, record

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
load_judges(os.path.join(REPO, "cases"))
FLIPS = all_flips()


@pytest.mark.parametrize("flip", FLIPS, ids=str)
def test_judge_reproduces_the_recorded_verdict(flip):
    rec = record(flip.record)
    recorded = [v.verdict for v in rec.verdicts if v.judge == flip.judge]
    assert recorded, f"{flip.record} holds no verdict of {flip.judge}"
    assert REGISTRY[flip.judge](rec).verdict == recorded[0]


@pytest.mark.parametrize("flip", FLIPS, ids=str)
def test_edited_record_flips_the_verdict(flip):
    rec = record(flip.record)
    before = REGISTRY[flip.judge](rec).verdict
    flip.edit(rec)
    after = REGISTRY[flip.judge](rec)
    assert after.verdict == flip.expect, f"after the edit ({flip.why}): {after.verdict}: {after.evidence}"
    assert after.verdict != before, f"the edit ({flip.why}) left the verdict {before}"


def catalogue() -> set[str]:
    """The catalogue's judges (defined in a file under cases/), not those a harness test in the same
    process registered. By file, not module name: pytest imports a case module as `test_x` when it
    collects cases/ after this module's load_judges imported it as `cases.test_x`, and the second
    import registers the judges again under the shorter name."""
    cases = os.path.join(REPO, "cases") + os.sep
    return {jid for jid, j in REGISTRY.items() if inspect.getfile(j.fn).startswith(cases)}


def test_every_judge_has_a_counterfactual():
    flipped = {f.judge for f in FLIPS}
    missing = sorted(catalogue() - flipped)
    assert not missing, f"judges whose verdict no test flips: {missing}"


def test_every_claim_has_a_judge():
    judged = {n for jid in catalogue() for n in REGISTRY[jid].claims}
    missing = sorted(articles.claim_numbers() - judged)
    assert not missing, f"claims of CLAIMS.md without a judge: {missing}"


def test_every_experiment_has_a_judge():
    judged = {REGISTRY[jid].experiment for jid in catalogue()}
    missing = sorted(e for e, d in articles.experiments().items() if not d["observation_only"] and e not in judged)
    assert not missing, f"experiments of EXPERIMENTS.md without a judge: {missing}"
