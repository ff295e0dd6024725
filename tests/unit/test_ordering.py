"""The order xdist hands tests out: by the previous run's durations, the waiting ones first with short ones
between (harness/ordering.py)."""

from __future__ import annotations

import json
import os
import types

import pytest

from harness import ordering


def _run(folder, name, cases, mtime):
    path = os.path.join(folder, name)
    os.makedirs(path)
    with open(os.path.join(path, "results.json"), "w") as fh:
        json.dump({"cases": cases}, fh)
    os.utime(os.path.join(path, "results.json"), (mtime, mtime))
    return path


def test_durations_come_from_the_newest_run_only(tmp_path):
    _run(tmp_path, "old", [{"id": "a", "duration": 9.0}], 1000)
    _run(tmp_path, "new", [{"id": "a", "duration": 2.5}, {"id": "b", "duration": 0.5},
                           {"id": "c"}, {"id": "d", "duration": "slow"}], 2000)
    assert ordering.previous_durations(str(tmp_path)) == {"a": 2.5, "b": 0.5}
    assert ordering.previous_durations(str(tmp_path), exclude="new") == {"a": 9.0}


def test_durations_are_merged_across_runs_so_a_partial_run_does_not_lose_the_rest(tmp_path):
    ordering.remember_durations(str(tmp_path), [{"id": "a", "duration": 3.0}, {"id": "b", "duration": 0.2}])
    _run(tmp_path, "partial", [{"id": "a", "duration": 2.5}], 2000)     # newer, but only one case
    ordering.remember_durations(str(tmp_path), [{"id": "a", "duration": 2.5}, {"id": "c", "duration": None}])
    assert ordering.previous_durations(str(tmp_path)) == {"a": 2.5, "b": 0.2}
    with open(tmp_path / ordering.DURATIONS) as fh:
        assert json.load(fh) == {"a": 2.5, "b": 0.2}


def test_without_a_durations_file_the_newest_run_gives_them(tmp_path):
    _run(tmp_path, "only", [{"id": "a", "duration": 1.5}], 1000)
    assert ordering.previous_durations(str(tmp_path)) == {"a": 1.5}
    (tmp_path / ordering.DURATIONS).write_text("[not a table]")
    assert ordering.previous_durations(str(tmp_path)) == {"a": 1.5}


def test_a_fresh_reports_folder_takes_the_durations_of_the_baseline(tmp_path):
    baseline = tmp_path / "6.18.44.json"
    baseline.write_text(json.dumps({"cases": [{"id": "a", "duration": 3.1}, {"id": "b", "duration": 0.1}]}))
    reports = tmp_path / "reports"
    assert ordering.previous_durations(str(reports), baseline=lambda: str(baseline)) == {"a": 3.1, "b": 0.1}
    _run(reports, "one", [{"id": "a", "duration": 2.9}], 1000)
    looked = []
    assert ordering.previous_durations(str(reports), baseline=lambda: looked.append(1)) == {"a": 2.9}
    assert not looked               # a run's durations exist: the baseline is not even looked for


def test_no_run_or_an_unreadable_one_gives_no_durations(tmp_path):
    assert ordering.previous_durations(str(tmp_path / "missing")) == {}
    path = _run(tmp_path, "broken", [], 1000)
    with open(os.path.join(path, "results.json"), "w") as fh:
        fh.write("{not json")
    assert ordering.previous_durations(str(tmp_path)) == {}


class _Item:
    def __init__(self, nodeid, expected=None):
        self.nodeid = nodeid
        self._marker = types.SimpleNamespace(args=(expected,)) if expected is not None else None

    def get_closest_marker(self, name):
        return self._marker if name == "expected_duration" else None


def test_longest_first_with_unknown_and_expected_durations():
    items = [_Item("short"), _Item("new"), _Item("long"), _Item("smoke", expected=80), _Item("mid"),
             _Item("tiny")]
    ordering.waiting_first(items, {"short": 0.2, "long": 3.5, "mid": 1.5, "tiny": 0.1})
    # smoke: its marker (80 s); new: UNKNOWN (1 s), after mid's 1.5 s; each followed by up to two short
    assert [i.nodeid for i in items] == ["smoke", "short", "tiny", "long", "mid", "new"]


def test_each_waiting_case_is_followed_by_short_ones_until_the_waiting_ones_run_out():
    durations = {"w1": 3.0, "w2": 1.1, "w3": 1.0}
    durations.update({f"s{n}": 0.4 - n / 100 for n in range(8)})
    items = [_Item(name) for name in sorted(durations)]
    ordering.waiting_first(items, durations)
    assert [i.nodeid for i in items] == ["w1", "s0", "s1", "w2", "s2", "s3", "w3", "s4", "s5", "s6", "s7"]
    assert ordering.SHORT_PER_WAIT == 2 and ordering.WAITING == 0.5


def test_a_case_just_under_the_waiting_threshold_is_a_short_one():
    items = [_Item("a"), _Item("b"), _Item("c"), _Item("d")]
    ordering.waiting_first(items, {"a": 0.49, "b": 0.5, "c": 0.3, "d": 0.2})
    assert [i.nodeid for i in items] == ["b", "a", "c", "d"]


def test_without_durations_a_long_test_still_goes_first_and_the_rest_keep_their_order():
    items = [_Item("a"), _Item("b"), _Item("smoke", expected=80), _Item("c")]
    ordering.waiting_first(items, {})
    assert [i.nodeid for i in items] == ["smoke", "a", "b", "c"]


def _config(dist="load", args=(), chunk=None, restarts=None):
    return types.SimpleNamespace(option=types.SimpleNamespace(dist=dist, maxschedchunk=chunk,
                                                              maxworkerrestart=restarts),
                                 invocation_params=types.SimpleNamespace(args=tuple(args)))


@pytest.mark.parametrize("args, dist, want", [
    ((), "load", "loadgroup"),                          # -n N alone: the plugin's choice
    (("--dist", "load"), "load", "load"),               # the user's choice is kept
    (("--dist=load",), "load", "load"),
    (("-d",), "load", "load"),
    ((), "loadscope", "loadscope"),
])
def test_loadgroup_unless_the_user_chose_a_dist(args, dist, want):
    config = _config(dist, args)
    ordering.grouped(config)
    assert config.option.dist == want


@pytest.mark.parametrize("args, restarts, want", [
    ((), None, 0),                          # loadgroup chosen by the plugin: no replacement workers
    ((), "3", "3"),                         # the user's --max-worker-restart is kept
    (("--dist", "load"), None, None),       # the user's --dist: xdist's own default
])
def test_the_plugins_loadgroup_does_not_replace_a_crashed_worker(args, restarts, want):
    config = _config("load", args, restarts=restarts)
    ordering.grouped(config)
    assert config.option.maxworkerrestart == want


def test_one_at_a_time_unless_the_user_chose_a_chunk():
    config = _config()
    ordering.one_at_a_time(config)
    assert config.option.maxschedchunk == 1
    config = _config(chunk=4)
    ordering.one_at_a_time(config)
    assert config.option.maxschedchunk == 4
