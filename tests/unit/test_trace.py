"""harness.trace on real `sock:inet_sock_set_state` lines (Linux 6.18), no privileges needed.

The files in data/ come from a tracefs instance sltesttr-<pid> with trace_clock=mono and only
this event enabled, while namespaces sltesttr-<pid>-a/-b (veth 198.18.0.1 <-> 198.18.0.2) did:
- trace_main.txt (the instance's `trace` file, headers included), in this order:
  v4 over the veth: listener 198.18.0.2:50000, client 198.18.0.1 connects, sends, close()s first,
  server closes; v6 over ::1 port 50006 from a thread named "sl w-1 x"; a v4 client to a
  dual-stack [::]:50008 listener (server socket is AF_INET6, v4-mapped), server closes first;
  a simultaneous close on 50007 (both FINs held by nftables, then released); on 50004 an orphan
  FIN-WAIT-2 facing a CLOSE_WAIT that closes only at the end, and a shutdown(SHUT_WR) client;
  refused connects to 127.0.0.1:50009 and [::1]:50009; an abort with SO_LINGER 0 on 50005.
- trace_pipe_lost.txt: `trace_pipe` after 400 refused connects into a 4 KiB buffer.
"""

from dataclasses import replace
from pathlib import Path

import pytest

from harness import trace
from harness.trace import SocketHistory, Transition, TraceEventsLost

DATA = Path(__file__).parent / "data"
VETH = {"198.18.0.1", "198.18.0.2"}


@pytest.fixture(scope="module")
def main():
    return trace.parse((DATA / "trace_main.txt").read_text())


def lost_file_transitions():
    with pytest.raises(TraceEventsLost) as exc:
        trace.parse((DATA / "trace_pipe_lost.txt").read_text())
    return exc.value


def test_every_event_line_is_parsed_and_headers_are_skipped(main):
    lines = (DATA / "trace_main.txt").read_text().splitlines()
    assert len(main) == sum(not l.startswith("#") for l in lines) == 82
    first = main[0]
    assert first == Transition(time=352.034728, family=4, local="198.18.0.2", local_port=50000,
                               peer="0.0.0.0", peer_port=0, old="CLOSE", new="LISTEN",
                               comm="python3", pid=4161, raw=lines[12])


def test_task_names_with_spaces_slashes_and_dashes(main):
    assert {(t.comm, t.pid) for t in main} == {("python3", 4161), ("sl w-1 x", 4220),
                                               ("ksoftirqd/1", 22), ("ss", 4235)}
    idle = ("          <idle>-0       [001] ..s2.   333.544055: inet_sock_set_state: family=AF_INET "
            "protocol=IPPROTO_TCP sport=38418 dport=50004 saddr=127.0.0.1 daddr=127.0.0.1 "
            "saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_FIN_WAIT1 newstate=TCP_FIN_WAIT2")
    t = trace.parse_line(idle)
    assert (t.comm, t.pid, t.time, t.local_port, t.old, t.new) == ("<idle>", 0, 333.544055, 38418, "FIN_WAIT1", "FIN_WAIT2")


def test_ipv6_sockets_use_the_v6_fields(main):
    # the v6 server socket prints saddr=127.0.0.6 (the kernel's placeholder) and saddrv6=::1
    server = [t for t in main if t.local_port == 50006 and t.peer_port != 0][0]
    assert "saddr=127.0.0.6" in server.raw
    assert (server.family, server.local, server.peer, server.old, server.new) == (6, "::1", "::1", "LISTEN", "SYN_RECV")
    listener = [t for t in main if t.local_port == 50006 and t.peer_port == 0][0]
    assert (listener.local, listener.peer) == ("::1", "::")
    client_first = [t for t in main if t.peer_port == 50006 and t.local_port == 0][0]
    assert "saddr=0.0.0.0" in client_first.raw and client_first.local == "::1"
    dual = [t for t in main if t.local_port == 50008 and t.peer_port != 0][0]
    assert (dual.family, dual.local, dual.peer) == (6, "::ffff:127.0.0.1", "::ffff:127.0.0.1")
    assert [t for t in main if t.local_port == 50008][0].local == "::"          # [::]:50008 listener


