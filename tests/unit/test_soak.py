"""socklab soak: load processes started and stopped by soak itself; failures named per run (no privileges)."""

from __future__ import annotations

from harness import cli, names


def test_load_processes_run_and_are_gone_afterwards():
    procs = cli._start_load(2)
    try:
        assert len(procs) == 2 and all(names.pid_alive(p.pid) for p in procs)
    finally:
        cli._stop_load(procs)
    assert not any(names.pid_alive(p.pid) for p in procs)


def test_soak_names_the_failing_case_of_each_run(tmp_path, capsys):
    case = tmp_path / "test_flaky.py"
    case.write_text("def test_ok():\n    pass\n\n\ndef test_broken():\n    assert 1 == 2, 'the broken one'\n")
    code = cli.main(["soak", "--runs", "2", "-n", "0", "--load", "1", "--cases", str(case),
                     "--reports", str(tmp_path / "reports")])
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.count("run  1: exit 1") == 1 and "run  2: exit 1" in out, out
    assert "test_flaky.py::test_broken" in out and "the broken one" in out, out
    assert "socklab soak: 0 of 2 runs passed (-n 0, load 1); wall median" in out, out
    assert "failed in 2 of 2 runs:" in out and "test_broken" in out.split("failed in 2 of 2 runs:")[1], out
