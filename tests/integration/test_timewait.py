"""harness.timewait on the real kernel: a timewait socket's life from the probes, and the probes'
own life (made once per process, removed at its exit, a killed run's removed by `socklab cleanup`).

Where the kernel cannot have the probes (no kprobe events), the tests that need them skip with the
reason; the cleanup of dead owners' event groups is tested with a uprobe event, which every kernel
with dynamic events can make, since cleanup treats every event of a `slab_<pid>` group alike.
"""

from __future__ import annotations

import os
import signal
import sys

import pytest

from harness import names, timewait, tracefs
from tests.integration.test_cleanup import socklab

PORT = 50000


def need_probes():
    probes = timewait.probes()
    if probes.reason is not None:
        pytest.skip(f"timewait probes unavailable: {probes.reason}")
    return probes


def server_closes_first(lab):
    """Four-way close with the server as the active closer, then the client connects again from the same
    port: the SYN reaches the server's timewait socket, which the kernel kills to accept it."""
    listener, conn, cli = lab.establish(PORT)
    port = cli.getsockname()[1]
    conn.close()
    assert cli.recv(10).ret == ""
    cli.close()
    lab.wait_ss("server", lambda s: any(r.state == "TIME-WAIT" for r in s.rows), what="server in TIME-WAIT")
    again = lab.client.socket()
    again.setsockopt("SO_REUSEADDR", 1)
    again.bind(port)
    again.connect(lab.hosts.server, PORT)
    return port


def test_four_way_close_shows_time_wait_from_the_kernel(lab, family):
    """The active closer's history: FIN_WAIT2 -> TIME_WAIT when the peer's FIN arrives, TIME_WAIT -> CLOSE
    when the reopening SYN kills it; both marked as the probes' and placed between the segments that caused them."""
    need_probes()
    assert lab.timewait_source == "kprobe"
    port = server_closes_first(lab)
    segs = lab.segments(PORT)
    lab.capture.drain()
    hists = [h for h in lab.transitions(PORT, merge_timewait=True)
             if h.key[0] == lab.addr("server") and h.key[3] == port and "FIN_WAIT1" in h.states()]
    assert len(hists) == 1, [str(h) for h in lab.transitions(PORT, merge_timewait=True)]
    hist = hists[0]
    # The head (LISTEN -> SYN_RECV) is the tracepoint's business (6.1 prints that event with dport 0).
    assert hist.states()[-5:] == ["ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE"], str(hist)
    assert hist.sources()[-2:] == ["timewait", "timewait"], hist.sources()
    times = [t.time for t in hist.transitions]
    assert times == sorted(times), str(hist)
    fin = next(s for s in segs if s.src == "client" and "F" in s.flags)
    ack_of_fin = next(s for s in segs if s.src == "server" and s.time >= fin.time and s.flags == ".")
    syn2 = [s for s in segs if s.src == "client" and s.flags == "S"][-1]
    synack2 = next(s for s in segs if s.src == "server" and s.flags == "S." and s.time >= syn2.time)
    move, kill = hist.transitions[-2].time, hist.transitions[-1].time
    assert fin.time <= move <= ack_of_fin.time, (fin.time, move, ack_of_fin.time)
    assert syn2.time <= kill <= synack2.time, (syn2.time, kill, synack2.time)


def test_record_carries_timewait_source_and_sources(lab):
    """case.json says where TIME_WAIT came from, and marks each transition's source."""
    server_closes_first(lab)
    lab.finish()
    rec = lab.record().to_json()
    assert rec["timewait_source"] == timewait.probes().source
    for h in rec["transitions"]:
        assert len(h["sources"]) == len(h["states"]) - 1
    if timewait.probes().reason is None:
        assert any("timewait" in h["sources"] for h in rec["transitions"]), rec["transitions"]
    else:
        assert rec["timewait_source"].startswith("ss (")
        assert all(set(h["sources"]) <= {"trace"} for h in rec["transitions"])


LAB_AND_EXIT = """
from harness import timewait
from harness.lab import Lab
with Lab(family="ipv4") as lab:
    print("GROUP", timewait.probes().group, flush=True)
    print("EVENTS", ",".join(timewait.group_events(timewait.probes().group)), flush=True)
"""


def test_probes_removed_at_exit(spawn, resources):
    """A process that ran a lab with the probes removes them (and its anchor instance) when it exits."""
    need_probes()
    child = spawn([sys.executable, "-c", LAB_AND_EXIT])
    assert child.finish(timeout=300) == 0, child.output
    group = child.output.split("GROUP ", 1)[1].split()[0]
    events = child.output.split("EVENTS ", 1)[1].split("\n", 1)[0]
    assert events, f"the child made no probes:\n{child.output}"
    assert timewait.group_events(group) == [], f"{group} left behind"
    assert resources.instances(child.pid) == [], "tracefs instances left behind"


MAKE_AND_WAIT = """
import sys
from harness import timewait, tracefs
if sys.argv[1] == "kprobe":
    probes = timewait.probes()
    inst = tracefs.pool().get()
    probes.enable(inst.path)
else:
    timewait._write_events(f"p:{timewait.names.event_group()}/slab_uprobe /bin/true:0x1000")
print("READY", timewait.names.event_group(), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("kind", ["uprobe", "kprobe"])
def test_killed_runs_events_are_cleaned_up_live_ones_kept(spawn, kind):
    """`socklab cleanup` removes the event group of a SIGKILLed process and leaves a live process's alone."""
    if kind == "kprobe":
        need_probes()
    elif not os.path.exists(os.path.join(tracefs.TRACEFS, "uprobe_events")):
        pytest.skip("no uprobe events on this kernel")
    live = spawn([sys.executable, "-c", MAKE_AND_WAIT, kind])
    dead = spawn([sys.executable, "-c", MAKE_AND_WAIT, kind])
    live_group = live.read_until("\n", timeout=180).split("READY ", 1)[1].split()[0]
    dead_group = dead.read_until("\n", timeout=180).split("READY ", 1)[1].split()[0]
    try:
        assert timewait.group_events(dead_group) and timewait.group_events(live_group)
        dead.proc.send_signal(signal.SIGKILL)
        assert dead.proc.wait(timeout=5) == -signal.SIGKILL
        assert dead_group in timewait.leftovers() and live_group not in timewait.leftovers()
        out = socklab("cleanup")
        assert out.returncode == 0, out.stderr
        assert f"removed trace events {dead_group}/*" in out.stdout, out.stdout
        assert timewait.group_events(dead_group) == []
        assert not [i for i in os.listdir(os.path.join(tracefs.TRACEFS, "instances"))
                    if i.startswith(f"slab-{dead.pid}-")], "the killed run's instances (anchor) left behind"
        assert timewait.group_events(live_group), f"cleanup removed the live process's {live_group}"
    finally:
        live.close()
        dead.close()
        for group in (live_group, dead_group):
            if not names.pid_alive(names.event_group_owner(group)):
                for inst in tracefs.leftovers():
                    tracefs.remove_quietly_busy(inst)
                timewait.remove_group(group)


def test_no_probes_says_why(lab):
    """Without probes the case records `ss (<reason>)`, one line naming what is missing."""
    probes = timewait.probes()
    if probes.reason is None:
        assert lab.timewait_source == "kprobe"
    else:
        assert lab.timewait_source == f"ss ({probes.reason})" and "\n" not in probes.reason
