"""When `ss -tanoi` prints a named snapshot (harness/ss.py mode()): a named snapshot keeps the kernel's
sock_diag answer instead of starting `ss`, and `ss` prints that answer as the case's artifacts are
written (SOCKLAB_SS=end, the default) or after the run (=replay, socklab matrix's guests); =live runs
`ss` at the moment."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from harness import artifacts, background, ss
from harness.errors import CommandError, SetupError
from harness.lab import Lab
from harness.record import CaseRecord

PORT = 50000


def _shape(text: str) -> str:
    """ss's text without the values that move while nothing happens (ms since the last send/receipt)."""
    return re.sub(r" last(snd|rcv|ack):\d+", "", text)


def test_a_replayed_snapshot_is_what_ss_prints(lab, family, monkeypatch, tmp_path):
    """No `ss` process at the snapshot; `ss` prints the recorded answer as it prints the kernel's own."""
    lab.establish(PORT)
    started = []
    real = subprocess.Popen.__init__

    def counting(self, args, *a, **kw):
        started.append(list(args))
        real(self, args, *a, **kw)
    monkeypatch.setenv("SOCKLAB_SS", "replay")
    monkeypatch.setattr(subprocess.Popen, "__init__", counting)
    snaps = lab.ss("recorded")
    monkeypatch.undo()
    assert [a for a in started if a[:1] == ["ss"]] == []
    for role, snap in snaps.items():
        live = ss.take(lab.topology.hosts[role].netns, label="live")
        path = tmp_path / f"{role}.diag"
        path.write_bytes(snap.dump)
        printed = ss.replay(str(path))
        assert _shape(printed) == _shape(live.text), (printed, live.text)
        assert [r.state for r in ss.parse(printed)] == snap.states() != []


def test_a_run_folder_is_printed_once_and_its_records_say_so(monkeypatch, tmp_path):
    """replay_ss sets each snapshot's text and source in case.json and ss.txt; a second pass finds nothing."""
    case_dir = tmp_path / "run" / "cases" / "one"
    monkeypatch.setenv("SOCKLAB_SS", "replay")
    with Lab(artifacts_dir=str(case_dir)) as lab:
        lab.establish(PORT)
        lab.ss("established")
    monkeypatch.delenv("SOCKLAB_SS")
    background.flush()
    before = CaseRecord.load(str(case_dir / "case.json")).ss
    named = [s for s in before if s.diag]
    assert [(s.role, s.source) for s in named] == [("client", "sock_diag"), ("server", "sock_diag")]
    assert all(os.path.getsize(case_dir / s.diag) > 0 for s in named)

    ended = os.stat(case_dir / "case.json").st_mtime_ns
    assert artifacts.replay_ss(str(tmp_path / "run")) == 2
    assert os.stat(case_dir / "case.json").st_mtime_ns == ended       # a guest's phases are read from it
    after = {(s.role, s.label): s for s in CaseRecord.load(str(case_dir / "case.json")).ss}
    text = (case_dir / "ss.txt").read_text()
    for s in named:
        done = after[(s.role, s.label)]
        assert done.source == "ss replay" and done.text != s.text and done.text in text
        assert done.text.splitlines()[0].rstrip().endswith("Process")       # ss's header, not the harness's
        assert [r.state for r in done.rows] == [r.state for r in s.rows]     # the rows judged stay
    assert artifacts.replay_ss(str(tmp_path / "run")) == 0


def test_by_default_ss_prints_the_kept_answer_as_the_case_is_written(monkeypatch, tmp_path):
    """SOCKLAB_SS unset: no `ss` process at the snapshot (the case's steps do not wait for one), and
    the case's record holds what `ss -tanoi` printed from the answer, written with the case."""
    monkeypatch.delenv("SOCKLAB_SS", raising=False)
    started = []
    real = subprocess.Popen.__init__

    def counting(self, args, *a, **kw):
        started.append(list(args))
        real(self, args, *a, **kw)
    case_dir = tmp_path / "run" / "cases" / "one"
    with Lab(artifacts_dir=str(case_dir)) as lab:
        lab.establish(PORT)
        monkeypatch.setattr(subprocess.Popen, "__init__", counting)
        snaps = lab.ss("established")
        monkeypatch.undo()
        assert [a for a in started if a[:1] == ["ss"]] == []
        assert all(s.dump is not None and s.argv[:1] == ("sock_diag",) for s in snaps.values())
    background.flush()
    named = [s for s in CaseRecord.load(str(case_dir / "case.json")).ss if s.label == "established"]
    assert [(s.role, s.source) for s in named] == [("client", "ss replay"), ("server", "ss replay")]
    for s in named:
        assert s.text.splitlines()[0].rstrip().endswith("Process")       # ss's header, not the harness's
        assert s.text == ss.replay(str(case_dir / s.diag)) and s.text in (case_dir / "ss.txt").read_text()
        assert [r.state for r in ss.parse(s.text)] == s.states() and "ESTAB" in s.states()
    assert artifacts.replay_ss(str(tmp_path / "run")) == 0             # nothing left for after the run


def test_live_runs_ss_at_the_snapshot(lab, monkeypatch):
    """SOCKLAB_SS=live: `ss` runs at the moment; nothing is kept for later."""
    monkeypatch.setenv("SOCKLAB_SS", "live")
    lab.establish(PORT)
    snaps = lab.ss("printed")
    assert all(s.argv[:1] == ("ss",) and s.dump is None for s in snaps.values())


def test_an_unknown_mode_is_a_clear_error(lab, monkeypatch):
    monkeypatch.setenv("SOCKLAB_SS", "later")
    with pytest.raises(SetupError, match=r"SOCKLAB_SS='later': not one of end, live, replay"):
        lab.ss("never")


def test_replay_all_prints_each_answer_as_replay_does(lab, tmp_path):
    """One shell runs one `ss` per recorded answer; each text is what `ss` prints for that answer
    alone (column widths included), and a file ss cannot read is an error naming the command."""
    lab.establish(PORT)
    paths = []
    for role, snap in lab.ss("two").items():
        path = tmp_path / f"{role}.diag"
        path.write_bytes(snap.dump)
        paths.append(str(path))
    assert ss.replay_all(paths) == [ss.replay(p) for p in paths] and ss.replay_all([]) == []
    bad = tmp_path / "bad.diag"
    bad.write_bytes(b"\x01" * 7)
    with pytest.raises(CommandError, match="socklab-ss-replay"):
        ss.replay_all([paths[0], str(bad)])
