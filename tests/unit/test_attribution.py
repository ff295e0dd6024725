"""harness.kernels.attribution: a difference is the emulator's only on evidence, else the kernel's."""

from harness.compare import compare_runs
from harness.kernels.attribution import attribute, summary

SYN = "client > server  S   0:0(0) <mss 1460,sackOK,TS,nop,wscale 7>"
SYNACK = "server > client  S.  0:0(0) ack 1 <mss 1460,sackOK,TS,nop,wscale 7>"
FIN = "client > server  F.  1:1(0) ack 1 <nop,nop,TS>"
ACK = "server > client  .   1:1(0) ack 2 <nop,nop,TS>"


def run(kernel, emulator, cases):
    return {"run": kernel, "kernel": kernel, "kernel_version": kernel, "emulator": emulator, "settings": {},
            "cases": [dict({"outcome": "passed", "verdict": None, "sysctls": {}}, **c) for c in cases]}


def case(cid, segments, **kw):
    return dict({"id": cid, "behaviour": {"segments": segments, "ss": {}, "transitions": [], "steps": {}}}, **kw)


def test_extra_retransmissions_under_tcg_are_the_emulators():
    host = run("6.18.44", None, [case("a", [SYN, SYNACK, FIN, ACK])])
    guest = run("6.1.192", "TCG", [case("a", [SYN, SYNACK, FIN, FIN, ACK])])
    cmp = compare_runs([host, guest])
    [a] = attribute(cmp)
    assert (a.case, a.cause) == ("a", "emulator") and "1 extra retransmission(s) under TCG" in a.why
    assert summary(cmp, [a]) == ["B 6.1.192 [TCG] defaults: 0 difference(s) from the kernel, 1 from the emulator's timing, 0 from how TIME-WAIT was observed"]


def test_the_same_extra_retransmission_without_emulation_is_the_kernels():
    a = run("6.18.44", None, [case("a", [SYN, SYNACK, FIN, ACK])])
    b = run("6.19.1", None, [case("a", [SYN, SYNACK, FIN, FIN, ACK])])
    assert [x.cause for x in attribute(compare_runs([a, b]))] == ["kernel"]


def test_changed_options_and_a_missing_sysctl_are_the_kernels():
    host = run("6.18.44", None, [case("a", [SYN, SYNACK])])
    other = SYN.replace("wscale 7", "wscale 8")
    guest = run("6.1.192", "TCG", [case("a", [other, SYNACK], sysctls={"client:net.ipv4.tcp_rto_min_us": "absent"})])
    [a] = attribute(compare_runs([host, guest]))
    assert a.cause == "kernel" and "lacks net.ipv4.tcp_rto_min_us" in a.why


def test_a_harness_deadline_under_tcg_is_the_emulators_and_a_plain_failure_the_kernels():
    host = run("6.18.44", None, [case("t", [SYN]), case("f", [SYN])])
    guest = run("6.1.192", "TCG", [
        dict(case("t", [SYN]), outcome="failed", behaviour=None,
             longrepr="StepTimeout: client: socket program did not report ready within 50.0 s"),
        dict(case("f", [SYN]), outcome="failed", behaviour=None, longrepr="AssertionError: expected RST")])
    causes = {a.case: (a.cause, a.why) for a in attribute(compare_runs([host, guest]))}
    assert causes["t"][0] == "emulator" and "did not report ready" in causes["t"][1]
    assert causes["f"] == ("kernel", "outcome passed -> failed")


def hist(socket, *states):
    return {"socket": socket, "states": list(states)}


def tw_case(cid, transitions, source):
    c = case(cid, [SYN, SYNACK, FIN, ACK], timewait_source=source)
    c["behaviour"]["transitions"] = transitions
    return c


