"""Unit tests of segment, ss-state and transition expectations (harness.expect)."""

from dataclasses import dataclass

import pytest

from harness.errors import ExpectationFailed, ExpectationSyntaxError
from harness.expect import expect_segments, expect_states, expect_transitions, match_segments, parse_transitions
from harness.notation import GAP, parse_segments
from harness.segment import Segment

SYN_OPTIONS = (("mss", 1460), ("sackOK", None), ("TS", (100, 0)), ("nop", None), ("wscale", 7))


def seg(src, flags, seq=0, length=0, ack=None, **kw):
    dst = "server" if src == "client" else "client"
    return Segment(time=0.0, src=src, dst=dst, flags=flags, seq=seq, length=length, ack=ack, **kw)


HANDSHAKE = [seg("client", "S", options=SYN_OPTIONS),
             seg("server", "S.", ack=1, options=SYN_OPTIONS),
             seg("client", ".", 1, 0, ack=1)]
DATA = [seg("client", "P.", 1, 5, ack=1), seg("server", ".", 1, 0, ack=6)]
CLOSE = [seg("client", "F.", 6, 0, ack=1), seg("server", "F.", 1, 0, ack=7), seg("client", ".", 7, 0, ack=2)]

HANDSHAKE_TEXT = """
    client > server  S   0:0(0) <mss 1460,sackOK,TS val * ecr 0,nop,wscale 7>
    server > client  S.  0:0(0) ack 1 <mss 1460,...>
    client > server  .   1:1(0) ack 1
"""


def failure(observed, text):
    with pytest.raises(ExpectationFailed) as info:
        expect_segments(observed, text)
    return str(info.value)


def marked_rows(message):
    return [row for row in message.splitlines() if row.startswith(">>")]


def test_exact_match_pairs_each_observed_segment_with_its_line():
    result = match_segments(HANDSHAKE_TEXT, HANDSHAKE)
    assert result.ok
    assert [(index, p.line) for index, p in result.pairs] == [(0, 2), (1, 3), (2, 4)]
    assert "segments: matched (3 observed" in result.report()


def test_pattern_object_and_text_give_the_same_result():
    assert match_segments(parse_segments(HANDSHAKE_TEXT), HANDSHAKE).ok


def test_nothing_else_is_the_default_so_extra_segments_fail():
    message = failure(HANDSHAKE + DATA, HANDSHAKE_TEXT)
    assert ("first difference: unexpected segment #4 'client > server P. 1:6(5) ack 1' "
            "and nothing else was expected") in message
    [row] = marked_rows(message)
    assert row.split("|")[0].strip() == ">>" and "#4" in row.split("|")[1]


def test_missing_segments_are_reported():
    message = failure(HANDSHAKE[:2], HANDSHAKE_TEXT)
    assert "first difference: expected line 4 'client > server . 1:1(0) ack 1' but no more segments were observed" \
        in message
    [row] = marked_rows(message)
    assert "client > server  .   1:1(0) ack 1" in row.split("|")[0] and row.split("|")[1].strip() == ""


def test_side_by_side_marks_the_first_difference():
    observed = [HANDSHAKE[0], seg("server", "R.", ack=1), HANDSHAKE[2]]
    message = failure(observed, HANDSHAKE_TEXT)
    [row] = marked_rows(message)
    expected_part, observed_part = row.split("|")
    assert "3  server > client  S.  0:0(0) ack 1 <mss 1460,...>" in expected_part
    assert observed_part.strip() == "#2  server > client  R.  0:0(0) ack 1"
    assert ("first difference: expected line 3 'server > client S. 0:0(0) ack 1 <mss 1460,...>', "
            "observed #2 'server > client R. 0:0(0) ack 1' (flags: expected S., observed R.)") in message
    # The matched SYN sits on one row, expected left and observed right.
    syn_row = next(r for r in message.splitlines() if "#1" in r)
    assert syn_row.index("<mss 1460,sackOK,TS val * ecr 0") < syn_row.index("|") < syn_row.index("#1")


