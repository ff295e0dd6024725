"""Which differences between kernels are the kernel's behaviour and which are the emulator's timing.

Under QEMU's TCG the guest kernel's timers run in real time while the steps run 10-14x slower, so a
case that races a retransmission timer may see extra retransmissions, and a harness deadline may
expire. Those differences say nothing about the kernel. A difference is put down to the emulator
only on evidence, one of:

- the segments differ only by repeats of a segment already sent (retransmissions: the same sender,
  flags and sequence range, the ack number possibly newer; a pure ACK only when identical), and the
  run that has more of them ran under emulation;
- the same distinct segments were sent in another order (a crossed SYN's ACK before or after the
  FIN, say), possibly with repeats and the D-SACK blocks that answer repeats, and one of the runs
  ran under emulation, the one with more repeats if their number differs (an emulated run that
  repeats less, like 6.1's two SYNs against three where linear SYN timeouts exist, and a D-SACK on
  the same segments with the same repeats are the kernel's); the transitions, if
  they differ too, differ only by how TIME-WAIT was observed (below);
- the segments differ only by pure ACKs in the emulated run that a later segment of the same sender
  acknowledges again with data or a FIN: the delayed-ACK timer fired before the program's reply
  (slower under emulation) could carry the ACK;
- the case failed under emulation with a harness wait that expired (a call, a wait for a segment or
  an `ss` state, a program's start-up, a command) and passed on the reference run: the case stopped
  short, most likely because a kernel timer ran out while the emulated steps ran (worth a check on
  KVM or real hardware before calling it the kernel's).

A third cause is how the state was observed: where one kernel has kprobe events and the other has
not, the timewait probes (harness/timewait.py) show `FIN_WAIT2 -> TIME_WAIT` (or `CLOSING ->
TIME_WAIT`) and the timewait socket's end on the first, where the other's histories show the
tracepoint's `-> CLOSE` as the full socket gives way (it watches TIME-WAIT with `ss`). Transitions
that differ only there, between two runs whose `timewait_source` differs, are put down to
"observation".

Everything else is the kernel's (tracepoint addresses, missing sysctls, changed defaults, options).
A case whose kernel lacks a setting the case asked for (recorded as absent, e.g. 6.1 has no
`tcp_rto_min_us`) is the kernel's even when its segments differ only in timing: the missing setting
is what changed the timing. Not when the reference run lacked it too (a guest checked against the
baseline of its own kernel): then both ran without it, and the timing rules above decide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TIMEOUT_WORDS = re.compile(r"StepTimeout|did not report ready|not seen in ss within|no segment .* within|"
                           r"still running after|did not return within|not blocked in .* within|within [\d.]+ s")


@dataclass
class Attribution:
    case: str
    run: int            # index of the run compared with the reference (run 0)
    cause: str          # "kernel", "emulator" or "observation"
    why: str


def emulator_of(results: dict) -> str | None:
    """'TCG' or 'KVM' for a run inside a VM, None for a run on the machine itself."""
    return results.get("emulator")


_SENT = re.compile(r"^(\S+ > \S+\s+(\S+)\s+\d+:\d+\((\d+)\))")


def _repeat_key(segment: str) -> str:
    """What a retransmission repeats: for a segment that takes sequence space (SYN, FIN, data) its
    sender, flags and sequence range (a resent FIN may carry a newer ack, other options); a pure
    ACK only repeats when it is identical (a new ack number is a new ACK)."""
    m = _SENT.match(segment)
    if m and (m.group(3) != "0" or "S" in m.group(2) or "F" in m.group(2)):
        return m.group(1)
    return segment


def _dedupe(segments: list) -> list:
    """Segments with repeats of an earlier segment (retransmissions) removed; the first one stays."""
    seen, out = set(), []
    for s in segments or []:
        s = re.sub(r"\s*\(dropped\)", "", s)
        key = _repeat_key(s)
        if key in seen:
            continue
        seen.add(key)
        out.append(s)
    return out


_SACK = re.compile(r"(?:,nop)*,sack [^>]*")


def _sack_only(before: list, after: list) -> bool:
    """The same segments, in the same order, with the same repeats and drops, differing only in SACK
    blocks: no repeat the other run lacks for a D-SACK to answer, so the kernel chose the option."""
    return [_SACK.sub("", s) for s in before or []] == [_SACK.sub("", s) for s in after or []]


def _without_sack(segments: list) -> set:
    """The distinct segments with SACK blocks left out: a D-SACK only answers a segment that arrived
    twice, so under emulation it belongs to the repeat it answers."""
    return {_SACK.sub("", s) for s in _dedupe(segments)}


_SEGMENT = re.compile(r"^(\S+) > (\S+)\s+(\S+)\s+\d+:\d+\((\d+)\)(?: ack (\d+))?")


def _delayed_acks(short: list, long: list) -> int:
    """How many pure ACKs `long` has beyond `short`, when `long` is `short` with only such ACKs added,
    each acknowledging what a later segment of the same sender (with data or a FIN) acknowledges
    again; 0 otherwise."""
    short, long = short or [], long or []
    i = extra = 0
    for k, seg in enumerate(long):
        if i < len(short) and seg == short[i]:
            i += 1
            continue
        m = _SEGMENT.match(seg)
        if not (m and m.group(3) == "." and m.group(4) == "0" and m.group(5)):
            return 0
        again = any((n := _SEGMENT.match(later)) and n.group(1) == m.group(1) and n.group(5) == m.group(5)
                    and (n.group(4) != "0" or "F" in n.group(3)) for later in long[k + 1:])
        if not again:
            return 0
        extra += 1
    return extra if i == len(short) else 0


def delayed_acks_only(d) -> int:
    """How many pure ACKs one run of a comparison difference (harness.compare) has beyond the other,
    when they are all its difference (see _delayed_acks); 0 otherwise."""
    if set(d.aspects) != {"segments"}:
        return 0
    before, after = d.before.get("segments"), d.after.get("segments")
    return _delayed_acks(before, after) or _delayed_acks(after, before)


def _retransmissions(segments: list) -> int:
    return len(segments or []) - len(_dedupe(segments))


def _absent(case: dict) -> list[str]:
    return sorted({k.split(":", 1)[-1] for k, v in (case.get("sysctls") or {}).items() if v == "absent"})


def _without_time_wait(transitions: list) -> list:
    """Histories ({"socket", "states"}) as both sources tell them: TIME_WAIT left out, the CLOSE
    that ends a FIN_WAIT2 or CLOSING (the tracepoint's, when a timewait socket takes over) too, and
    histories of timewait sockets alone."""
    out = []
    for h in transitions or []:
        if h.get("states", [""])[0] == "TIME_WAIT":
            continue                # a timewait socket's own history: only the probes see one
        states = [st for st in h.get("states", []) if st != "TIME_WAIT"]
        if len(states) >= 2 and states[-1] == "CLOSE" and states[-2] in ("FIN_WAIT2", "CLOSING"):
            states = states[:-1]
        out.append((h.get("socket"), states))
    return out


def _observed_differently(cmp, d) -> str | None:
    """Why the transitions differ by the timewait probes' TIME_WAIT edges alone, or None."""
    if set(d.aspects) != {"transitions"}:
        return None
    if _without_time_wait(d.before.get("transitions")) != _without_time_wait(d.after.get("transitions")):
        return None
    sources = [(cmp.case(i, d.id) or {}).get("timewait_source") or "" for i in (0, d.run)]
    kinds = [src.split(" ", 1)[0] for src in sources]
    if kinds[0] == kinds[1]:
        return None
    probe = next(i for i, k in zip((0, d.run), kinds) if k == "kprobe") if "kprobe" in kinds else None
    if probe is None:
        return None
    other = sources[1] if probe == 0 else sources[0]
    return (f"TIME_WAIT edges seen by the timewait probes on {cmp.letter(probe)} (kprobe events); "
            f"{cmp.letter(d.run if probe == 0 else 0)} watched TIME-WAIT with {other or 'ss'}")


def attribute(cmp) -> list[Attribution]:
    """One Attribution per differing case and run of a harness.compare.Comparison."""
    out = []
    ref_emu = emulator_of(cmp.runs[0])
    seen = set()
    for f in cmp.flips:
        # a wait that expired under emulation cut the case short: its behaviour is incomplete, and
        # the likely cause is a kernel timer that ran out while the emulated steps ran
        case = cmp.case(f.run, f.id) or {}
        emu = emulator_of(cmp.runs[f.run])
        text = case.get("longrepr") or ""
        if f.what == "outcome" and f.after in ("failed", "error") and emu and TIMEOUT_WORDS.search(text):
            lines = text.splitlines()
            line = next((l[1:].strip() for l in lines if l.startswith("E ") and TIMEOUT_WORDS.search(l)),
                        next((l.strip() for l in lines if TIMEOUT_WORDS.search(l)), ""))[:200]
            out.append(Attribution(f.id, f.run, "emulator", f"a harness wait expired under {emu}: {line}"))
            seen.add((f.id, f.run))
    for d in cmp.diffs:
        if (d.id, d.run) in seen:
            continue
        emu = emulator_of(cmp.runs[d.run])
        before, after = d.before.get("segments"), d.after.get("segments")
        extra = _retransmissions(after) - _retransmissions(before)
        only_timing = set(d.aspects) <= {"segments", "ss", "transitions", "steps"} and "segments" in d.aspects \
            and _dedupe(before) == _dedupe(after) and extra != 0
        # a setting the reference lacked too (a baseline of the same kernel) changed nothing between them
        absent = sorted(set(_absent(cmp.case(d.run, d.id) or {})) - set(_absent(cmp.case(0, d.id) or {})))
        observed = _observed_differently(cmp, d)
        reordered = (set(d.aspects) <= {"segments", "transitions"} and "segments" in d.aspects
                     and before != after and _without_sack(before) == _without_sack(after)
                     and not _sack_only(before, after)
                     and ("transitions" not in d.aspects or _without_time_wait(d.before.get("transitions"))
                          == _without_time_wait(d.after.get("transitions"))))
        # more repeats where the steps ran slower; the emulated run repeating less is not its timing
        slower_repeats = extra == 0 or (extra > 0 and emu) or (extra < 0 and ref_emu)
        delayed = _delayed_acks(before, after) if emu else 0
        delayed_ref = _delayed_acks(after, before) if ref_emu else 0
        if observed:
            out.append(Attribution(d.id, d.run, "observation", observed))
        elif set(d.aspects) == {"segments"} and (delayed or delayed_ref) and not absent:
            why = (f"{delayed or delayed_ref} delayed ACK(s) under {emu if delayed else ref_emu} where the other run's "
                   "reply carried the ACK, the segments otherwise equal")
            out.append(Attribution(d.id, d.run, "emulator", why))
        elif only_timing and not absent and ((extra > 0 and emu) or (extra < 0 and ref_emu)):
            why = (f"{abs(extra)} {'extra' if extra > 0 else 'fewer'} retransmission(s) under "
                   f"{emu if extra > 0 else ref_emu}, the segments otherwise equal")
            out.append(Attribution(d.id, d.run, "emulator", why))
        elif reordered and not absent and (emu or ref_emu) and slower_repeats:
            why = (f"the same segments in another order under {emu or ref_emu}"
                   + (f", {abs(extra)} {'more' if extra > 0 else 'fewer'} repeated" if extra else "")
                   + ("; TIME_WAIT observed differently" if "transitions" in d.aspects else ""))
            out.append(Attribution(d.id, d.run, "emulator", why))
        else:
            why = f"differs in {', '.join(d.aspects)}"
            if "segments" in d.aspects and before != after and _sack_only(before, after):
                why += ": the same segments, only their SACK blocks differ"
            elif "segments" in d.aspects and _without_sack(before) == _without_sack(after) and not slower_repeats:
                why += (f": {abs(extra)} {'more' if extra > 0 else 'fewer'} repeat(s) on {cmp.letter(d.run)}, "
                        f"the emulated run repeating less")
            if absent:
                why += f"; this kernel lacks {', '.join(absent)}"
            out.append(Attribution(d.id, d.run, "kernel", why))
        seen.add((d.id, d.run))
    for f in cmp.flips:
        if f.what != "outcome" or (f.id, f.run) in seen:
            continue
        out.append(Attribution(f.id, f.run, "kernel", f"outcome {f.before} -> {f.after}"))
        seen.add((f.id, f.run))
    return out


def cause_lines(cmp, attributions: list[Attribution]) -> list[str]:
    """The "Causes of the differences" section of a comparison's text (socklab matrix, socklab compare)."""
    if not attributions:
        return []
    lines = ["", "Causes of the differences (kernel behaviour or the emulator's timing):"]
    lines += ["  " + s for s in summary(cmp, attributions)]
    return lines + [f"  {cmp.letter(a.run)} {a.case}: {a.cause}: {a.why}" for a in attributions]


def summary(cmp, attributions: list[Attribution]) -> list[str]:
    """Per run: how many differences are the kernel's and how many the emulator's."""
    lines = []
    for i in range(1, len(cmp.runs)):
        mine = [a for a in attributions if a.run == i]
        k = sum(a.cause == "kernel" for a in mine)
        e = sum(a.cause == "emulator" for a in mine)
        o = sum(a.cause == "observation" for a in mine)
        lines.append(f"{cmp.letter(i)} {cmp.header(i)}: {k} difference(s) from the kernel, {e} from the emulator's "
                     f"timing, {o} from how TIME-WAIT was observed")
    return lines
