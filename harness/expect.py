"""Check observed segments, ss states and state transitions against expectations, and explain misses."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import zip_longest

from harness.errors import ExpectationFailed, ExpectationSyntaxError
from harness.errors import hide_own_frames as __tracebackhide__  # noqa: F401 (read by pytest)
from harness.notation import GAP, Pattern, SegmentPattern, parse_segments

SS_STATES = ("ESTAB", "LISTEN", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSE-WAIT",
             "LAST-ACK", "CLOSING", "TIME-WAIT", "UNCONN")
KERNEL_STATES = ("ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE",
                 "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV")
# ss and the kernel spell states differently and people mix them up; errors name the other spelling.
SS_FOR_KERNEL = {"ESTABLISHED": "ESTAB", "SYN_SENT": "SYN-SENT", "SYN_RECV": "SYN-RECV", "NEW_SYN_RECV": "SYN-RECV",
                 "FIN_WAIT1": "FIN-WAIT-1", "FIN_WAIT2": "FIN-WAIT-2", "TIME_WAIT": "TIME-WAIT", "CLOSE": "UNCONN",
                 "CLOSE_WAIT": "CLOSE-WAIT", "LAST_ACK": "LAST-ACK", "LISTEN": "LISTEN", "CLOSING": "CLOSING"}
KERNEL_FOR_SS = {ss: kernel for kernel, ss in SS_FOR_KERNEL.items() if kernel != "NEW_SYN_RECV"}


def _align(items: list, observed: list, bounds, fits) -> dict:
    """Every reachable (item, observed) state of the match, with the step that first reached it.

    bounds(item) is None for a gap, else (min, max) consecutive observed elements (max None: unbounded);
    fits(item, element) says whether one element fits. The whole match succeeded when
    (len(items), len(observed)) is in the result.
    """
    k, n = len(items), len(observed)
    pred = {(0, 0): None}
    # Rows in order and columns ascending: every step goes to a later row or a later column.
    for i in range(k):
        for j in range(n + 1):
            if (i, j) not in pred:
                continue
            limits = bounds(items[i])
            if limits is None:
                pred.setdefault((i + 1, j), (i, j, 0))
                if j < n:
                    pred.setdefault((i, j + 1), (i, j, 1))
                continue
            low, high = limits
            count = 0
            while True:
                if count >= low:
                    pred.setdefault((i + 1, j + count), (i, j, count))
                if (high is not None and count >= high) or j + count >= n or not fits(items[i], observed[j + count]):
                    break
                count += 1
    return pred


def _steps(pred: dict, state: tuple) -> list:
    """The (item index, observed index or None) steps leading to `state`, in order."""
    steps = []
    while pred[state] is not None:
        i, j, count = pred[state]
        if i == state[0]:               # a gap took one observed element and stayed on its row
            steps.append((i, j))
        elif count == 0:
            steps.append((i, None))
        else:
            steps.extend((i, j + c) for c in reversed(range(count)))
        state = (i, j)
    steps.reverse()
    consumed = {i for i, j in steps if j is not None}
    return [(i, j) for i, j in steps if j is not None or i not in consumed]


def _best_partial(pred: dict, items: list, observed: list, bounds, fits) -> tuple:
    """The reachable state that got furthest into the items, then into the observed list; with its run."""
    best, best_score = None, None
    for i, j in pred:
        run = 0
        if i < len(items) and bounds(items[i]) is not None:
            # The best state's item always fell short of its minimum, so counting stops there.
            while run < bounds(items[i])[0] and j + run < len(observed) and fits(items[i], observed[j + run]):
                run += 1
        score = (i, j + run)
        if best_score is None or score > best_score:
            best, best_score = (i, j, run), score
    return best


def _collapse(text: str) -> str:
    return " ".join(text.split())


@dataclass
class MatchResult:
    """The outcome of matching observed segments against a Pattern."""

    ok: bool
    pattern: Pattern
    observed: list
    pairs: list = field(default_factory=list)    # (observed index, SegmentPattern), 0-based, in order
    rows: list = field(default_factory=list)     # (marker, item index or None, observed index or None)
    difference: str | None = None
    unaligned_from: int | None = None            # rows from here on are listed, not aligned

    def report(self, title: str = "segments") -> str:
        """Expected and observed ladders side by side, with '>>' on the first difference."""
        show_win = any(isinstance(item, SegmentPattern) and item.win is not None for item in self.pattern)
        cells = []
        for marker, i, j in self.rows:
            line = "" if i is None else str(self.pattern.lines[i])
            expected = "" if i is None else self.pattern.items[i].text()
            number = "" if j is None else f"#{j + 1}"
            cells.append((marker, line, expected, number, "" if j is None else self.observed[j].text(win=show_win)))
        line_w = max([len("line")] + [len(c[1]) for c in cells])
        exp_w = max([len("expected")] + [len(c[2]) for c in cells])
        num_w = max([len("#")] + [len(c[3]) for c in cells])
        verdict = "matched" if self.ok else "did not match"
        out = [f"{title}: {verdict} ({len(self.observed)} observed, "
               f"{sum(isinstance(item, SegmentPattern) for item in self.pattern)} expected lines)",
               f"   {'line':>{line_w}}  {'expected':<{exp_w}} | {'#':<{num_w}}  observed"]
        for marker, line, expected, number, observed in cells:
            out.append(f"{marker:<2} {line:>{line_w}}  {expected:<{exp_w}} | {number:<{num_w}}  {observed}".rstrip())
        if self.unaligned_from is not None and self.unaligned_from < len(cells):
            out.append("(rows after '>>' list the rest of each side in order, not aligned)")
        if self.difference:
            out.append(self.difference)
        return "\n".join(out)


def _segment_bounds(item):
    return None if item is GAP else (item.min_count, item.max_count)


def _segment_fits(item, segment) -> bool:
    return item.matches(segment)


def match_segments(pattern: Pattern | str, observed: list) -> MatchResult:
    """Match observed segments against a pattern (or its text), honouring '...' and repetitions."""
    if isinstance(pattern, str):
        pattern = parse_segments(pattern)
    items, observed = list(pattern.items), list(observed)
    pred = _align(items, observed, _segment_bounds, _segment_fits)
    end = (len(items), len(observed))
    if end in pred:
        steps = _steps(pred, end)
        return MatchResult(True, pattern, observed, rows=[("", i, j) for i, j in steps],
                           pairs=[(j, items[i]) for i, j in steps if j is not None and items[i] is not GAP])
    i, j, run = _best_partial(pred, items, observed, _segment_bounds, _segment_fits)
    steps = _steps(pred, (i, j)) + [(i, j + c) for c in range(run)]
    rows = [("", a, b) for a, b in steps]
    at = j + run
    if i == len(items):
        seg = observed[at]
        difference = (f"first difference: unexpected segment #{at + 1} '{_collapse(seg.text())}' and nothing else "
                      f"was expected (end the pattern with '...' to allow more)")
        rows.append((">>", None, at))
        rest_items, rest_observed = [], range(at + 1, len(observed))
    else:
        item = items[i]
        expected = f"expected line {pattern.lines[i]} '{_collapse(item.text())}'"
        if (item.min_count, item.max_count) != (1, 1):
            expected += f" (occurrence {run + 1} of {item.repeat_text()})"
        gap_from = min(b for a, b in pred if a == i)
        if at == len(observed) and i > 0 and items[i - 1] is GAP and gap_from < at:
            # The '...' swallowed the rest; "no more segments" would wrongly suggest the capture ended early.
            difference = (f"first difference: {expected} but none of the segments #{gap_from + 1}..#{at} "
                          f"that the '...' on line {pattern.lines[i - 1]} may skip matches it")
            rows.append((">>", i, None))
            rest_observed = []
        elif at == len(observed):
            difference = f"first difference: {expected} but no more segments were observed"
            rows.append((">>", i, None))
            rest_observed = []
        else:
            seg = observed[at]
            difference = (f"first difference: {expected}, observed #{at + 1} '{_collapse(seg.text())}' "
                          f"({item.mismatch(seg)})")
            rows.append((">>", i, at))
            rest_observed = range(at + 1, len(observed))
        rest_items = range(i + 1, len(items))
    unaligned = len(rows) if (rest_items or rest_observed) else None
    rows += [("", a, b) for a, b in zip_longest(rest_items, rest_observed)]
    pairs = [(b, items[a]) for a, b in steps if b is not None and items[a] is not GAP]
    return MatchResult(False, pattern, observed, pairs, rows, difference, unaligned)


def expect_segments(observed, text_or_pattern, *, title: str = "segments") -> MatchResult:
    """Raise ExpectationFailed, showing both ladders side by side, unless the segments match."""
    result = match_segments(text_or_pattern, observed)
    if not result.ok:
        raise ExpectationFailed(result.report(title))
    return result


def _check_names(names: list, known: tuple, other: dict, other_kind: str, text: str, offsets: list) -> None:
    for name, offset in zip(names, offsets):
        if name in known:
            continue
        hint = (f"; that is the {other_kind} spelling, here write '{other[name]}'" if name in other
                else f"; expected one of {', '.join(known)}")
        raise ExpectationSyntaxError(f"unknown state '{name}'{hint}", text, *_line_col(text, offset))


def _line_col(text: str, offset: int) -> tuple:
    """1-based (line, column) of a 0-based offset into text."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _endpoint(address, port) -> str:
    address = str(address)
    if port is None:
        return address
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _ss_row_text(row) -> str:
    # Rows from harness.ss keep the port apart from the address; other row kinds may not have one.
    local = _endpoint(row.local, getattr(row, "local_port", None))
    peer = _endpoint(row.peer, getattr(row, "peer_port", None))
    return f"{row.state or '?':<10} {row.recv_q!s:>6} {row.send_q!s:>6}  {local} {peer}"