def test_rows_are_aligned_by_the_longest_matched_prefix():
    observed = HANDSHAKE + [seg("client", "P.", 1, 3, ack=1)]
    text = HANDSHAKE_TEXT + "client > server P. 1:6(5) ack 1\n"
    message = failure(observed, text)
    rows = message.splitlines()
    marked = rows.index(marked_rows(message)[0])
    assert [("#%d" % n) in rows[marked - 4 + n] for n in (1, 2, 3, 4)] == [True] * 4
    assert "(seq: expected 1:6(5), observed 1:4(3))" in message


def test_gap_at_start_middle_and_end():
    everything = HANDSHAKE + DATA + CLOSE
    assert match_segments("...\n client > server F. 6:6(0) ack 1\n ...", everything).ok
    assert match_segments(HANDSHAKE_TEXT + "...\n client > server F.\n server > client F.\n client > server .",
                          everything).ok
    assert match_segments(HANDSHAKE_TEXT + "...", everything).ok
    assert match_segments("...\n server > client F.\n client > server . 7:7(0) ack 2", everything).ok
    assert not match_segments("...\n server > client F.", everything).ok     # the final ACK is left over


def test_gap_may_match_no_segment():
    assert match_segments(HANDSHAKE_TEXT + "...", HANDSHAKE).ok
    assert match_segments("...\n" + HANDSHAKE_TEXT, HANDSHAKE).ok
    assert match_segments("...", []).ok and match_segments("", []).ok
    assert not match_segments("", HANDSHAKE[:1]).ok


def test_gap_failure_names_the_segments_it_could_skip():
    message = failure(HANDSHAKE + DATA, HANDSHAKE_TEXT + "...\n server > client F.")
    assert "first difference: expected line 6 'server > client F.' but none of the segments #4..#5" in message
    assert [r.split("|")[0].strip() for r in message.splitlines() if "| #4" in r or "| #5" in r] == ["5  ..."] * 2


def test_repetition_counts_consecutive_segments():
    syns = [seg("client", "S")] * 3 + [seg("server", "S.", ack=1)]
    assert match_segments("c > s S {3}\n s > c S. ack 1", syns).ok
    assert match_segments("c > s S {1,3}\n s > c S. ack 1", syns).ok
    assert match_segments("c > s S {2,}\n s > c S. ack 1", syns).ok
    assert not match_segments("c > s S {4,}\n s > c S. ack 1", syns).ok
    assert not match_segments("c > s S {1,2}\n s > c S. ack 1", syns).ok
    assert match_segments("c > s S {0,1}\n c > s S {3}\n s > c S. ack 1", syns).ok


def test_repetition_failure_says_which_occurrence():
    syns = [seg("client", "S")] * 2 + [seg("server", "S.", ack=1)]
    message = failure(syns, "c > s S {3}\n s > c S. ack 1")
    assert "(occurrence 3 of {3}), observed #3 'server > client S. 0:0(0) ack 1' (direction:" in message
    assert "#3" in marked_rows(message)[0]


def test_matching_backtracks_out_of_a_greedy_repetition():
    acks = [seg("server", ".", 1, 0, ack=n) for n in (2, 3, 4)]
    result = match_segments("s > c . {1,}\n s > c . ack 4", acks)
    assert result.ok
    assert [(i, p.line) for i, p in result.pairs] == [(0, 1), (1, 1), (2, 2)]


def test_matching_backtracks_out_of_an_early_gap_choice():
    # The first F. is not followed by the expected ACK, so the gap must stretch to the second one.
    observed = [seg("client", "F.", 1, 0, ack=1), seg("server", "R.", 1, 0, ack=2),
                seg("client", "F.", 1, 0, ack=1), seg("server", ".", 1, 0, ack=2)]
    result = match_segments("...\n c > s F.\n s > c . ack 2", observed)
    assert result.ok and [i for i, _ in result.pairs] == [2, 3]


