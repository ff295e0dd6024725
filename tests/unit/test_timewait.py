"""harness.timewait without privileges: probe lines parsed, timewait lives merged into the tracepoint's
histories, probe definitions from the kernel's types, event groups named by owner."""

from __future__ import annotations

import json
import os

import pytest

from harness import btf, names, timewait, trace

NETNS = 4026532890
# Lines in the shape the kernel's kprobe events print them (trace_clock=mono); v4 addresses read as
# a little-endian u32, dport as a little-endian read of a big-endian u16 (50000 = 0xc350 -> 0x50c3).
V4 = "saddr=0x20012c6 daddr=0x10012c6 saddr6={0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0} daddr6={0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0}"
MADE = (f"          <idle>-0       [001] ..s2.   100.000100: tw_sched: (__inet_twsk_schedule+0x0/0xb0) rearm=0 "
        f"sub=5 fam=2 sport=40000 dport=0x50c3 {V4} netns={NETNS}")
MOVED = (f"          <idle>-0       [000] ..s2.   100.050000: tw_sched: (__inet_twsk_schedule+0x0/0xb0) rearm=1 "
         f"sub=6 fam=2 sport=40000 dport=0x50c3 {V4} netns={NETNS}")
KILLED = (f"     ksoftirqd/1-22      [001] ..s1.   160.050000: tw_kill: (inet_twsk_kill+0x0/0x120) "
          f"sub=6 fam=2 sport=40000 dport=0x50c3 {V4} netns={NETNS}")
V6 = ("saddr=0x0 daddr=0x0 saddr6={32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,2} "
      "daddr6={32,1,13,184,0,0,0,0,0,0,0,0,0,0,0,1}")
MADE6 = (f"  python3-4242 [000] ..s1.  7.5: tw_sched: (__inet_twsk_schedule+0x0/0xb0) rearm=0 "
         f"sub=6 fam=10 sport=40001 dport=0x50c3 {V6} netns=77")


def tp(time, old, new, local="198.18.0.2", lport=40000, peer="198.18.0.1", pport=50000):
    return trace.Transition(time=time, family=4, local=local, local_port=lport, peer=peer, peer_port=pport,
                            old=old, new=new)


def client_history(*transitions):
    return trace.SocketHistory(("198.18.0.2", 40000, "198.18.0.1", 50000), list(transitions))


def test_parse_line_reads_every_field():
    ev = timewait.parse_line(MADE)
    assert (ev.kind, ev.substate, ev.family) == ("made", "FIN_WAIT2", 4)
    assert (ev.local, ev.local_port, ev.peer, ev.peer_port) == ("198.18.0.2", 40000, "198.18.0.1", 50000)
    assert ev.netns == NETNS and ev.time == 100.0001 and ev.probe == "__inet_twsk_schedule"
    assert timewait.parse_line(MOVED).kind == "rearmed" and timewait.parse_line(MOVED).substate == "TIME_WAIT"
    assert timewait.parse_line(KILLED).kind == "killed"
    ev6 = timewait.parse_line(MADE6)
    assert (ev6.family, ev6.local, ev6.peer, ev6.substate) == (6, "2001:db8::2", "2001:db8::1", "TIME_WAIT")


def test_parse_ignores_other_lines_and_other_namespaces():
    tracepoint = ("  <idle>-0 [001] ..s2. 100.0002: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP "
                  "sport=40000 dport=50000 saddr=198.18.0.2 daddr=198.18.0.1 saddrv6=::ffff:198.18.0.2 "
                  "daddrv6=::ffff:198.18.0.1 oldstate=TCP_FIN_WAIT2 newstate=TCP_CLOSE")
    assert timewait.parse_line(tracepoint) is None
    assert timewait.parse_line("# tracer: nop") is None
    assert timewait.parse_line(MADE.replace("sub=5", "sub=1")) is None        # not a timewait substate
    text = "\n".join([KILLED, tracepoint, MADE, MADE6, MOVED])
    assert [e.kind for e in timewait.parse(text, {NETNS})] == ["made", "rearmed", "killed"]
    assert len(timewait.parse(text)) == 4