def test_time_wait_is_never_a_new_state(main):
    """What TIMEWAIT_NOTE says: sockets reach TIME_WAIT as timewait sockets, shown as -> CLOSE."""
    assert "TIME_WAIT" not in {t.new for t in main}
    orphan = [t for t in main if t.local_port == 49212]
    assert [(t.old, t.new) for t in orphan] == [("SYN_SENT", "ESTABLISHED"), ("ESTABLISHED", "FIN_WAIT1"),
                                              ("FIN_WAIT1", "FIN_WAIT2"), ("FIN_WAIT2", "CLOSE")]
    assert orphan[3].time - orphan[2].time == pytest.approx(4e-6, abs=1e-6)
    peer_last_ack = [t for t in main if t.peer_port == 49212 and t.new == "LAST_ACK"][0]
    assert peer_last_ack.time > orphan[3].time + 0.007           # the peer closed 7.6 ms later


def test_non_event_lines_are_none():
    assert trace.parse_line("# tracer: nop") is None
    assert trace.parse_line("") is None
    assert trace.parse_line("#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION") is None
    assert trace.parse_line("# entries-in-buffer/entries-written: 82/82   #P:2") is None


def test_other_protocols_are_skipped(main):
    assert trace.parse_line(main[0].raw.replace("IPPROTO_TCP", "IPPROTO_MPTCP")) is None


def test_lost_line_raises():
    with pytest.raises(TraceEventsLost) as exc:
        trace.parse_line("CPU:1 [LOST 742 EVENTS]")
    assert (exc.value.count, exc.value.cpus) == (742, (1,))
    with pytest.raises(TraceEventsLost) as exc:
        trace.parse_line("CPU:0 [LOST EVENTS]")
    assert exc.value.count is None and "lost some events on CPU 0" in str(exc.value)


def test_overwritten_entries_in_a_trace_file_header_raise():
    with pytest.raises(TraceEventsLost) as exc:
        trace.parse_line("# entries-in-buffer/entries-written: 50/80   #P:2")
    assert exc.value.count == 30


def test_parse_reads_everything_before_reporting_the_loss():
    exc = lost_file_transitions()
    assert exc.count == 742 and exc.cpus == (1,) and exc.lines == ("CPU:1 [LOST 742 EVENTS]",)
    assert len(exc.transitions) == 58
    assert "buffer_size_kb" in str(exc)


