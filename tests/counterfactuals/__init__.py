"""Counterfactuals: recorded observations edited into the other outcome, one table per case module.

Each module here lists `FLIPS`, entries of `Flip`: a judge id, a case.json recorded by a real run
(tests/records/), an edit that makes the record say the kernel did something else (a TIME-WAIT row
removed, a FIN turned into an RST, an errno changed, a segment dropped) and the verdict the judge
must give then. tests/unit/test_judges.py runs them all and checks that every judge has at least
one, so no verdict is a hard-coded result.
"""

from __future__ import annotations

import glob
import importlib
import os
from dataclasses import dataclass
from typing import Callable

from harness.record import CaseRecord

RECORDS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "records")


@dataclass
class Flip:
    judge: str                                  # "CONN-NOLISTEN:refused_without_listen"
    record: str                                 # file name under tests/records/
    edit: Callable[[CaseRecord], None]          # edits the record in place
    expect: str                                 # the verdict the edited record must get
    why: str                                    # what the edit makes the kernel have done

    def __str__(self):
        return f"{self.judge} [{self.record}]: {self.why}"


def record(name: str) -> CaseRecord:
    """A recorded case (tests/records/NAME), fresh each time so edits never leak between tests."""
    return CaseRecord.load(os.path.join(RECORDS, name))


def all_flips() -> list[Flip]:
    out = []
    here = os.path.dirname(os.path.abspath(__file__))
    for path in sorted(glob.glob(os.path.join(here, "*.py"))):
        name = os.path.basename(path)[:-3]
        if name.startswith("_") or name == "edits":
            continue
        out.extend(importlib.import_module(f"tests.counterfactuals.{name}").FLIPS)
    return out
