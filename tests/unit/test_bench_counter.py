"""The bench's process counter (harness/bench.py ProcessCounter): what `socklab bench --catalogue`
prints as `ss` and `nft` processes started."""

import subprocess

from harness.bench import ProcessCounter


def test_the_ss_of_a_replay_shell_are_counted_one_per_answer(monkeypatch, tmp_path):
    monkeypatch.setattr(subprocess.Popen, "__init__", subprocess.Popen.__init__)    # undone after the test
    counter = ProcessCounter(str(tmp_path / "log"))
    counter.install()
    subprocess.run(["sh", "-c", "true", "socklab-ss-replay", "a.diag", "b.diag", "c.diag"], check=True)
    subprocess.run(["sh", "-c", "true"], check=True)
    subprocess.run(["ss", "-V"], capture_output=True, check=True)
    assert counter.started == {"ss": 4, "nft": 0} and counter.polling == {"ss": 0, "nft": 0}