def test_dropped_segments_in_a_ladder():
    observed = HANDSHAKE[:1] + [seg("server", "S.", ack=1, dropped_by="drop-synack"), seg("server", "S.", ack=1)]
    assert match_segments("c > s S\n s > c S. ack 1 (dropped)\n s > c S. ack 1", observed).ok
    assert "(dropped: expected (dropped), observed delivered)" in failure(
        observed, "c > s S\n s > c S. ack 1\n s > c S. ack 1 (dropped)")


def test_expect_segments_returns_the_result_and_uses_the_title():
    assert expect_segments(HANDSHAKE, HANDSHAKE_TEXT).ok
    with pytest.raises(AssertionError) as info:
        expect_segments(HANDSHAKE, "c > s S", title="handshake")
    assert str(info.value).startswith("handshake: did not match (3 observed, 1 expected lines)")


def test_win_is_shown_in_observed_rows_when_the_pattern_checks_it():
    message = failure([seg("client", "S", win=100)], "c > s S win 200")
    assert "#1  client > server  S   0:0(0) win 100" in message
    assert "(win: expected 200, observed 100)" in message


@dataclass
class Row:
    state: str
    local: str = "10.0.0.2:80"
    peer: str = "10.0.0.1:40000"
    recv_q: int = 0
    send_q: int = 0


def test_states_compare_as_a_multiset():
    expect_states([Row("ESTAB"), Row("LISTEN", peer="0.0.0.0:*"), Row("ESTAB")], ["ESTAB", "ESTAB", "LISTEN"],
                  side="server")
    expect_states([], [], side="client")
    expect_states([Row("TIME-WAIT")], "TIME-WAIT", side="client")


def test_states_count_duplicates():
    with pytest.raises(ExpectationFailed) as info:
        expect_states([Row("ESTAB"), Row("LISTEN")], ["ESTAB", "ESTAB", "LISTEN"], side="server")
    assert "missing: ESTAB; unexpected: -" in str(info.value)


def test_states_failure_shows_expected_and_observed_rows():
    with pytest.raises(ExpectationFailed) as info:
        expect_states([Row("LISTEN"), Row("ESTAB", recv_q=5)], ["LISTEN", "SYN-RECV"], side="server")
    message = str(info.value)
    assert message.startswith("server sockets: ss states did not match (expected 2, observed 2)")
    assert "missing: SYN-RECV; unexpected: ESTAB" in message
    marked = marked_rows(message)
    assert marked[0].split("|")[0].strip() == ">> SYN-RECV" and marked[0].split("|")[1].strip() == ""
    assert marked[1].split("|")[1].split() == ["ESTAB", "5", "0", "10.0.0.2:80", "10.0.0.1:40000"]


def test_unknown_ss_state_names_the_column_and_the_ss_spelling():
    with pytest.raises(ExpectationSyntaxError) as info:
        expect_states([], ["LISTEN", "ESTABLISHED"], side="server")
    assert (info.value.line, info.value.column) == (1, 8)
    assert "unknown state 'ESTABLISHED'; that is the kernel spelling, here write 'ESTAB'" in str(info.value)
    with pytest.raises(ExpectationSyntaxError, match="expected one of ESTAB"):
        expect_states([], ["BOGUS"], side="server")