def test_orphaned_close_becomes_fin_wait2_time_wait_close():
    """close() first: the tracepoint's FIN_WAIT2 -> CLOSE is only the handover to the timewait socket."""
    hist = client_history(tp(99.9, "ESTABLISHED", "FIN_WAIT1"), tp(100.0000, "FIN_WAIT1", "FIN_WAIT2"),
                          tp(100.0002, "FIN_WAIT2", "CLOSE"))
    out = timewait.merge([hist], timewait.parse("\n".join([MADE, MOVED, KILLED])))
    assert len(out) == 1
    assert out[0].states() == ["ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE"]
    assert out[0].sources() == ["trace", "trace", "timewait", "timewait"]
    assert [t.time for t in out[0].transitions][-2:] == [100.05, 160.05]


def test_made_in_time_wait_replaces_the_handover():
    """shutdown(SHUT_WR) then the peer's FIN: the timewait socket is made in TIME_WAIT at once."""
    made = MADE.replace("sub=5", "sub=6")
    hist = client_history(tp(99.0, "FIN_WAIT1", "FIN_WAIT2"), tp(100.0002, "FIN_WAIT2", "CLOSE"))
    out = timewait.merge([hist], timewait.parse(made))
    assert out[0].states() == ["FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"]
    assert out[0].transitions[-1].time == 100.0002 and out[0].sources() == ["trace", "timewait"]
    closing = client_history(tp(99.0, "FIN_WAIT1", "CLOSING"), tp(100.0002, "CLOSING", "CLOSE"))
    out = timewait.merge([closing], timewait.parse(made + "\n" + KILLED))
    assert out[0].states() == ["FIN_WAIT1", "CLOSING", "TIME_WAIT", "CLOSE"]


def test_a_close_long_before_is_not_the_handover_and_unmatched_lives_get_their_own_history():
    hist = client_history(tp(90.0, "LAST_ACK", "CLOSE"))
    out = timewait.merge([hist], timewait.parse("\n".join([MADE, KILLED])))
    assert [h.states() for h in out] == [["LAST_ACK", "CLOSE"], ["FIN_WAIT2", "CLOSE"]]
    assert out[1].sources() == ["timewait"]


def test_lives_split_a_reused_four_tuple():
    again = MADE.replace("100.000100", "170.0")
    lives = timewait.lives(timewait.parse("\n".join([MADE, MOVED, KILLED, again])))
    assert [[e.kind for e in life] for life in lives] == [["made", "rearmed", "killed"], ["made"]]


def test_definitions_from_the_kernels_types():
    """Offsets come from BTF; a missing function is named; the timer-handler fallback reads back from the timer."""
    if not os.access(btf.VMLINUX, os.R_OK):
        pytest.skip(f"{btf.VMLINUX} not readable here")
    types = btf.load()
    sub = btf.offset_of(types, "inet_timewait_sock", "tw_substate")
    timer = btf.offset_of(types, "inet_timewait_sock", "tw_timer")
    assert btf.offset_of(types, "inet_timewait_sock", "__tw_common.skc_daddr") == 0    # first in sock_common
    assert 0 < sub < timer
    lines = timewait.definitions("slab_1", types, exists=lambda f: True)
    assert lines[0].startswith("p:slab_1/tw_sched __inet_twsk_schedule rearm=$arg3:u8 ")
    assert f"sub=+{sub}($arg1):u8" in lines[0] and lines[1].startswith("p:slab_1/tw_kill inet_twsk_kill ")
    fallback = timewait.definitions("slab_1", types, exists=lambda f: f not in timewait.KILL)
    assert [l.split()[0] for l in fallback] == ["p:slab_1/tw_sched", "p:slab_1/tw_expire", "p:slab_1/tw_desched"]
    assert f"sub={sub - timer:+d}($arg1):u8" in fallback[1]
    with pytest.raises(timewait.ProbeError, match="__inet_twsk_schedule"):
        timewait.definitions("slab_1", types, exists=lambda f: False)
    with pytest.raises(btf.BTFError, match="no struct no_such_struct"):
        btf.offset_of(types, "no_such_struct", "x")
    with pytest.raises(btf.BTFError, match="no member tw_nothing"):
        btf.offset_of(types, "inet_timewait_sock", "tw_nothing")


