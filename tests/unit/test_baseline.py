"""Baselines: recorded per kernel, reproduced by a run of the same kernel and settings, a change fails."""

import json
import shutil
from pathlib import Path

from harness import baseline
from harness.kernels.version import version_of
from harness.results import write_results

DATA = Path(__file__).parent / "data" / "results"


def run_copy(tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(DATA / name, dst)
    write_results(str(dst))
    return dst


def test_a_run_reproduces_the_baseline_of_its_kernel(tmp_path):
    folder = tmp_path / "baselines"
    path = baseline.record(str(run_copy(tmp_path, "base")), str(folder))
    kernel = json.loads(Path(path).read_text())["kernel"]
    assert Path(path).name == f"{version_of(kernel)}.json"            # the version, not the build string
    ok, text = baseline.check(str(run_copy(tmp_path, "again")), str(folder))
    assert ok is True and "reproduce the baseline" in text, text


def test_a_baseline_is_the_runs_results_written_indented_for_diffs(tmp_path):
    run = run_copy(tmp_path, "base")
    text = Path(baseline.record(str(run), str(tmp_path / "baselines"))).read_text()
    results = (run / "results.json").read_text()
    assert json.loads(text) == json.loads(results)
    assert text.count("\n") > 100 > results.count("\n")     # the run's results.json is compact


def test_a_changed_behaviour_fails_with_the_comparison(tmp_path):
    folder = tmp_path / "baselines"
    path = Path(baseline.record(str(run_copy(tmp_path, "base")), str(folder)))
    data = json.loads(path.read_text())
    case = next(c for c in data["cases"] if c["behaviour"] and c["behaviour"]["segments"])
    case["behaviour"]["segments"][0] += " <changed>"
    path.write_text(json.dumps(data))
    ok, text = baseline.check(str(run_copy(tmp_path, "again")), str(folder))
    assert ok is False
    assert case["id"] in text and "<changed>" in text


def test_other_settings_are_not_compared(tmp_path):
    folder = tmp_path / "baselines"
    baseline.record(str(run_copy(tmp_path, "base")), str(folder))
    ok, text = baseline.check(str(run_copy(tmp_path, "nots")), str(folder))
    assert ok is None and "settings differ" in text


def test_no_baseline_for_this_kernel_says_how_to_record_one(tmp_path):
    ok, text = baseline.check(str(run_copy(tmp_path, "again")), str(tmp_path / "empty"))
    assert ok is None and "socklab baseline" in text


def _set_kernel(run_dir, release, version=None):
    """Rewrite a run's results.json as if it ran on `release` (and `version`)."""
    path = Path(run_dir) / "results.json"
    data = json.loads(path.read_text())
    data["kernel"], data["kernel_version"] = release, version or version_of(release)
    path.write_text(json.dumps(data))


def test_another_build_of_the_same_version_uses_its_baseline(tmp_path):
    folder = tmp_path / "baselines"
    base = run_copy(tmp_path, "base")
    _set_kernel(base, "6.18.44-fc-v445")
    assert Path(baseline.record(str(base), str(folder))).name == "6.18.44.json"
    again = run_copy(tmp_path, "again")
    _set_kernel(again, "6.18.44-fc-v782")
    ok, text = baseline.check(str(again), str(folder))
    assert ok is True and "6.18.44.json" in text, text


def test_debian_kernels_are_keyed_by_their_upstream_version():
    assert version_of("6.1.0-57-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-01)") == "6.1.192"
    assert version_of("7.3.4+deb13-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 7.3.4-1~bpo13+1") == "7.3.4"
    assert version_of("6.18.44-fc-v782") == "6.18.44"


def test_without_a_baseline_of_its_version_the_nearest_older_one_reports_changes_not_failures(tmp_path):
    folder = tmp_path / "baselines"
    for name, release in (("base", "6.12.118-x"), ("again", "6.1.192-x")):
        run = run_copy(tmp_path, name)
        _set_kernel(run, release)
        baseline.record(str(run), str(folder))
    path = folder / "6.12.118.json"
    data = json.loads(path.read_text())
    case = next(c for c in data["cases"] if c["behaviour"] and c["behaviour"]["segments"])
    case["behaviour"]["segments"][0] += " <changed in 6.12>"
    path.write_text(json.dumps(data))
    newer = run_copy(tmp_path / "newer", "again")
    _set_kernel(newer, "6.18.44-fc-v782")
    ok, text = baseline.check(str(newer), str(folder))
    assert ok is None                                       # information, not a failure
    assert text.startswith("no baseline for kernel 6.18.44; changed since 6.12.118") and "(not failures)" in text
    assert case["id"] in text and "<changed in 6.12>" in text
    # an older kernel than every baseline: nothing to compare with
    oldest = run_copy(tmp_path / "oldest", "base")
    _set_kernel(oldest, "5.15.1-x")
    ok, text = baseline.check(str(oldest), str(folder))
    assert ok is None and text.startswith("no baseline for kernel 5.15.1")


def _emulated(path: Path, edit=None) -> None:
    """Mark a results file as run under TCG, optionally editing one case's behaviour."""
    data = json.loads(path.read_text())
    data["emulator"] = "TCG"
    for c in data["cases"]:
        c["emulator"] = "TCG"
    if edit:
        edit(next(c for c in data["cases"] if c["behaviour"] and len(c["behaviour"]["segments"]) > 1))
    path.write_text(json.dumps(data))


def test_under_emulation_extra_retransmissions_are_named_not_failed(tmp_path):
    """A guest's run against a guest's baseline: a case that differs only by a repeated segment (the
    emulator's timing) passes with a note; any other change still fails."""
    folder = tmp_path / "baselines"
    _emulated(Path(baseline.record(str(run_copy(tmp_path, "base")), str(folder))))
    again = run_copy(tmp_path, "again")
    seen = {}

    def retransmit(case):
        seen["id"] = case["id"]
        case["behaviour"]["segments"].append(case["behaviour"]["segments"][-1])
    _emulated(again / "results.json", retransmit)
    ok, text = baseline.check(str(again), str(folder))
    assert ok is True and "emulator's timing" in text and seen["id"] in text, text

    def change(case):
        case["behaviour"]["segments"][0] += " <changed>"
    _emulated(again / "results.json", change)
    ok, text = baseline.check(str(again), str(folder))
    assert ok is False and "<changed>" in text


def test_a_baseline_that_cannot_be_read_fails_the_check_with_its_path(tmp_path):
    """A file named by a version is taken at its name (nothing read until it is needed); if it is not
    a results file, the check fails saying which file and why, not with a traceback or a silent pass."""
    folder = tmp_path / "baselines"
    path = Path(baseline.record(str(run_copy(tmp_path, "base")), str(folder)))
    path.write_text("garbage")
    ok, text = baseline.check(str(run_copy(tmp_path, "again")), str(folder))
    assert ok is False and str(path) in text and "cannot be read" in text, text


def test_on_the_machine_a_delayed_ack_before_a_slow_reply_is_named_not_failed(tmp_path):
    """A run on the machine itself (no emulator) whose only difference is a pure ACK that the
    sender's next data segment acknowledges again (the delayed-ACK timer beat a slow reply) passes
    naming the case; an extra ACK that no later segment repeats still fails."""
    folder = tmp_path / "baselines"
    path = Path(baseline.record(str(run_copy(tmp_path, "base")), str(folder)))
    data = json.loads(path.read_text())
    case = next(c for c in data["cases"] if c["behaviour"] and c["behaviour"]["segments"])
    reply = "server > client  P.  1:54(53) ack 7"
    case["behaviour"]["segments"] += [reply]
    path.write_text(json.dumps(data))
    again = run_copy(tmp_path, "again")
    results = json.loads((again / "results.json").read_text())
    mine = next(c for c in results["cases"] if c["id"] == case["id"])
    mine["behaviour"]["segments"] += ["server > client  .   1:1(0) ack 7", reply]
    (again / "results.json").write_text(json.dumps(results))
    ok, text = baseline.check(str(again), str(folder))
    assert ok is True and "delayed ACK" in text and case["id"] in text, text

    mine["behaviour"]["segments"][-2] = "server > client  .   1:1(0) ack 5"     # not acked again later
    (again / "results.json").write_text(json.dumps(results))
    ok, text = baseline.check(str(again), str(folder))
    assert ok is False and "ack 5" in text, text


def test_a_per_interface_sysctl_is_the_same_setting_whatever_the_veth_end_was_called(tmp_path):
    """A case that sets net.ipv4.neigh.<its veth end>.retrans_time_ms is compared with its baseline:
    the end's name carries the run's pid and counter, so results record it as <veth> (and the check
    reads older results' real names the same way). A different value is still another setting."""
    from harness.sysctls import recorded_key
    assert recorded_key("client:net.ipv4.neigh.sl1a2b3c.retrans_time_ms") == "client:net.ipv4.neigh.<veth>.retrans_time_ms"
    assert recorded_key("net.ipv6.conf.sl9zzzs.accept_dad") == "net.ipv6.conf.<veth>.accept_dad"
    for kept in ("net.ipv6.conf.all.accept_dad", "net.ipv4.conf.default.rp_filter", "net.ipv4.neigh.lo.gc_stale_time",
                 "net.ipv4.tcp_rto_min_us", "server:net.core.somaxconn"):
        assert recorded_key(kept) == kept
    folder = tmp_path / "baselines"
    path = Path(baseline.record(str(run_copy(tmp_path, "base")), str(folder)))
    data = json.loads(path.read_text())
    case = data["cases"][0]
    case["sysctls"] = {**case["sysctls"], "client:net.ipv4.neigh.sl111aac.retrans_time_ms": "200"}
    path.write_text(json.dumps(data))
    run = run_copy(tmp_path, "again")
    results = json.loads((run / "results.json").read_text())
    ran = next(c for c in results["cases"] if c["id"] == case["id"])
    ran["sysctls"] = {**ran["sysctls"], "client:net.ipv4.neigh.sl222bbc.retrans_time_ms": "200"}   # this run's end
    (run / "results.json").write_text(json.dumps(results))
    ok, text = baseline.check(str(run), str(folder))
    assert ok is True and "other settings" not in text, text
    ran["sysctls"]["client:net.ipv4.neigh.sl222bbc.retrans_time_ms"] = "400"
    (run / "results.json").write_text(json.dumps(results))
    ok, text = baseline.check(str(run), str(folder))
    assert "1 ran with other settings" in text, text
