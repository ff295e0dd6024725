"""Unit tests of the expected-segment notation parser (harness.notation)."""

import pytest

from harness.errors import ExpectationSyntaxError
from harness.notation import ANY, GAP, OptionsPattern, SegmentPattern, parse_segments
from harness.segment import Segment

SYN_OPTIONS = (("mss", 1460), ("sackOK", None), ("TS", (100, 0)), ("nop", None), ("wscale", 7))


def seg(src, flags, seq=0, length=0, ack=None, **kw):
    dst = "server" if src == "client" else "client"
    return Segment(time=0.0, src=src, dst=dst, flags=flags, seq=seq, length=length, ack=ack, **kw)


def one(line):
    pattern = parse_segments(line)
    assert len(pattern.items) == 1
    return pattern.items[0]


def test_handshake_lines_parse_every_field():
    pattern = parse_segments("""
        client > server  S   0:0(0) <mss 1460,sackOK,TS val * ecr 0,nop,wscale 7>
        server > client  S.  0:0(0) ack 1 <mss 1460,...>
        client > server  .   1:1(0) ack 1
    """)
    syn, synack, ack = pattern.items
    assert (syn.src, syn.dst, syn.flags, syn.seq, syn.end, syn.length, syn.ack) == ("client", "server", "S", 0, 0, 0, None)
    assert syn.options == OptionsPattern(
        (("mss", 1460), ("sackOK", None), ("TS", (ANY, 0)), ("nop", None), ("wscale", 7)), open=False)
    assert (synack.src, synack.flags, synack.ack) == ("server", "S.", 1)
    assert synack.options == OptionsPattern((("mss", 1460),), open=True)
    assert (ack.flags, ack.seq, ack.end, ack.length, ack.ack, ack.options) == (".", 1, 1, 0, 1, None)
    assert [p.line for p in pattern.items] == [2, 3, 4] == pattern.lines
    assert "client > server" in pattern.source


def test_short_and_wildcard_directions():
    assert (one("c > s S").src, one("c > s S").dst) == ("client", "server")
    assert (one("s>c S.").src, one("s>c S.").dst) == ("server", "client")
    anyway = one("* R")
    assert anyway.matches(seg("client", "R")) and anyway.matches(seg("server", "R"))
    assert not one("client > server R").matches(seg("server", "R"))


def test_flags_compare_as_a_set_and_normalise_to_tcpdump_order():
    p = one("client > server PF. 1:6(5)")
    assert p.flags == "FP."
    assert p.matches(seg("client", "FP.", 1, 5))
    assert not p.matches(seg("client", "P.", 1, 5))
    assert p.matches(seg("client", "PF.", 1, 5))       # a set: the observed letter order does not matter
    assert one("c > s *").matches(seg("client", "FPRU."))
    assert not one("c > s S").matches(seg("client", "S."))


def test_unwritten_fields_are_not_checked():
    p = one("server > client S.")
    assert p.matches(seg("server", "S.", 123, 0, ack=99, win=5, options=SYN_OPTIONS))


def test_seq_range_numbers_and_wildcards():
    p = one("client > server P. 1:6(5)")
    assert p.matches(seg("client", "P.", 1, 5))
    assert p.mismatch(seg("client", "P.", 1, 4)) == "seq: expected 1:6(5), observed 1:5(4)"
    loose = one("client > server P. 1:*(*)")
    assert loose.matches(seg("client", "P.", 1, 1000)) and not loose.matches(seg("client", "P.", 2, 10))


def test_ack_and_win_numbers_and_wildcards():
    assert one("s > c . ack 6").mismatch(seg("server", ".", 1, 0, ack=2)) == "ack: expected 6, observed 2"
    assert one("s > c . ack *").matches(seg("server", ".", ack=77))
    # `ack N` (even `ack *`) on a segment without the ACK flag must fail.
    assert "ack: expected *, observed no ack" in one("c > s S ack *").mismatch(seg("client", "S"))
    assert one("c > s . win 512").mismatch(seg("client", ".", ack=1, win=64)) == "win: expected 512, observed 64"
    assert one("c > s . win *").matches(seg("client", ".", ack=1, win=64))