def expect_states(snapshot_rows, expected, *, side: str) -> None:
    """Raise ExpectationFailed unless the rows' ss states equal `expected` as a multiset."""
    names = expected.split() if isinstance(expected, str) else [str(name) for name in expected]
    rendering = " ".join(names)
    offsets = [sum(len(n) + 1 for n in names[:k]) for k in range(len(names))]
    _check_names(names, SS_STATES, SS_FOR_KERNEL, "kernel", rendering, offsets)
    rows = list(snapshot_rows)
    wanted = Counter(names)
    table, extra = [], []
    for row in rows:
        if wanted[row.state] > 0:
            wanted[row.state] -= 1
            table.append(("", row.state, _ss_row_text(row)))
        else:
            extra.append(row)
    missing = []
    for name in names:              # in the order written, so the message reads like the expectation
        if wanted[name] > 0:
            wanted[name] -= 1
            missing.append(name)
    if not missing and not extra:
        return
    table += [(">>", name, "") for name in missing] + [(">>", "", _ss_row_text(row)) for row in extra]
    width = max([len("expected")] + [len(name) for _, name, _ in table])
    out = [f"{side} sockets: ss states did not match (expected {len(names)}, observed {len(rows)})",
           f"   {'expected':<{width}} | observed: {'State':<10} {'Recv-Q':>6} {'Send-Q':>6}  Local Peer"]
    out += [f"{marker:<2} {name:<{width}} | {'':<10}{text}".rstrip() for marker, name, text in table]
    unexpected = ", ".join(str(row.state or "?") for row in extra)
    out.append(f"missing: {', '.join(missing) or '-'}; unexpected: {unexpected or '-'}")
    raise ExpectationFailed("\n".join(out))


