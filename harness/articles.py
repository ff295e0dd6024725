"""The five articles socklab reproduces: their claims (shared/CLAIMS.md) and experiment ids
(shared/EXPERIMENTS.md), as data in articles.json beside this file.

A claim row: {"id": "89-92", "numbers": [89, 90, 91, 92], "articles": ["003"], "where": "003:39-45",
"text": "...", "experiments": ["CLOSE-4WAY", ...]}. An experiment: {"articles": [...], "section",
"claim", "observe", "observation_only"}.
"""

from __future__ import annotations

import functools
import json
import os

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "articles.json")


@functools.cache
def catalogue() -> dict:
    with open(PATH, encoding="utf-8") as fh:
        return json.load(fh)


def titles() -> dict:
    """{"000": "TCP connection State Detailed", ...}"""
    return catalogue()["articles"]


def claims() -> list[dict]:
    """Every claim row of CLAIMS.md, in its order."""
    return catalogue()["claims"]


def claim_numbers() -> set[int]:
    return {n for c in claims() for n in c["numbers"]}


def experiments() -> dict:
    """{experiment id: {"articles": [...], "section", "claim", "observe", "observation_only"}}."""
    return catalogue()["experiments"]


def articles_of(experiment: str) -> list[str]:
    """Every article of an experiment's catalogue row ([] for an id the catalogue does not know)."""
    return list(experiments().get(experiment, {}).get("articles", []))