HOST_SIDE = [hist("client:eph > server:50000", "CLOSE", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE")]
PROBED = [hist("client:eph > server:50000", "CLOSE", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"),
          hist("wire:eph > wire:50000", "TIME_WAIT", "CLOSE")]


def test_time_wait_edges_only_the_probes_see_are_observation_not_kernel():
    host = run("6.18.44", None, [tw_case("a", HOST_SIDE, "ss (this kernel has no kprobe events)")])
    guest = run("6.1.192", "TCG", [tw_case("a", PROBED, "kprobe")])
    [a] = attribute(compare_runs([host, guest]))
    assert a.cause == "observation" and "timewait probes on B" in a.why and "ss (this kernel" in a.why


def test_the_same_edges_with_one_source_or_another_difference_are_the_kernels():
    host = run("6.18.44", None, [tw_case("a", HOST_SIDE, "kprobe")])
    guest = run("6.1.192", "TCG", [tw_case("a", PROBED, "kprobe")])
    assert [x.cause for x in attribute(compare_runs([host, guest]))] == ["kernel"]      # same source: real
    other = [hist("client:eph > server:50000", "CLOSE", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "CLOSING",
                  "TIME_WAIT")]
    host = run("6.18.44", None, [tw_case("a", HOST_SIDE, "ss (no kprobes)")])
    guest = run("6.1.192", "TCG", [tw_case("a", other, "kprobe")])
    assert [x.cause for x in attribute(compare_runs([host, guest]))] == ["kernel"]      # CLOSING is not FIN_WAIT2


def test_the_same_segments_in_another_order_under_tcg_are_the_emulators():
    """A crossed segment's ACK before or after the FIN: the same distinct segments, reordered (and
    repeated), is the emulator's timing when a run was emulated; a new segment, or no emulator, is
    the kernel's."""
    host = run("6.18.44", None, [case("a", [SYN, SYNACK, ACK, FIN]), case("b", [SYN, SYNACK, ACK, FIN])])
    guest = run("6.12.118", "TCG", [case("a", [SYN, SYN, SYNACK, FIN, ACK]),
                                    case("b", [SYN, SYNACK, FIN, ACK.replace("ack 2", "ack 3")])])
    causes = {a.case: (a.cause, a.why) for a in attribute(compare_runs([host, guest]))}
    assert causes["a"][0] == "emulator" and "another order under TCG, 1 more repeated" in causes["a"][1]
    assert causes["b"][0] == "kernel"
    plain = run("6.19.1", None, [case("a", [SYN, SYN, SYNACK, FIN, ACK])])
    assert [x.cause for x in attribute(compare_runs([host, plain]))] == ["kernel"]


def test_a_dsack_answering_a_repeat_under_tcg_is_the_emulators():
    """The receiver's D-SACK for a SYN+ACK it got twice exists only because of the repeat."""
    dsack = "client > server  .   1:1(0) ack 1 <nop,nop,TS,nop,nop,sack 1>"
    plain = "client > server  .   1:1(0) ack 1 <nop,nop,TS>"
    base = run("7.3.4", "TCG", [case("a", [SYN, SYNACK, plain, FIN])])
    again = run("7.3.4", "TCG", [case("a", [SYN, SYNACK, SYNACK, dsack, FIN])])
    [a] = attribute(compare_runs([base, again]))
    assert a.cause == "emulator"
    host = run("6.18.44", None, [case("a", [SYN, SYNACK, plain, FIN])])
    other = run("6.19.1", None, [case("a", [SYN, SYNACK, SYNACK, dsack, FIN])])
    assert [x.cause for x in attribute(compare_runs([host, other]))] == ["kernel"]


def test_timing_changed_by_a_setting_the_kernel_lacks_is_the_kernels():
    """6.1 has no tcp_rto_min_us: its extra, reordered retransmissions follow from that, not the emulator."""
    host = run("6.18.44", None, [case("a", [SYN, SYNACK, ACK, FIN])])
    guest = run("6.1.192", "TCG", [case("a", [SYN, SYNACK, FIN, FIN, ACK],
                                        sysctls={"client:net.ipv4.tcp_rto_min_us": "absent"})])
    [a] = attribute(compare_runs([host, guest]))
    assert a.cause == "kernel" and "lacks net.ipv4.tcp_rto_min_us" in a.why


def test_a_delayed_ack_before_a_slow_reply_under_tcg_is_the_emulators():
    """ONE-THREAD under TCG: the server's reply left after the delayed-ACK timer, so a pure ACK went
    first, acknowledging what the reply acknowledges again. An ACK nothing re-acknowledges, one
    acknowledging something else, or no emulator: the kernel's."""
    request = "client > server  P.  1:4(3) ack 1 <nop,nop,TS>"
    reply = "server > client  P.  1:54(53) ack 4 <nop,nop,TS>"
    early = "server > client  .   1:1(0) ack 4 <nop,nop,TS>"
    host = run("6.18.44", None, [case(c, [SYN, SYNACK, request, reply]) for c in "abcd"])
    guest = run("6.12.118", "TCG", [
        case("a", [SYN, SYNACK, request, early, reply]),
        case("b", [SYN, SYNACK, request, reply, early]),                            # nothing after it
        case("c", [SYN, SYNACK, request, early.replace("ack 4", "ack 3"), reply]),  # another ack
        case("d", [SYN, SYNACK, request, early, reply.replace("1:54(53)", "1:60(59)")]),   # another reply
    ])
    causes = {a.case: (a.cause, a.why) for a in attribute(compare_runs([host, guest]))}
    assert causes["a"] == ("emulator", "1 delayed ACK(s) under TCG where the other run's reply carried the ACK, "
                                       "the segments otherwise equal")
    assert {c: causes[c][0] for c in "bcd"} == {"b": "kernel", "c": "kernel", "d": "kernel"}
    # the guest as the reference: the extra ACK is on the emulated side still
    assert [x.cause for x in attribute(compare_runs([guest, host]))][0] == "emulator"
    plain = run("6.19.1", None, [case("a", [SYN, SYNACK, request, early, reply])])
    assert [x.cause for x in attribute(compare_runs([host, plain]))] == ["kernel"]
    # the extra ACK in the run that was not emulated: not the emulator's slowness
    assert [x.cause for x in attribute(compare_runs([run("6.12.118", "TCG", [case("a", [SYN, SYNACK, request, reply])]),
                                                     plain]))] == ["kernel"]


def test_a_setting_both_runs_lacked_does_not_make_timing_the_kernels():
    """A 6.1 guest against 6.1's own baseline: both lack tcp_rto_min_us, so a retransmission fewer
    under TCG is the emulator's; against a run that had the setting, still the kernel's."""
    lacks = {"client:net.ipv4.tcp_rto_min_us": "absent"}
    base = run("6.1.192", "TCG", [case("a", [SYN, SYNACK, FIN, FIN, ACK], sysctls=lacks)])
    again = run("6.1.192", "TCG", [case("a", [SYN, SYNACK, FIN, ACK], sysctls=lacks)])
    [a] = attribute(compare_runs([base, again]))
    assert a.cause == "emulator" and "1 fewer retransmission(s) under TCG" in a.why
    had = run("6.1.192", "TCG", [case("a", [SYN, SYNACK, FIN, FIN, ACK])])
    [b] = attribute(compare_runs([had, again]))
    assert b.cause == "kernel" and "lacks net.ipv4.tcp_rto_min_us" in b.why


def test_a_fin_resent_with_a_newer_ack_is_a_retransmission_a_new_pure_ack_is_not():
    """SIM-CLOSE on 6.1 under TCG: the client's FIN went again after the server's FIN, so it carries
    ack 2; the baseline's went again before it. Both are the FIN's retransmission. An extra pure ACK
    with another ack number is not a repeat of anything."""
    fin2 = "client > server  F.  1:1(0) ack 2 <nop,nop,TS>"
    sfin = "server > client  F.  1:1(0) ack 1 <nop,nop,TS>"
    cack = "client > server  .   2:2(0) ack 2 <nop,nop,TS>"
    sack = "server > client  .   2:2(0) ack 2 <nop,nop,TS>"
    dsack = "server > client  .   2:2(0) ack 2 <nop,nop,TS,nop,nop,sack 1>"
    lacks = {"client:net.ipv4.tcp_rto_min_us": "absent"}
    base = run("6.1.192", "TCG", [case("a", [SYN, SYNACK, FIN, FIN, sfin, cack, sack, dsack], sysctls=lacks)])
    again = run("6.1.192", "TCG", [case("a", [SYN, SYNACK, FIN, sfin, cack, fin2, sack], sysctls=lacks)])
    [a] = attribute(compare_runs([base, again]))
    assert a.cause == "emulator" and "another order" in a.why
    host = run("6.18.44", None, [case("a", [SYN, SYNACK, FIN, sfin, cack, sack])])
    plain = run("6.19.1", None, [case("a", [SYN, SYNACK, FIN, sfin, cack, fin2, sack])])
    assert [x.cause for x in attribute(compare_runs([host, plain]))] == ["kernel"]
    more_acks = run("6.1.192", "TCG", [case("a", [SYN, SYNACK, FIN, sfin, cack, cack.replace("ack 2", "ack 3"), sack])])
    [b] = attribute(compare_runs([host, more_acks]))
    assert b.cause == "kernel", b.why


def test_fewer_repeats_under_tcg_and_a_dsack_on_the_same_segments_are_the_kernels():
    """Slow emulated steps make a run repeat more, never less: 6.1 sends two SYNs where kernels with
    linear SYN timeouts send three within the same give-up time. And a D-SACK on the same segments,
    in the same order with the same repeats, answers no repeat the other run lacked: 6.1 D-SACKs the
    crossed SYN+ACK of a simultaneous open, later kernels do not. Both were put down to the emulator
    ("the same segments in another order") in every matrix until 2026-11-30."""
    dsack = "client > server  .   1:1(0) ack 1 <nop,nop,TS,nop,nop,sack 1>"
    plain = "client > server  .   1:1(0) ack 1 <nop,nop,TS>"
    host = run("6.18.44", None, [case("syns", [SYN + " (dropped)"] * 3), case("open", [SYN, SYNACK, SYNACK, plain])])
    old = run("6.1.192", "TCG", [case("syns", [SYN + " (dropped)"] * 2), case("open", [SYN, SYNACK, SYNACK, dsack])])
    causes = {a.case: (a.cause, a.why) for a in attribute(compare_runs([host, old]))}
    assert causes["syns"] == ("kernel", "differs in segments: 1 fewer repeat(s) on B, the emulated run repeating less")
    assert causes["open"] == ("kernel", "differs in segments: the same segments, only their SACK blocks differ")
    more = run("6.1.192", "TCG", [case("syns", [SYN + " (dropped)"] * 4), case("open", [SYN, SYNACK, SYNACK, SYNACK, dsack])])
    assert {a.case: a.cause for a in attribute(compare_runs([host, more]))} == {"syns": "emulator", "open": "emulator"}