_TRANSITION_TOKEN = re.compile(r"\s*(?:(->)|(\.\.\.)|([A-Za-z0-9_]+(?:-(?!>)[A-Za-z0-9_]+)*)|(\S+))")


def parse_transitions(text: str) -> list:
    """Parse 'CLOSE -> SYN_SENT -> ... -> CLOSE' into state names and GAP; ExpectationSyntaxError if malformed."""
    elements, want_state = [], True
    for match in _TRANSITION_TOKEN.finditer(text):
        start, token = match.start(match.lastindex), match.group(match.lastindex)
        if want_state and match.lastindex == 2:
            elements.append(GAP)
        elif want_state and match.lastindex == 3:
            name = token.upper().removeprefix("TCP_")
            _check_names([name], KERNEL_STATES, KERNEL_FOR_SS, "ss", text, [start])
            elements.append(name)
        elif want_state or match.lastindex != 1:
            expected = "a state name or '...'" if want_state else "'->'"
            raise ExpectationSyntaxError(f"expected {expected}, found '{token}'", text, *_line_col(text, start))
        want_state = not want_state
    if want_state:
        raise ExpectationSyntaxError("expected a state name or '...', found end of text", text,
                                     *_line_col(text, len(text.rstrip())))
    return elements


def _state_bounds(element):
    return None if element is GAP else (1, 1)


def _same_state(element, state) -> bool:
    return element == state


def _chain(states) -> str:
    return " -> ".join("..." if state is GAP else state for state in states) or "(nothing)"


def expect_transitions(observed_states: list, expected: str) -> None:
    """Raise ExpectationFailed unless one socket's successive states follow `expected`."""
    elements = parse_transitions(expected)
    observed = [str(state).removeprefix("TCP_") for state in observed_states]
    pred = _align(elements, observed, _state_bounds, _same_state)
    if (len(elements), len(observed)) in pred:
        return
    i, j, _ = _best_partial(pred, elements, observed, _state_bounds, _same_state)
    where = f"after {_chain(observed[:j])}, " if j else "at the start, "
    if i == len(elements):
        detail = f"unexpected state {observed[j]} (state {j + 1}) and nothing else was expected"
    elif j == len(observed) and i > 0 and elements[i - 1] is GAP:
        where = ""
        detail = f"expected {elements[i]} somewhere after the '...', but the socket never entered it"
    elif j == len(observed):
        detail = f"expected {elements[i]} but the socket made no more transitions"
    else:
        detail = f"expected {elements[i]}, observed {observed[j]} (state {j + 1})"
    raise ExpectationFailed("state transitions did not match\n"
                            f"  expected: {_chain(elements)}\n  observed: {_chain(observed)}\n"
                            f"first difference: {where}{detail}")