def test_btf_rejects_what_is_not_btf():
    with pytest.raises(btf.BTFError, match="not BTF"):
        btf.Types(b"\0" * 64, "blob")
    with pytest.raises(btf.BTFError, match="cannot read"):
        btf.load("/nonexistent/vmlinux")


def test_event_group_names_carry_the_owner():
    assert names.event_group() == f"slab_{os.getpid()}"
    assert names.event_group_owner(names.event_group()) == os.getpid()
    assert names.event_group_owner("slab-12-x") is None and names.event_group_owner("kprobes") is None


def test_a_case_keeps_only_timewait_events_of_its_own_addresses():
    """A freed namespace's inode number is reused at once, and its timewait sockets end as it goes: an
    event with this case's inode but another case's addresses is not this case's (seen under TCG)."""
    from types import SimpleNamespace
    from harness.lab import Lab
    other = KILLED.replace("saddr=0x20012c6 daddr=0x10012c6", "saddr=0x20912c6 daddr=0x10912c6")
    lab = Lab.__new__(Lab)
    lab.trace_lines, lab._parse_cache, lab.netns_inodes, lab.start = [MADE, other, KILLED], {}, {NETNS}, 0.0
    lab.trace = None     # lines given directly: no instance, no clock offset
    host = SimpleNamespace(addr=lambda f: {"ipv4": "198.18.0.1", "ipv6": "2001:db8::1"}[f])
    peer = SimpleNamespace(addr=lambda f: {"ipv4": "198.18.0.2", "ipv6": "2001:db8::2"}[f])
    lab.topology = SimpleNamespace(interfaces=[host, peer])
    kept = lab.timewait_events()
    assert [e.raw for e in kept] == [MADE, KILLED]
    assert [e.local for e in timewait.parse(other)] == ["198.18.9.2"]        # the same inode: parsed, not kept


def test_probe_definitions_are_cached_per_kernel_build(tmp_path, monkeypatch):
    """The BTF is parsed once per kernel build, not once per process: the second process reads the
    cache, with its own event group; an unreadable cache file is made again; another build (or
    another size of BTF) has a file of its own."""
    loads = []
    monkeypatch.setattr(btf, "load", lambda: loads.append(1) or "types")
    monkeypatch.setattr(timewait, "definitions",
                        lambda group, types: [f"p:{group}/tw_sched f a=1", f"p:{group}/tw_kill g a=1"])
    first = timewait.cached_definitions("slab_1_a", str(tmp_path))
    again = timewait.cached_definitions("slab_2_b", str(tmp_path))
    assert first == ["p:slab_1_a/tw_sched f a=1", "p:slab_1_a/tw_kill g a=1"]
    assert again == ["p:slab_2_b/tw_sched f a=1", "p:slab_2_b/tw_kill g a=1"] and len(loads) == 1
    [cached] = tmp_path.iterdir()
    cached.write_text("{broken")
    assert timewait.cached_definitions("slab_3_c", str(tmp_path))[0] == "p:slab_3_c/tw_sched f a=1"
    assert len(loads) == 2 and json.loads(cached.read_text())[0] == "p:GROUP/tw_sched f a=1"
    monkeypatch.setattr(timewait.os.path, "getsize", lambda path: 12345)      # another BTF
    timewait.cached_definitions("slab_4_d", str(tmp_path))
    assert len(loads) == 3 and len(list(tmp_path.iterdir())) == 2