def test_options_exact_list_must_match_in_order_and_completely():
    p = one("c > s S <mss 1460,sackOK,TS val * ecr 0,nop,wscale 7>")
    assert p.matches(seg("client", "S", options=SYN_OPTIONS))
    assert "unexpected option 6 'eol'" in p.mismatch(seg("client", "S", options=SYN_OPTIONS + (("eol", None),)))
    assert "option 5 'wscale 7' missing" in p.mismatch(seg("client", "S", options=SYN_OPTIONS[:4]))
    wrong = (("mss", 536),) + SYN_OPTIONS[1:]
    assert p.mismatch(seg("client", "S", options=wrong)) == \
        "options: option 1: expected 'mss 1460', observed 'mss 536'"


def test_options_prefix_and_any():
    assert one("c > s S <mss 1460,...>").matches(seg("client", "S", options=SYN_OPTIONS))
    assert not one("c > s S <mss 536,...>").matches(seg("client", "S", options=SYN_OPTIONS))
    assert one("c > s S <...>").matches(seg("client", "S", options=()))
    assert one("c > s S <>").matches(seg("client", "S"))
    assert not one("c > s S <>").matches(seg("client", "S", options=SYN_OPTIONS))
    assert one("c > s S <mss *,sackOK,TS val * ecr *,...>").matches(seg("client", "S", options=SYN_OPTIONS))


def test_sack_blocks():
    observed = seg("server", ".", ack=1, options=(("nop", None), ("nop", None), ("sack", ((10, 20), (30, 40)))))
    assert one("s > c . <nop,nop,sack 10:20 30:*>").matches(observed)
    assert not one("s > c . <nop,nop,sack 10:20>").matches(observed)
    assert one("s > c . <nop,nop,sack *>").matches(observed)


def test_dropped_marker():
    p = one("server > client R. 0:0(0) ack 1 (dropped)")
    assert p.dropped
    assert p.matches(seg("server", "R.", ack=1, dropped_by="drop-rst"))
    assert p.mismatch(seg("server", "R.", ack=1)) == "dropped: expected (dropped), observed delivered"
    assert one("server > client R.").matches(seg("server", "R.", dropped_by="drop-rst"))


@pytest.mark.parametrize("text, low, high", [("{3}", 3, 3), ("{1,3}", 1, 3), ("{2,}", 2, None), ("{0,1}", 0, 1)],
                         ids=["exact", "range", "open", "optional"])
def test_repetition(text, low, high):
    p = one(f"client > server S 0:0(0) {text}")
    assert (p.min_count, p.max_count) == (low, high)
    assert p.text().endswith(text)


def test_gap_lines_comments_and_blank_lines():
    pattern = parse_segments("""
        # the handshake, then anything
        ...
        client > server S   # first SYN

        ...
        ...   # twice in a row is the same as once
        server > client R.
        ...
    """)
    assert pattern.items[0] is GAP and pattern.items[2] is GAP and pattern.items[4] is GAP
    assert isinstance(pattern.items[1], SegmentPattern) and len(pattern.items) == 5
    assert pattern.lines == [3, 4, 6, 8, 9]


def test_text_is_normalised_and_parses_back():
    source = "s>c  PF. 1:6(5)  ack 1 win * <TS val * ecr 0,...>  (dropped) {1,2}  # note"
    p = one(source)
    assert p.text() == "server > client  FP. 1:6(5) ack 1 win * <TS val * ecr 0,...> (dropped) {1,2}"
    again = one(p.text())
    assert again == p