CONNECT_AND_CLOSE = ["CLOSE", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"]


@pytest.mark.parametrize("expected", [
    "CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT",
    "CLOSE -> SYN_SENT -> ESTABLISHED -> ... -> TIME_WAIT",
    "... -> ESTABLISHED -> ...",
    "CLOSE -> ...",
    "... -> FIN_WAIT2 -> TIME_WAIT",
    "CLOSE->SYN_SENT->ESTABLISHED->...",
    "CLOSE -> SYN_SENT -> ... -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT",
], ids=["exact", "middle", "around", "end", "start", "no-spaces", "empty-gap"])
def test_transitions_that_match(expected):
    expect_transitions(CONNECT_AND_CLOSE, expected)


def test_transitions_accept_tcp_prefixed_observed_states():
    expect_transitions(["TCP_CLOSE", "TCP_SYN_SENT"], "CLOSE -> SYN_SENT")


@pytest.mark.parametrize("expected, difference", [
    ("CLOSE -> SYN_SENT -> CLOSE",
     "first difference: after CLOSE -> SYN_SENT, expected CLOSE, observed ESTABLISHED (state 3)"),
    ("CLOSE -> SYN_SENT -> ESTABLISHED",
     "first difference: after CLOSE -> SYN_SENT -> ESTABLISHED, unexpected state FIN_WAIT1 (state 4) "
     "and nothing else was expected"),
    ("CLOSE -> ... -> TIME_WAIT -> CLOSE",
     "first difference: after CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT, "
     "expected CLOSE but the socket made no more transitions"),
    ("... -> CLOSE_WAIT -> ...", "expected CLOSE_WAIT somewhere after the '...', but the socket never entered it"),
    ("LISTEN -> ...", "first difference: at the start, expected LISTEN, observed CLOSE (state 1)"),
], ids=["wrong", "extra", "missing", "never", "start"])
def test_transitions_that_differ(expected, difference):
    with pytest.raises(ExpectationFailed) as info:
        expect_transitions(CONNECT_AND_CLOSE, expected)
    message = str(info.value)
    assert f"  expected: {expected}" in message
    assert "  observed: CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT" in message
    assert difference in message


@pytest.mark.parametrize("text, column, message", [
    ("CLOSE SYN_SENT", 7, "expected '->', found 'SYN_SENT'"),
    ("CLOSE -> ESTAB", 10, "that is the ss spelling, here write 'ESTABLISHED'"),
    ("CLOSE -> SYN_SNET", 10, "unknown state 'SYN_SNET'; expected one of ESTABLISHED"),
    ("CLOSE -> -> LISTEN", 10, "expected a state name or '...', found '->'"),
    ("CLOSE ->", 9, "expected a state name or '...', found end of text"),
    ("CLOSE => LISTEN", 7, "expected '->', found '=>'"),
], ids=["no-arrow", "ss-name", "typo", "double-arrow", "trailing-arrow", "bad-arrow"])
def test_transition_syntax_errors(text, column, message):
    with pytest.raises(ExpectationSyntaxError) as info:
        expect_transitions(CONNECT_AND_CLOSE, text)
    assert (info.value.line, info.value.column) == (1, column)
    assert message in str(info.value)


def test_parse_transitions_gives_names_and_gaps():
    assert parse_transitions("CLOSE -> ... -> tcp_established") == ["CLOSE", GAP, "ESTABLISHED"]


@dataclass
class RowWithPorts:
    state: str | None
    recv_q: int
    send_q: int
    local: str
    local_port: int | None
    peer: str
    peer_port: int | None


def test_states_show_ports_and_rows_without_a_state():
    rows = [RowWithPorts("ESTAB", 0, 0, "::1", 80, "::1", 40000), RowWithPorts(None, 0, 0, "0.0.0.0", 80, "*", None)]
    with pytest.raises(ExpectationFailed) as info:
        expect_states(rows, ["ESTAB", "LISTEN"], side="server")
    message = str(info.value)
    assert "ESTAB           0      0  [::1]:80 [::1]:40000" in message
    assert "?               0      0  0.0.0.0:80 *" in message
    assert "missing: LISTEN; unexpected: ?" in message


def test_routed_segments_point_towards_the_server_in_a_text_ladder():
    """A routed lab's router sits on the client's side: router > server points right, server > router left."""
    from harness.ladder import text_ladder
    lines = text_ladder(["router > server  S 0:0(0)", "server > router  S. 0:0(0) ack 1",
                         "client > router  . 1:1(0)", "router > client  . 1:1(0)"]).splitlines()[1:]
    assert [line.startswith("|--") for line in lines] == [True, False, True, False]