def test_histories_of_a_connection_over_the_veth(main):
    hists = trace.group_by_socket(main, VETH)
    assert [str(h) for h in hists] == [
        "198.18.0.2:50000 > 0.0.0.0:0  CLOSE -> LISTEN -> CLOSE",
        "198.18.0.1:39204 > 198.18.0.2:50000  CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE",
        "198.18.0.2:50000 > 198.18.0.1:39204  LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE",
    ]
    client = hists[1]
    assert client.key == ("198.18.0.1", 39204, "198.18.0.2", 50000)
    assert client.transitions[0].local_port == 0                  # the port-0 first event, attached
    assert client.states() == ["CLOSE", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE"]


def test_address_filter_and_ipv6_histories(main):
    hists = trace.group_by_socket(main, {"::1"})
    assert [str(h) for h in hists] == [
        "[::1]:50006 > [::]:0  CLOSE -> LISTEN -> CLOSE",
        "[::1]:43092 > [::1]:50006  CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE",
        "[::1]:50006 > [::1]:43092  LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE",
        "[::1]:46190 > [::1]:50009  CLOSE -> SYN_SENT -> CLOSE",
    ]
    # a wildcard listener is kept only when the wildcard is asked for
    assert "[::]:50008 > [::]:0  CLOSE -> LISTEN -> CLOSE" in [str(h) for h in trace.group_by_socket(main, {"::"})]


def test_v4_mapped_addresses_match_their_ipv4_form(main):
    hists = [str(h) for h in trace.group_by_socket(main, {"127.0.0.1"}) if 50008 in (h.key[1], h.key[3])]
    assert hists == [
        "127.0.0.1:45412 > 127.0.0.1:50008  CLOSE -> SYN_SENT -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE",
        "[::ffff:127.0.0.1]:50008 > [::ffff:127.0.0.1]:45412  LISTEN -> SYN_RECV -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE",
    ]


def test_simultaneous_close_and_abort(main):
    by_ports = {h.key[1::2]: h.states() for h in trace.group_by_socket(main, {"127.0.0.1"})}
    assert by_ports[56186, 50007] == ["CLOSE", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "CLOSING", "CLOSE"]
    assert by_ports[50007, 56186] == ["LISTEN", "SYN_RECV", "ESTABLISHED", "FIN_WAIT1", "CLOSING", "CLOSE"]
    assert by_ports[50007, 0] == ["CLOSE", "LISTEN", "CLOSE"]
    assert by_ports[33204, 50005] == ["CLOSE", "SYN_SENT", "ESTABLISHED", "CLOSE"]      # SO_LINGER 0
    assert by_ports[50005, 33204] == ["LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE"]     # got the RST
    assert by_ports[52486, 50009] == ["CLOSE", "SYN_SENT", "CLOSE"]                     # refused


def test_each_port_zero_event_goes_to_its_own_connect():
    transitions = lost_file_transitions().transitions
    hists = trace.group_by_socket(transitions, {"127.0.0.1"})
    assert len(hists) == 29 and all(h.states() == ["CLOSE", "SYN_SENT", "CLOSE"] for h in hists)
    assert all(h.transitions[0].local_port == 0 and h.key[1] != 0 for h in hists)
    assert hists[0].key == ("127.0.0.1", 55894, "127.0.0.1", 50009)
    # without the last connect's SYN_SENT -> CLOSE its first event stays a port-0 history of its own
    partial = trace.group_by_socket(transitions[:-1], {"127.0.0.1"})
    assert partial[-1].key == ("127.0.0.1", 0, "127.0.0.1", 50009)
    assert partial[-1].states() == ["CLOSE", "SYN_SENT"]


def test_a_reused_four_tuple_starts_a_new_history(main):
    first = [t for t in main if t.peer_port == 50009 and t.family == 4]      # port 0, then 52486
    again = [replace(t, time=t.time + 1.0) for t in first]
    hists = trace.group_by_socket(first + again, {"127.0.0.1"})
    assert [h.states() for h in hists] == [["CLOSE", "SYN_SENT", "CLOSE"]] * 2
    assert hists[0].transitions[-1].time < hists[1].transitions[0].time


def test_history_text_and_empty_history():
    assert SocketHistory(("::1", 1, "::1", 2)).states() == []
    assert str(SocketHistory(("198.18.0.1", 41000, "198.18.0.2", 50000), [
        Transition(1.0, 4, "198.18.0.1", 0, "198.18.0.2", 50000, "CLOSE", "SYN_SENT"),
        Transition(1.1, 4, "198.18.0.1", 41000, "198.18.0.2", 50000, "SYN_SENT", "ESTABLISHED"),
    ])) == "198.18.0.1:41000 > 198.18.0.2:50000  CLOSE -> SYN_SENT -> ESTABLISHED"


def test_timewait_note_states_the_measurement():
    assert "never appears" in trace.TIMEWAIT_NOTE and "-> CLOSE" in trace.TIMEWAIT_NOTE


def _line(time, sport, dport, saddr, daddr, old, new, v6=None):
    """A trace line in the shape Linux 6.1 and 6.12 print (v6: (saddrv6, daddrv6) for AF_INET6)."""
    fam = "AF_INET6" if v6 else "AF_INET"
    s6, d6 = v6 or (f"::ffff:{saddr}", f"::ffff:{daddr}")
    return (f"          <idle>-0       [001] ..s2.  {time:.6f}: inet_sock_set_state: family={fam} "
            f"protocol=IPPROTO_TCP sport={sport} dport={dport} saddr={saddr} daddr={daddr} "
            f"saddrv6={s6} daddrv6={d6} oldstate=TCP_{old} newstate=TCP_{new}")


def test_old_kernels_listen_to_syn_recv_event_joins_its_connection_not_the_listener():
    # 6.1/6.12: the child socket's first event still carries the listener's addresses (dport=0, daddr=0)
    lines = [
        _line(10.000100, 50000, 0, "198.18.0.2", "0.0.0.0", "CLOSE", "LISTEN"),
        _line(10.000200, 0, 50000, "198.18.0.1", "198.18.0.2", "CLOSE", "SYN_SENT"),
        _line(10.000300, 40000, 50000, "198.18.0.1", "198.18.0.2", "SYN_SENT", "ESTABLISHED"),
        _line(10.000400, 50000, 0, "198.18.0.2", "0.0.0.0", "LISTEN", "SYN_RECV"),
        _line(10.000410, 50000, 40000, "198.18.0.2", "198.18.0.1", "SYN_RECV", "ESTABLISHED"),
        # a second connection to the same listener, its events interleaved with the first one's close
        _line(10.001000, 0, 50000, "198.18.0.1", "198.18.0.2", "CLOSE", "SYN_SENT"),
        _line(10.001100, 40002, 50000, "198.18.0.1", "198.18.0.2", "SYN_SENT", "ESTABLISHED"),
        _line(10.001200, 50000, 0, "198.18.0.2", "0.0.0.0", "LISTEN", "SYN_RECV"),
        _line(10.001250, 50000, 40000, "198.18.0.2", "198.18.0.1", "ESTABLISHED", "CLOSE"),
        _line(10.001300, 50000, 40002, "198.18.0.2", "198.18.0.1", "SYN_RECV", "ESTABLISHED"),
        _line(10.002000, 50000, 0, "198.18.0.2", "0.0.0.0", "LISTEN", "CLOSE"),
    ]
    hists = trace.group_by_socket(trace.parse("\n".join(lines)), VETH)
    assert [str(h) for h in hists] == [
        "198.18.0.2:50000 > 0.0.0.0:0  CLOSE -> LISTEN -> CLOSE",
        "198.18.0.1:40000 > 198.18.0.2:50000  CLOSE -> SYN_SENT -> ESTABLISHED",
        "198.18.0.2:50000 > 198.18.0.1:40000  LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE",
        "198.18.0.1:40002 > 198.18.0.2:50000  CLOSE -> SYN_SENT -> ESTABLISHED",
        "198.18.0.2:50000 > 198.18.0.1:40002  LISTEN -> SYN_RECV -> ESTABLISHED",
    ]
    assert hists[2].transitions[0].peer_port == 0      # the event itself is kept as the kernel printed it


def test_old_kernels_child_event_of_a_wildcard_listener_and_ipv6():
    v6 = ("2001:db8::2", "2001:db8::1")
    lines = [
        _line(5.0001, 50001, 0, "0.0.0.0", "0.0.0.0", "CLOSE", "LISTEN", v6=("::", "::")),
        _line(5.0002, 50001, 0, "127.0.0.6", "127.0.0.6", "LISTEN", "SYN_RECV", v6=("::", "::")),
        _line(5.0003, 50001, 41000, "127.0.0.6", "127.0.0.6", "SYN_RECV", "ESTABLISHED", v6=v6),
    ]
    hists = trace.group_by_socket(trace.parse("\n".join(lines)), {"2001:db8::1", "2001:db8::2"})
    assert [str(h) for h in hists] == ["[2001:db8::2]:50001 > [2001:db8::1]:41000  LISTEN -> SYN_RECV -> ESTABLISHED"]
    # a foreign child event (another lab's wildcard listener) with no connection of ours is dropped
    alone = trace.group_by_socket(trace.parse(lines[1]), {"2001:db8::1", "2001:db8::2"})
    assert alone == []


def test_lines_of_keeps_only_lines_that_can_concern_the_case():
    ours = ("  python-1 [000] ..... 10.000001: inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP "
            "sport=40000 dport=80 saddr=198.18.0.1 daddr=198.18.0.2 saddrv6=::ffff:198.18.0.1 "
            "daddrv6=::ffff:198.18.0.2 oldstate=TCP_CLOSE newstate=TCP_SYN_SENT")
    theirs = ours.replace("198.18.0.", "198.18.9.")
    child = theirs.replace("oldstate=TCP_CLOSE newstate=TCP_SYN_SENT", "oldstate=TCP_LISTEN newstate=TCP_SYN_RECV")
    lost = "CPU:1 [LOST 3 EVENTS]"
    tw_ours = ("  <idle>-0 [001] ..s1. 11.0: tw_kill: (inet_twsk_kill+0x0/0x10) fam=0x2 sub=0x6 sport=80 "
               "dport=0x1234 saddr=0x10012c6 daddr=0x20012c6 netns=4026532890")
    tw_theirs = tw_ours.replace("4026532890", "4026532999")
    kept = trace.lines_of([ours, theirs, child, lost, tw_ours, tw_theirs], {"198.18.0.1", "198.18.0.2"},
                          {4026532890})
    assert kept == [ours, child, lost, tw_ours]
    assert [t.local for t in trace.parse("\n".join([ours, child]))] == ["198.18.0.1", "198.18.9.1"]


def test_an_offset_moves_every_time_and_nothing_else(main):
    """tracefs.Instance.offset (a calibrated local clock) is added to each printed time."""
    shifted = trace.parse((DATA / "trace_main.txt").read_text(), offset=-0.031163)
    assert [round(t.time - u.time, 6) for t, u in zip(shifted, main)] == [-0.031163] * len(main)
    assert [replace(t, time=0) for t in shifted] == [replace(t, time=0) for t in main]