@pytest.mark.parametrize("text, line, column, message", [
    ("client > server  P.  1:6(5) akc 1", 1, 29,
     "expected 'ack N', 'win N', '<options>', '(dropped)', '{N}' or end of line, found 'akc'"),
    ("\n    client > server  S\n    clinet > server  S.", 3, 5,
     "expected 'client > server', 'server > client' or '*', found 'clinet'"),
    ("client server S", 1, 8, "expected '>' after 'client', found 'server'"),
    ("client > client S", 1, 10, "names 'client' twice"),
    ("client > server SX", 1, 17, "expected flags such as 'S', 'S.'"),
    ("client > server", 1, 16, "found end of line"),
    ("  client > server S 0:1(0)", 1, 21, "END must be SEQ+LEN = 0, found 1"),
    ("client > server S 1-2(1)", 1, 19, "expected 'SEQ:END(LEN)' such as 1:6(5), found '1-2(1)'"),
    ("client > server . ack x", 1, 23, "expected a number or '*' after 'ack', found 'x'"),
    ("client > server . ack 1 ack 2", 1, 25, "'ack N' is given twice (first at column 19)"),
    ("client > server S <mss 1460,sackOK", 1, 19, "'<' is never closed"),
    ("client > server S <mss>", 1, 23, "expected a number or '*' after 'mss', found '>'"),
    ("client > server S <msss 1460>", 1, 20, "unknown option 'msss'"),
    ("client > server S <TS val 1 ecx 2>", 1, 29, "expected 'ecr' after 'TS val 1', found 'ecx'"),
    ("client > server S <...,nop>", 1, 24, "expected '>' after '...', found 'nop'"),
    ("client > server S <mss 1,,nop>", 1, 26, "expected an option, found ','"),
    ("client > server S <nop 4>", 1, 24, "expected ',' or '>' after option 'nop', found '4'"),
    ("client > server R (drop)", 1, 19, "expected '(dropped)', found '(drop)'"),
    ("client > server S {3,2}", 1, 19, "the maximum is below the minimum"),
    ("client > server S {x}", 1, 19, "expected a repetition"),
    ("client > server S 0:0(0)ack 1", 1, 19, "found '0:0(0)ack'"),
    ("client > server S <mss 1>ack 1", 1, 26, "expected a space after '<options>', found 'ack'"),
    ("...  more", 1, 6, "expected end of line after '...', found 'more'"),
], ids=lambda v: None)
def test_syntax_errors_report_line_and_column(text, line, column, message):
    with pytest.raises(ExpectationSyntaxError) as info:
        parse_segments(text)
    assert (info.value.line, info.value.column) == (line, column), str(info.value)
    assert message in str(info.value)
    assert str(info.value).startswith(f"line {line}, column {column}: ")


def test_syntax_error_caret_points_at_the_token_in_the_original_text():
    text = "\n        client > server  S\n        server > client  S.  0:0(0) ack 1 wn 5\n"
    with pytest.raises(ExpectationSyntaxError) as info:
        parse_segments(text)
    source_line, caret_line = str(info.value).splitlines()[1:3]
    assert source_line.strip() == "server > client  S.  0:0(0) ack 1 wn 5"
    assert source_line[caret_line.index("^"):].startswith("wn 5")


HANDSHAKE = """
    client > server  S   0:0(0)
    server > client  S.  0:0(0) ack 1
    client > server  .   1:1(0) ack 1
"""


def test_handshake_fragment_is_the_three_segments():
    """`handshake` expands to the three lines cases used to write out, each carrying the fragment's line."""
    pattern = parse_segments("\n    handshake\n    client > server  F.  1:1(0) ack 1\n")
    written = parse_segments(HANDSHAKE)
    assert [p.text() for p in pattern.items[:3]] == [p.text() for p in written.items]
    assert pattern.lines == [2, 2, 2, 3]
    reverse = parse_segments("handshake server > client")
    assert [(p.src, p.flags) for p in reverse.items] == [("server", "S"), ("client", "S."), ("server", ".")]


def test_handshake_fragment_matches_and_fails_like_the_lines():
    from harness.expect import ExpectationFailed, expect_segments
    observed = [seg("client", "S", options=SYN_OPTIONS), seg("server", "S.", ack=1), seg("client", ".", seq=1, ack=1)]
    expect_segments(observed, "handshake")
    with pytest.raises(ExpectationFailed) as info:
        expect_segments(observed[:2] + [seg("client", ".", seq=1, ack=2)], "handshake")
    assert "expected line 1 'client > server . 1:1(0) ack 1', observed #3" in str(info.value)


@pytest.mark.parametrize("text, column, message", [
    ("handshake client", 17, "expected '>' after 'client'"),
    ("handshake * ", 11, "expected 'client > server' or 'server > client' after 'handshake'"),
    ("handshake client > server S", 27, "expected end of line after the handshake's direction"),
], ids=["no-arrow", "any-direction", "trailing"])
def test_handshake_fragment_syntax_errors(text, column, message):
    with pytest.raises(ExpectationSyntaxError) as info:
        parse_segments(text)
    assert message in str(info.value) and info.value.column == column, str(info.value)
