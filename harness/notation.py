"""The expected-segment notation: one tcpdump-like line per segment, '...' for any segments between.

A named fragment stands for lines cases write again and again: `handshake` is the three-way
handshake of the client to the server (`handshake server > client` the other way round):

    client > server  S   0:0(0)
    server > client  S.  0:0(0) ack 1
    client > server  .   1:1(0) ack 1
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.errors import ExpectationSyntaxError
from harness.errors import hide_own_frames as __tracebackhide__  # noqa: F401 (read by pytest)
from harness.segment import FLAG_ORDER, Segment


class _Marker:
    """A token that stands for "anything": ANY ('*') for a value, GAP ('...') for segments."""

    def __init__(self, text: str):
        self._text = text

    def __repr__(self) -> str:
        return self._text

    def text(self) -> str:
        return self._text


ANY = _Marker("*")      # any value, but the field must be there (`ack *` fails on a segment without ACK)
GAP = _Marker("...")    # any number (0 or more) of segments

HOSTS = {"client": "client", "c": "client", "server": "server", "s": "server"}
FLAG_LETTERS = "".join(letter for letter, _ in FLAG_ORDER)
KNOWN_OPTIONS = ("mss", "wscale", "sackOK", "nop", "eol", "TS", "sack")
FIELDS = (("range", "'SEQ:END(LEN)'"), ("ack", "'ack N'"), ("win", "'win N'"),
          ("options", "'<options>'"), ("dropped", "'(dropped)'"), ("repeat", "'{N}'"))
_NUM = r"(\d+|\*)"
_RANGE_RE = re.compile(rf"{_NUM}:{_NUM}\({_NUM}\)")
_REPEAT_RE = re.compile(r"\{(\d+)(?:(,)(\d*))?\}")
_FLAGS_RE = re.compile(rf"\*|[{FLAG_LETTERS}]*\.?")
_WORD_RE = re.compile(r"[^\s#]*")
_HOST_RE = re.compile(r"[A-Za-z]+")


def _num(word: str):
    """'*' -> ANY, digits -> int, anything else -> None."""
    if word == "*":
        return ANY
    return int(word) if word.isdigit() else None


def _show(value) -> str:
    return "*" if value is ANY else str(value)


def _value_ok(pattern, observed) -> bool:
    # Option values nest (TS is (val, ecr), sack is ((a, b), ...)), so wildcards may sit at any depth.
    if pattern is ANY:
        return True
    if isinstance(pattern, tuple):
        return (isinstance(observed, (tuple, list)) and len(pattern) == len(observed)
                and all(_value_ok(p, o) for p, o in zip(pattern, observed)))
    return pattern == observed


def option_text(name: str, value) -> str:
    """One option as the notation writes it, e.g. 'TS val * ecr 0'."""
    if name == "TS":
        return f"TS val {_show(value[0])} ecr {_show(value[1])}"
    if name == "sack":
        return "sack *" if value is ANY else "sack " + " ".join(f"{_show(a)}:{_show(b)}" for a, b in value)
    return name if value is None else f"{name} {_show(value)}"


@dataclass(frozen=True)
class OptionsPattern:
    """A '<...>' list: options in order, exactly, or as a prefix when it ends with '...'."""

    items: tuple = ()
    open: bool = False

    def text(self) -> str:
        parts = [option_text(name, value) for name, value in self.items] + (["..."] if self.open else [])
        return "<" + ",".join(parts) + ">"

    def mismatch(self, observed: tuple) -> str | None:
        """Why the observed options do not fit, or None when they do."""
        for index, (name, value) in enumerate(self.items, 1):
            if index > len(observed):
                return f"option {index} '{option_text(name, value)}' missing"
            obs_name, obs_value = observed[index - 1]
            if obs_name != name or not _value_ok(value, obs_value):
                return (f"option {index}: expected '{option_text(name, value)}', "
                        f"observed '{option_text(obs_name, obs_value)}'")
        if not self.open and len(observed) > len(self.items):
            extra = observed[len(self.items)]
            return f"unexpected option {len(self.items) + 1} '{option_text(*extra)}'"
        return None


@dataclass(frozen=True)
class SegmentPattern:
    """One expected segment; fields left as None were not written and are not checked."""

    line: int
    src: str | None                 # None with dst None: '*', either direction
    dst: str | None
    flags: object                   # normalised tcpdump flags ("FP.") or ANY
    seq: object = None
    end: object = None
    length: object = None
    ack: object = None
    win: object = None
    options: OptionsPattern | None = None
    dropped: bool = False
    min_count: int = 1
    max_count: int | None = 1       # None: no upper bound

    def matches(self, seg: Segment) -> bool:
        """True when `seg` fits every field written on this line."""
        return self.mismatch(seg) is None

    def mismatch(self, seg: Segment) -> str | None:
        """The first field where `seg` differs, e.g. 'ack: expected 1, observed 2', or None."""
        if self.src is not None and (seg.src, seg.dst) != (self.src, self.dst):
            return f"direction: expected {self.src} > {self.dst}, observed {seg.src} > {seg.dst}"
        if self.flags is not ANY and set(self.flags) != set(seg.flags):
            return f"flags: expected {self.flags}, observed {seg.flags}"
        if self.seq is not None and not all(_value_ok(p, o) for p, o in
                                            ((self.seq, seg.seq), (self.end, seg.end), (self.length, seg.length))):
            return f"seq: expected {self._range_text()}, observed {seg.seq}:{seg.end}({seg.length})"
        if self.ack is not None and (seg.ack is None or not _value_ok(self.ack, seg.ack)):
            observed = "no ack (ACK flag off)" if seg.ack is None else seg.ack
            return f"ack: expected {_show(self.ack)}, observed {observed}"
        if self.win is not None and not _value_ok(self.win, seg.win):
            return f"win: expected {self.win}, observed {seg.win}"
        if self.options is not None:
            why = self.options.mismatch(tuple(seg.options))
            if why:
                return f"options: {why}"
        if self.dropped and not seg.dropped_by:
            return "dropped: expected (dropped), observed delivered"
        return None

    def _range_text(self) -> str:
        return f"{_show(self.seq)}:{_show(self.end)}({_show(self.length)})"

    def text(self) -> str:
        """The line in normalised form, laid out like Segment.text()."""
        direction = "*" if self.src is None else f"{self.src} > {self.dst}"
        fields = [None if self.seq is None else self._range_text(),
                  None if self.ack is None else f"ack {_show(self.ack)}",
                  None if self.win is None else f"win {_show(self.win)}",
                  None if self.options is None else self.options.text(),
                  "(dropped)" if self.dropped else None,
                  None if (self.min_count, self.max_count) == (1, 1) else self.repeat_text()]
        return " ".join([f"{direction}  {_show(self.flags):<3}"] + [f for f in fields if f]).rstrip()

    def repeat_text(self) -> str:
        """The repetition as written: '{3}', '{1,3}' or '{2,}'."""
        if self.min_count == self.max_count:
            return f"{{{self.min_count}}}"
        return f"{{{self.min_count},{'' if self.max_count is None else self.max_count}}}"


@dataclass
class Pattern:
    """A parsed expectation: SegmentPattern and GAP items, their line numbers, and the source text."""

    items: list
    lines: list
    source: str

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)

    def text(self) -> str:
        return "\n".join(item.text() for item in self.items)


class _Line:
    """A cursor over one source line; columns are 1-based positions in the original text."""

    def __init__(self, source: str, number: int, line: str):
        self.source, self.number, self.line, self.pos = source, number, line, 0

    def fail(self, message: str, pos: int | None = None):
        raise ExpectationSyntaxError(message, self.source, self.number, (self.pos if pos is None else pos) + 1)

    def skip_space(self) -> None:
        while self.pos < len(self.line) and self.line[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_space()
        return self.pos >= len(self.line) or self.line[self.pos] == "#"

    def word(self) -> str:
        return _WORD_RE.match(self.line, self.pos).group()

    def found(self) -> str:
        return "end of line" if self.at_end() else f"'{self.word()}'"

    def take_word(self) -> str:
        word = self.word()
        self.pos += len(word)
        return word

    def expect_boundary(self, what: str) -> None:
        # Fields are separated by spaces so that a typo never silently glues onto the previous field.
        if self.pos < len(self.line) and not self.line[self.pos].isspace() and self.line[self.pos] != "#":
            self.fail(f"expected a space after {what}, found '{self.word()}'")


def _parse_host(cur: _Line, expected: str) -> str:
    match = _HOST_RE.match(cur.line, cur.pos)
    if match is None or match.group() not in HOSTS:
        cur.fail(f"expected {expected}, found {cur.found()}")
    cur.pos = match.end()
    return HOSTS[match.group()]


def _parse_direction(cur: _Line):
    cur.skip_space()
    start = cur.pos
    if cur.word() == "*":
        cur.take_word()
        return None, None
    src = _parse_host(cur, "'client > server', 'server > client' or '*'")
    cur.skip_space()
    if not cur.line.startswith(">", cur.pos):
        cur.fail(f"expected '>' after '{cur.line[start:cur.pos].strip()}', found {cur.found()}")
    cur.pos += 1
    cur.skip_space()
    dst_pos = cur.pos
    dst = _parse_host(cur, "'client' or 'server' after '>'")
    if dst == src:
        cur.fail(f"the direction names '{src}' twice; expected '{src} > {'server' if src == 'client' else 'client'}'",
                 dst_pos)
    cur.expect_boundary(f"'{cur.line[start:cur.pos]}'")
    return src, dst


def _parse_flags(cur: _Line):
    expected = "flags such as 'S', 'S.', '.', 'P.', 'FP.', 'R.' or '*'"
    if cur.at_end():
        cur.fail(f"expected {expected}, found end of line")
    word = cur.word()
    if not word or not _FLAGS_RE.fullmatch(word):
        cur.fail(f"expected {expected}, found '{word}'")
    twice = next((ch for ch in word if word.count(ch) > 1 and ch != "*"), None)
    if twice:
        cur.fail(f"flag '{twice}' appears twice in '{word}'")
    cur.take_word()
    if word == "*":
        return ANY
    return "".join(ch for ch in FLAG_LETTERS if ch in word) + ("." if "." in word else "")


def _parse_range(cur: _Line, fields: dict) -> None:
    word = cur.word()
    match = _RANGE_RE.fullmatch(word)
    if match is None:
        cur.fail(f"expected 'SEQ:END(LEN)' such as 1:6(5), found '{word}'")
    seq, end, length = (_num(group) for group in match.groups())
    if ANY not in (seq, end, length) and end != seq + length:
        cur.fail(f"in '{word}' END must be SEQ+LEN = {seq + length}, found {end}")
    cur.take_word()
    fields.update(seq=seq, end=end, length=length)


def _parse_number_field(cur: _Line, fields: dict) -> None:
    keyword = cur.take_word()
    cur.skip_space()
    value = None if cur.at_end() else _num(cur.word())
    if value is None:
        cur.fail(f"expected a number or '*' after '{keyword}', found {cur.found()}")
    cur.take_word()
    fields[keyword] = value


def _parse_dropped(cur: _Line, fields: dict) -> None:
    if not cur.line.startswith("(dropped)", cur.pos):
        cur.fail(f"expected '(dropped)', found {cur.found()}")
    cur.pos += len("(dropped)")
    cur.expect_boundary("'(dropped)'")
    fields["dropped"] = True


def _parse_repeat(cur: _Line, fields: dict) -> None:
    match = _REPEAT_RE.match(cur.line, cur.pos)
    if match is None:
        cur.fail(f"expected a repetition '{{N}}', '{{N,M}}' or '{{N,}}', found {cur.found()}")
    low = int(match.group(1))
    high = low if not match.group(2) else (int(match.group(3)) if match.group(3) else None)
    if high is not None and high < low:
        cur.fail(f"in '{match.group()}' the maximum is below the minimum")
    if high == 0:
        cur.fail(f"'{match.group()}' matches no segment; leave the line out instead")
    cur.pos = match.end()
    cur.expect_boundary(f"'{match.group()}'")
    fields.update(min_count=low, max_count=high)


def _parse_option(cur: _Line, tokens: list, end_pos: int):
    """One option from its (position, word) tokens; end_pos is where its ',' or '>' sits."""
    (name_pos, name), args = tokens[0], tokens[1:]

    def arg(index: int, expected: str, after: str):
        if index >= len(args):
            cur.fail(f"expected {expected} after '{after}', found '{cur.line[end_pos]}'", end_pos)
        return args[index]

    def number(index: int, after: str):
        pos, word = arg(index, "a number or '*'", after)
        if _num(word) is None:
            cur.fail(f"expected a number or '*' after '{after}', found '{word}'", pos)
        return _num(word)

    def keyword(index: int, word: str, after: str) -> None:
        pos, found = arg(index, f"'{word}'", after)
        if found != word:
            cur.fail(f"expected '{word}' after '{after}', found '{found}'", pos)

    used = 0
    if name in ("sackOK", "nop", "eol"):
        value = None
    elif name in ("mss", "wscale"):
        value, used = number(0, name), 1
    elif name == "TS":
        keyword(0, "val", "TS")
        val = number(1, "val")
        keyword(2, "ecr", f"TS val {args[1][1]}")
        value, used = (val, number(3, "ecr")), 4
    elif name == "sack":
        arg(0, "blocks 'A:B' or '*'", "sack")
        if args[0][1] == "*":
            value, used = ANY, 1
        else:
            blocks = []
            for pos, word in args:
                match = re.fullmatch(rf"{_NUM}:{_NUM}", word)
                if match is None:
                    cur.fail(f"expected a sack block 'A:B', found '{word}'", pos)
                blocks.append((_num(match.group(1)), _num(match.group(2))))
            value, used = tuple(blocks), len(args)
    else:
        cur.fail(f"unknown option '{name}'; expected {', '.join(KNOWN_OPTIONS)} or '...'", name_pos)
    if len(args) > used:
        pos, word = args[used]
        cur.fail(f"expected ',' or '>' after option '{name}', found '{word}'", pos)
    return name, value


def _parse_options(cur: _Line, fields: dict) -> None:
    close = cur.line.find(">", cur.pos)
    if close < 0:
        cur.fail("'<' is never closed; expected '>' at the end of the option list")
    items, is_open, offset = [], False, cur.pos + 1
    inner = cur.line[offset:close]
    for part in (inner.split(",") if inner.strip() else []):
        tokens = [(offset + m.start(), m.group()) for m in re.finditer(r"\S+", part)]
        end_pos, offset = offset + len(part), offset + len(part) + 1
        if is_open:
            cur.fail(f"expected '>' after '...', found '{tokens[0][1] if tokens else ','}'",
                     tokens[0][0] if tokens else end_pos)
        if not tokens:
            cur.fail(f"expected an option, found '{cur.line[end_pos]}'", end_pos)
        if [word for _, word in tokens] == ["..."]:
            is_open = True
        else:
            items.append(_parse_option(cur, tokens, end_pos))
    cur.pos = close + 1
    cur.expect_boundary("'<options>'")
    fields["options"] = OptionsPattern(tuple(items), is_open)


_FIELD_PARSERS = {"range": _parse_range, "ack": _parse_number_field, "win": _parse_number_field,
                  "options": _parse_options, "dropped": _parse_dropped, "repeat": _parse_repeat}


def _field_key(cur: _Line) -> str | None:
    first = cur.line[cur.pos]
    if first in "<({":
        return {"<": "options", "(": "dropped", "{": "repeat"}[first]
    if first.isdigit() or first == "*":
        return "range"
    return cur.word() if cur.word() in ("ack", "win") else None


def _parse_line(cur: _Line) -> SegmentPattern:
    src, dst = _parse_direction(cur)
    flags = _parse_flags(cur)
    fields, seen = {}, {}
    while not cur.at_end():
        key = _field_key(cur)
        if key is None:
            remaining = [label for name, label in FIELDS if name not in seen]
            cur.fail(f"expected {', '.join(remaining)} or end of line, found {cur.found()}")
        if key in seen:
            cur.fail(f"{dict(FIELDS)[key]} is given twice (first at column {seen[key] + 1})")
        seen[key] = cur.pos
        _FIELD_PARSERS[key](cur, fields)
    return SegmentPattern(line=cur.number, src=src, dst=dst, flags=flags, **fields)


def _handshake(cur: _Line) -> list[SegmentPattern]:
    """`handshake [OPENER > LISTENER]`: SYN, SYN+ACK, ACK (options not checked)."""
    cur.take_word()
    opener, listener = ("client", "server") if cur.at_end() else _parse_direction(cur)
    if opener is None:
        cur.fail("expected 'client > server' or 'server > client' after 'handshake', found '*'", cur.pos - 1)
    if not cur.at_end():
        cur.fail(f"expected end of line after the handshake's direction, found {cur.found()}")
    n = cur.number
    return [SegmentPattern(line=n, src=opener, dst=listener, flags="S", seq=0, end=0, length=0),
            SegmentPattern(line=n, src=listener, dst=opener, flags="S.", seq=0, end=0, length=0, ack=1),
            SegmentPattern(line=n, src=opener, dst=listener, flags=".", seq=1, end=1, length=0, ack=1)]


def parse_segments(text: str) -> Pattern:
    """Parse expected-segment text into a Pattern; raises ExpectationSyntaxError with line and column."""
    items, lines = [], []
    for number, line in enumerate(text.splitlines(), 1):
        cur = _Line(text, number, line)
        if cur.at_end():
            continue
        if cur.word() == "...":
            cur.take_word()
            if not cur.at_end():
                cur.fail(f"expected end of line after '...', found {cur.found()}")
            if not items or items[-1] is not GAP:   # '...' twice in a row says nothing more than once
                items.append(GAP)
                lines.append(number)
            continue
        if cur.word() == "handshake":
            fragment = _handshake(cur)
            items.extend(fragment)
            lines.extend([number] * len(fragment))
            continue
        items.append(_parse_line(cur))
        lines.append(number)
    return Pattern(items, lines, text)
