"""What a killed run leaves and `socklab cleanup` removes; SIGTERM unwinds a pytest run completely."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from harness import topology, tracefs
from harness.lab import Lab

from .conftest import child_env, case_run_argv

# A harness process that builds a lab, leaves a forked program blocked inside accept (it has no
# parent-death signal, unlike the agents and their launcher, and nobody will connect), reports what it made and waits
# to be killed.
KILLED_RUN = """
import json, sys
from harness.errors import StepTimeout
from harness.lab import Lab
lab = Lab(family="ipv4").__enter__()
srv = lab.server.socket(); srv.bind(50000); srv.listen(5)
cli = lab.client.socket(); cli.connect(lab.hosts.server, 50000)
conn = srv.accept()
child = lab.server.fork()
try:
    child.sock(srv.fd).accept(timeout=0.05)
except StepTimeout:
    pass
sleeper = lab.command("client", ["sleep", "60"])
from harness import launcher
print("READY " + json.dumps({"launcher": launcher.launcher().proc.pid, "netns": [h.netns for h in lab.hosts.hosts.values()], "instance": lab.trace.name,
      "agents": [lab.client.pid, lab.server.pid, sleeper.pid], "child": child.pid,
      "server_netns": lab.hosts.server.netns, "block": lab.hosts.block}), flush=True)
sys.stdin.read()
"""


def socklab(*args) -> subprocess.CompletedProcess:
    """The `socklab` console script installed next to this Python (or the module behind it)."""
    script = os.path.join(os.path.dirname(sys.executable), "socklab")
    argv = [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "harness.cli"]
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=30)


@pytest.fixture
def killed_run(spawn):
    """A harness process SIGKILLed after building its lab; yields (pid, what it reported)."""
    child = spawn([sys.executable, "-c", KILLED_RUN])
    try:
        out = child.read_until("}\n", timeout=15)
        info = json.loads(out.split("READY ", 1)[1].split("\n", 1)[0])
        child.proc.send_signal(signal.SIGKILL)
        assert child.proc.wait(timeout=5) == -signal.SIGKILL
        yield child.pid, info
    finally:
        child.close()
        socklab("cleanup")      # whatever the test's outcome, nothing of the killed run stays


def test_cleanup_removes_what_a_killed_run_left_and_nothing_of_a_live_one(killed_run, resources):
    """SIGKILL leaves namespaces, instances and a forked program; dry-run lists them; cleanup removes only them."""
    pid, info = killed_run
    assert resources.netns(pid) == sorted(info["netns"])
    assert info["instance"] in resources.instances(pid)
    # The programs' launcher exits when the harness's end of its socket closes; the agents and
    # commands die with their parent (PR_SET_PDEATHSIG); a program they forked does not.
    assert resources.wait_gone([info["launcher"]] + info["agents"], timeout=2) == []
    assert resources.procs_in(info["server_netns"]) == [info["child"]]

    with Lab() as live:
        live_netns = [h.netns for h in live.hosts.hosts.values()]
        live_instance = live.trace.name
        live_agents = [live.client.pid, live.server.pid]

        dry = socklab("cleanup", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        for name in info["netns"]:
            assert f"would remove namespace {name}" in dry.stdout.splitlines(), dry.stdout
        assert f"would remove tracefs instance {tracefs.TRACEFS}/instances/{info['instance']}" in dry.stdout
        claim = os.path.join(topology.BLOCKS_DIR, str(info["block"]))
        live_claim = os.path.join(topology.BLOCKS_DIR, str(live.hosts.block))
        assert f"would remove address claim {claim}" in dry.stdout.splitlines(), dry.stdout
        assert live_claim not in dry.stdout
        assert resources.netns(pid) == sorted(info["netns"])
        assert info["instance"] in resources.instances(pid)
        assert resources.procs_in(info["server_netns"]) == [info["child"]]

        done = socklab("cleanup")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert f"removed namespace {info['server_netns']} (killed processes [{info['child']}])" in lines, done.stdout
        for name in info["netns"]:
            assert any(line.startswith(f"removed namespace {name}") for line in lines), done.stdout
        assert f"removed tracefs instance {tracefs.TRACEFS}/instances/{info['instance']}" in lines, done.stdout
        assert f"removed address claim {claim}" in lines and not os.path.exists(claim), done.stdout
        assert os.path.exists(live_claim) and live_claim not in done.stdout
        assert resources.netns(pid) == [] and resources.instances(pid) == []
        assert resources.wait_gone([info["child"]], timeout=2) == []
        assert not any(f"slab-{os.getpid()}-" in line for line in lines), done.stdout

        # The live owner's lab is untouched and still works.
        assert all(n in resources.netns(os.getpid()) for n in live_netns)
        assert live_instance in resources.instances(os.getpid())
        assert all(resources.alive(p) for p in live_agents)
        srv = live.server.socket()
        srv.bind(50000)
        srv.listen(1)
        live.client.socket().connect(live.hosts.server, 50000)


def test_cleanup_dry_run_never_lists_a_live_owner(resources):
    """While this process's lab is open, `socklab cleanup --dry-run` lists none of its resources."""
    with Lab() as live:
        dry = socklab("cleanup", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"slab-{os.getpid()}-" not in dry.stdout
        assert all(n in resources.netns(os.getpid()) for n in (h.netns for h in live.hosts.hosts.values()))


BLOCKING_CASE = """
def test_blocks(lab):
    srv = lab.server.socket()
    srv.bind(50000)
    srv.listen(1)
    pending = srv.accept(wait=False)
    print("CASE-STARTED", lab.client.pid, lab.server.pid, "CASE-READY", flush=True)
    pending.wait(timeout=60)
"""


def test_sigterm_unwinds_a_pytest_run_and_leaves_nothing(pytester, spawn, resources):
    """SIGTERM while a case blocks: pytest ends as interrupted, its namespaces, instances and agents are gone."""
    pytester.makepyfile(test_case=BLOCKING_CASE)
    run = spawn(case_run_argv(str(pytester.path), "-s"), cwd=pytester.path, env=child_env())
    out = run.read_until("CASE-READY", timeout=20)
    agents = [int(p) for p in out.split("CASE-STARTED", 1)[1].split()[:2]]
    assert len(resources.netns(run.pid)) == 2, "the case's namespaces carry the pytest process's pid"
    assert resources.instances(run.pid)
    run.proc.send_signal(signal.SIGTERM)
    status = run.finish(timeout=15)
    assert resources.netns(run.pid) == [], run.output
    assert resources.instances(run.pid) == [], run.output
    assert resources.wait_gone(agents, timeout=2) == []
    assert "KeyboardInterrupt: SIGTERM" in run.output, run.output
    # Interrupted, and the teardown itself raised nothing (no traceback after the interruption).
    assert status == pytest.ExitCode.INTERRUPTED, run.output
    assert "Traceback" not in run.output, run.output
