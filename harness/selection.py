"""Choosing cases by experiment and article: ids as -k keywords, --experiment/--article, and a clear
word when a selection matches nothing.

Experiment and article ids come from each item's `experiment(id)` and `article(id)` markers; the
known ids (for the message when nothing matches, and for catching a mistyped id) from
harness/articles.json.
"""

from __future__ import annotations

import difflib
import json
import os

import pytest

ARTICLES_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "articles.json")


def ids_of(item) -> tuple[list[str], list[str]]:
    """(experiment ids, article ids) of a collected item, from its markers."""
    exps = [str(m.args[0]) for m in item.iter_markers("experiment") if m.args]
    arts = []
    for m in item.iter_markers("article"):
        for a in m.args:
            arts += [x.strip() for x in str(a).split(",") if x.strip()]
    return exps, arts


def add_keywords(items) -> None:
    """Every experiment and article id of an item becomes one of its keywords, so -k CONN-DATA works."""
    for item in items:
        exps, arts = ids_of(item)
        for word in exps + arts:
            item.extra_keyword_matches.add(word)


def known() -> tuple[list[str], list[str]]:
    """(experiment ids, article ids) harness/articles.json knows; empty lists without it."""
    try:
        with open(ARTICLES_JSON) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return [], []
    exps = data.get("experiments") or {}
    return sorted(exps), sorted(data.get("articles") or {})


def given(config) -> bool:
    """True when the run selects cases (--experiment, --article, -k or -m)."""
    return bool(config.getoption("--experiment") or config.getoption("--article")
                or config.getoption("keyword") or config.getoption("markexpr"))


def check_options(config) -> None:
    """An --experiment or --article id that is not one of articles.json's: a usage error naming the closest."""
    exps, arts = known()
    for option, wanted, ids in (("--experiment", config.getoption("--experiment"), exps),
                                ("--article", config.getoption("--article"), arts)):
        for value in wanted:
            if ids and value not in ids:
                close = difflib.get_close_matches(value, ids, n=4, cutoff=0.5)
                raise pytest.UsageError(f"{option} {value}: no such id in harness/articles.json"
                                        + (f"; closest: {', '.join(close)}" if close else f"; known: {', '.join(ids)}"))


def select(config, items) -> None:
    """Keep only the items of the --experiment and --article ids given (all items when none is)."""
    exps, arts = set(config.getoption("--experiment")), set(config.getoption("--article"))
    if not exps and not arts:
        return
    keep, dropped = [], []
    for item in items:
        e, a = ids_of(item)
        ok = (not exps or exps & set(e)) and (not arts or arts & set(a))
        (keep if ok else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def nothing_matched(config) -> str:
    """The message for a selection that matched no case: what was asked and the ids there are."""
    asked = []
    for option, name in (("--experiment", "--experiment"), ("--article", "--article")):
        asked += [f"{name} {v}" for v in config.getoption(option)]
    if config.getoption("keyword"):
        asked.append(f"-k {config.getoption('keyword')!r}")
    if config.getoption("markexpr"):
        asked.append(f"-m {config.getoption('markexpr')!r}")
    exps, arts = known()
    return (f"socklab: the selection {' '.join(asked)} matched no case.\n"
            f"  known experiments: {', '.join(exps) or '(harness/articles.json not found)'}\n"
            f"  known articles: {', '.join(arts) or '-'}")
