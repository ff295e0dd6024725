"""The results file of a run: what every case claimed, decided and observed, in a comparable form.

`write_results(run_dir)` reads every `cases/<case>/case.json` (the case's record, with its pytest
outcome; harness/record.py) under a run folder and writes `<run_dir>/results.json`. A run folder
written before the outcome was part of the record (schema < 3) keeps it in `outcome.json` beside
case.json; that file is still read. Besides ids, verdicts and outcomes,
each case carries its observed behaviour *normalised*, so that two runs on the same kernel compare
equal and a real change stands out:

- segments: one line each, `client > server  S 0:0(0) ack 1 <mss 1460,sackOK,TS,nop,wscale 7>`,
  flags, direction, sequence numbers relative to each side's ISN, option kinds with the values of
  mss and wscale only (TS values, windows, ports, times and absolute numbers are dropped), `sack N`
  for N SACK blocks, `(dropped)` for a segment a fault rule dropped. With more than one connection,
  ` #N` numbers them in order of first appearance and the list goes connection by connection (the
  order within a connection is kept; across connections it races on timers).
- ss: checkpoint label -> role -> sorted `ss` states; a LISTEN row adds its queues as
  `LISTEN 1/5` (Recv-Q = accept queue / Send-Q = backlog). Host addresses in labels read `<client>`
  and `<server>`, ephemeral ports `eph`; a label met twice for a role gets ` #2`.
- transitions: per socket `{"socket": "client:eph > server:50000", "states": [...]}`, sorted;
  a listener is `server:50000 listener`. A port the case chose (bind, listen, connect's target) is
  kept, any other port is `eph`.
- steps: per program, its calls in start order as `connect` or `connect ECONNREFUSED`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import time

from .errors import SocklabError
from .sysctls import recorded_key
from .kernels import version as kernel_version

SCHEMA = 2
READABLE = (1, 2)        # schema 1: verdicts say "observed" for "evidence"
VERDICT_KEYS = ("judge", "experiment", "claims", "claim", "verdict", "evidence", "setting")
KIND = "socklab-results"
FILENAME = "results.json"


class ResultsError(SocklabError):
    """A results file that cannot be used: missing, not JSON, not ours, or another schema version."""


# -- reading a run folder -------------------------------------------------------------------------

def _read_json(path):
    with open(path) as fh:
        return json.load(fh)


def case_dirs(run_dir: str) -> list[str]:
    """The case folders of a run (those holding case.json, or outcome.json in an older run), sorted."""
    root = os.path.join(run_dir, "cases")
    if not os.path.isdir(root):
        return []
    out = []
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if os.path.isfile(os.path.join(d, "case.json")) or os.path.isfile(os.path.join(d, "outcome.json")):
            out.append(d)
    return out


def _read_case_file(path: str):
    """A case folder's JSON file, None when absent; a file that is there but not JSON is a
    ResultsError naming it: a report or comparison never drops a case silently (the files are
    written atomically, so a killed writer leaves none half-written)."""
    try:
        return _read_json(path)
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: corrupt case record (not JSON: {exc}); fix or remove the file") from None


def outcome_of(rec: dict) -> dict | None:
    """The outcome part of a case record (schema 3) with the ids the results file is built from:
    nodeid, experiment, article, family, timing_dependent, when, outcome, longrepr. None when the
    record carries no outcome (a harness test's lab, not a case of the run)."""
    out = rec.get("outcome")
    if not isinstance(out, dict):
        return None
    articles = rec.get("articles") or []
    return {"nodeid": rec.get("name"), "experiment": rec.get("experiment"),
            "article": ",".join(articles) if articles else None, "family": rec.get("family"),
            **({"timing_dependent": rec["timing_dependent"]} if rec.get("timing_dependent") else {}),
            "when": out.get("when"), "outcome": out.get("outcome"), "longrepr": out.get("longrepr")}


def load_case(case_dir: str) -> tuple[dict | None, dict | None]:
    """(the lab's record, the outcome) of one case folder, from its case.json; the record is None
    when the lab recorded nothing (the plugin's record of a case skipped at set-up, say), the
    outcome None when the folder holds no case of the run. A run from before schema 3 keeps the
    outcome in outcome.json: read there."""
    rec = _read_case_file(os.path.join(case_dir, "case.json"))
    if rec is not None and "outcome" in rec:
        return (rec if rec.get("lab", True) else None), outcome_of(rec)
    return rec, _read_case_file(os.path.join(case_dir, "outcome.json"))


# -- normalisation -------------------------------------------------------------------------------

def fixed_ports(rec: dict) -> set[int]:
    """Ports the case chose itself: bound, listened on, or connected to. Any other port is ephemeral."""
    ports = set()
    for c in rec.get("calls", []):
        port = (c.get("args") or {}).get("port")
        if isinstance(port, int) and port and c.get("op") in ("bind", "connect"):
            ports.add(port)
    for h in rec.get("transitions", []):
        if "LISTEN" in h.get("states", []) and h.get("local_port"):
            ports.add(h["local_port"])
    return ports


def port_name(port, fixed: set) -> str:
    return str(port) if (port in fixed or not port) else "eph"


def option_kinds(options) -> str:
    """Options without the values that change from run to run: 'mss 1460,sackOK,TS,nop,wscale 7'."""
    parts = []
    for name, value in options:
        if name in ("mss", "wscale"):
            parts.append(f"{name} {value}")
        elif name == "sack":
            parts.append(f"sack {len(value) if value else 0}")
        else:
            parts.append(name)
    return ",".join(parts)


def segment_body(seg: dict, flags_width: int = 0) -> str:
    """'S. 0:0(0) ack 1 <mss 1460,...>': a case.json segment's flags, numbers and option kinds."""
    out = f"{seg['flags']:<{flags_width}} {seg['seq']}:{seg['seq'] + seg['len']}({seg['len']})"
    if seg.get("ack") is not None:
        out += f" ack {seg['ack']}"
    if seg.get("options"):
        out += f" <{option_kinds(seg['options'])}>"
    return out


def segment_line(seg: dict, conn: int | None = None) -> str:
    """One segment of case.json in the normalised notation (see the module docstring)."""
    out = f"{seg['src']} > {seg['dst']}  {segment_body(seg, 3)}"
    if seg.get("dropped_by"):
        out += " (dropped)"
    if conn:
        out += f" #{conn}"
    return out


def connection_numbers(segs: list) -> list[int]:
    """Each segment's connection, numbered from 1 in the order connections first appear. A connection
    is a port pair, and a new one starts on a pair seen before when a SYN comes with another ISN than
    its sender's SYN before it (the kernel picked the freed ephemeral port again, or a 4-tuple came
    back out of TIME-WAIT): whether a port was reused is the kernel's random choice, not behaviour.
    Records without the raw sequence numbers number by port pair alone."""
    current: dict = {}      # port pair -> its connection number now
    isn: dict = {}          # (port pair, sender) -> raw ISN of that sender's last SYN on the pair
    out, count = [], 0
    for s in segs:
        pair = frozenset((s.get("sport"), s.get("dport")))
        raw = s.get("raw_seq")
        if "S" in (s.get("flags") or "") and raw is not None:
            before = isn.get((pair, s.get("src")))
            if before is not None and before != raw:
                current.pop(pair, None)         # a new incarnation of the pair
                isn = {k: v for k, v in isn.items() if k[0] != pair}
            isn[(pair, s.get("src"))] = raw
        if pair not in current:
            count += 1
            current[pair] = count
        out.append(current[pair])
    return out


def normal_segments(rec: dict) -> list[str]:
    segs = rec.get("segments", [])
    numbers = connection_numbers(segs)
    many = len(set(numbers)) > 1
    numbered = list(zip(numbers, segs))
    # Connection by connection: the interleaving of different connections' segments follows
    # their timers and races (a SYN retransmission of #4 against a SYN-ACK retransmission of #2).
    numbered.sort(key=lambda ns: ns[0])
    return [segment_line(s, n if many else None) for n, s in numbered]


def _label_cleaner(rec: dict):
    """A function that writes host addresses as <role> and ephemeral ports as eph in free text.
    A pattern is compiled only for text that contains its address or port (labels rarely do: the
    addresses differ in every case, so compiling them all cost ~3 ms a case)."""
    addrs = [(a, role) for role, by_family in (rec.get("hosts") or {}).items() for a in by_family.values() if a]
    fixed = fixed_ports(rec)
    eph = {p for s in rec.get("segments", []) for p in (s.get("sport"), s.get("dport")) if p and p not in fixed}
    eph |= {h.get(k) for h in rec.get("transitions", []) for k in ("local_port", "peer_port")
            if h.get(k) and h.get(k) not in fixed}
    eph_text = [str(p) for p in sorted(eph)]
    eph_rx = []

    def clean(text: str) -> str:
        for a, role in addrs:
            if a in text:
                text = re.sub(r"(?<![\w:.])" + re.escape(a) + r"(?![\w.]|:[0-9A-Fa-f]*:)", f"<{role}>", text)
        if eph_text and any(p in text for p in eph_text):
            if not eph_rx:
                eph_rx.append(re.compile(r"(?<!\d)(?:" + "|".join(eph_text) + r")(?!\d)"))
            text = eph_rx[0].sub("eph", text)
        return text
    return clean


def normal_ss(rec: dict) -> dict:
    clean = _label_cleaner(rec)
    out: dict = {}
    for snap in rec.get("ss", []):
        label, role = clean(snap.get("label") or "?"), snap.get("role") or "?"
        key, n = label, 1
        while role in out.get(key, {}):
            n += 1
            key = f"{label} #{n}"
        states = [r["state"] + (f" {r['recv_q']}/{r['send_q']}" if r["state"] == "LISTEN" else "")
                  for r in snap.get("rows", [])]
        out.setdefault(key, {})[role] = sorted(s or "?" for s in states)
    return out


def socket_name(h: dict, fixed: set) -> str:
    local = f"{h.get('local_role')}:{port_name(h.get('local_port'), fixed)}"
    if not h.get("peer_port") and h.get("peer_role") == "wire":
        return f"{local} listener"
    return f"{local} > {h.get('peer_role')}:{port_name(h.get('peer_port'), fixed)}"


def normal_transitions(rec: dict) -> list[dict]:
    fixed = fixed_ports(rec)
    out = [{"socket": socket_name(h, fixed), "states": list(h.get("states", [])),
            # only where the timewait probes added transitions (harness/timewait.py), so runs without compare as before
            **({"sources": h["sources"]} if "timewait" in (h.get("sources") or []) else {})}
           for h in rec.get("transitions", [])]
    return sorted(out, key=lambda d: (d["socket"], d["states"]))


def normal_steps(rec: dict) -> dict:
    out: dict = {}
    for c in sorted(rec.get("calls", []), key=lambda c: (c.get("t0") or 0)):
        word = c.get("op", "?") + (f" {c['errno']}" if c.get("errno") else (" error" if c.get("error") else ""))
        out.setdefault(c.get("program", "?"), []).append(word)
    return out


def behaviour(rec: dict) -> dict:
    """The observed behaviour of one case.json, normalised for comparison."""
    return {"segments": normal_segments(rec), "ss": normal_ss(rec),
            "transitions": normal_transitions(rec), "steps": normal_steps(rec)}


ASPECTS = ("segments", "ss", "transitions", "steps")


# -- the results file ----------------------------------------------------------------------------

def summary_verdict(verdicts: list) -> str | None:
    """One word for a case: refuted beats differs beats confirmed; None without verdicts."""
    words = {v.get("verdict") for v in verdicts}
    for w in ("refuted", "differs", "confirmed"):
        if w in words:
            return w
    return None


def _artifacts(run_dir: str, case_dir: str, rec: dict | None) -> dict:
    out = {}
    known = {v: k for k, v in ((rec or {}).get("artifacts") or {}).items()}
    for name in sorted(os.listdir(case_dir)):
        path = os.path.join(case_dir, name)
        # The case's page and summary are the report's, made from these: not artifacts of the case.
        if os.path.isfile(path) and name not in ("index.html", SUMMARY) and not name.endswith(".tmp"):
            out[known.get(name, name)] = os.path.relpath(path, run_dir)
    return out


def _verdicts(rec: dict, rejudged: list | None) -> list[dict]:
    if rejudged is not None:
        return [{k: getattr(v, k) for k in VERDICT_KEYS} for v in rejudged]
    out = []
    for v in rec.get("verdicts", []):
        v = dict(v)
        if "evidence" not in v:                      # a schema-1 record
            v["evidence"] = v.get("observed")
        out.append({k: v.get(k) for k in VERDICT_KEYS})
    return out


def case_result(run_dir: str, case_dir: str, judges: dict | None = None, loaded=None) -> dict:
    """The results entry of one case folder; with `judges` (a registry), its claims judged again
    from case.json instead of the verdicts recorded at run time. `loaded`: load_case(case_dir) if
    the caller has it already."""
    rec, out = loaded or load_case(case_dir)
    out = out or {}
    rec_or = rec or {}
    rejudged, unjudged = None, None
    if judges is not None and rec is not None and rec.get("judges"):
        from .judge import rejudge
        _, rejudged, unjudged = rejudge(os.path.join(case_dir, "case.json"), judges)
        if unjudged:
            rejudged = None
    verdicts = _verdicts(rec_or, rejudged)
    articles = rec_or.get("articles") or sorted(a for a in (out.get("article") or "").split(",") if a)
    return {
        "id": out.get("nodeid") or rec_or.get("name") or os.path.basename(case_dir),
        "dir": os.path.relpath(case_dir, run_dir),
        "experiment": out.get("experiment") or rec_or.get("experiment"),
        "article": ",".join(articles) or None, "articles": articles,
        "judges": rec_or.get("judges", []), "unjudged": unjudged,
        "timing_dependent": out.get("timing_dependent") or {},
        "family": out.get("family") or rec_or.get("family"),
        "claim": rec_or.get("claim") or next((v["claim"] for v in verdicts if v.get("claim")), None),
        "verdict": summary_verdict(verdicts), "verdicts": verdicts,
        "outcome": out.get("outcome", "unknown"), "when": out.get("when"), "longrepr": out.get("longrepr"),
        "mtu": rec_or.get("mtu"), "kernel": rec_or.get("kernel"), "kernel_version": rec_or.get("kernel_version"),
        "emulator": rec_or.get("emulator"),
        "duration": rec_or.get("duration"),
        "sysctls": _case_sysctls(rec_or),
        "timewait_source": rec_or.get("timewait_source"),
        "trace_lost": rec_or.get("trace_lost"),
        "behaviour": behaviour(rec) if rec is not None else None,
        "artifacts": _artifacts(run_dir, case_dir, rec),
    }


def is_case(case: dict) -> bool:
    """A case of the run: the plugin put its outcome into the record. It does not for tests marked
    no_report (the harness's own tests, which build labs too), so their folders are left out."""
    return case.get("outcome", "unknown") != "unknown"


def _case_sysctls(rec: dict) -> dict:
    out = {k: str(v) for k, v in (rec.get("sysctls") or {}).items()}
    for role, values in (rec.get("host_sysctls") or {}).items():
        for k, v in (values or {}).items():
            if out.get(k) != str(v):
                out[f"{role}:{k}"] = str(v)
    return {recorded_key(k): v for k, v in out.items()}


def settings_of(cases: list[dict], profile: str | None = None) -> dict:
    """Sysctls applied (union: key -> value, or sorted list when cases differ), those common to every
    case with a lab, the link MTUs, and the profile name."""
    labbed = [c for c in cases if c.get("behaviour") is not None]
    values: dict = {}
    for c in labbed:
        for k, v in c["sysctls"].items():
            values.setdefault(k, set()).add(v)
    union = {k: (next(iter(v)) if len(v) == 1 else sorted(v)) for k, v in sorted(values.items())}
    common = {}
    if labbed:
        for k, v in labbed[0]["sysctls"].items():
            if all(c["sysctls"].get(k) == v for c in labbed):
                common[k] = v
    return {"profile": profile, "sysctls": union, "common_sysctls": dict(sorted(common.items())),
            "mtus": sorted({c["mtu"] for c in labbed if c.get("mtu")})}


def harness_version() -> str:
    try:
        return version_of(importlib.metadata.distribution("socklab")) or "unknown"
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def version_of(dist) -> str | None:
    """The Version header of a distribution's metadata, read as text (importlib.metadata's version()
    parses all of it with email's parser: 5-9 ms). An editable install's metadata is METADATA in the
    venv, or PKG-INFO in the socklab.egg-info that pip's build leaves in the project, which is found
    first when the project folder is on sys.path (pytest run from it)."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    headers = text.split("\n\n", 1)[0]
    return next((line.split(":", 1)[1].strip() for line in headers.splitlines()
                 if line.lower().startswith("version:")), None)


SUMMARY = "summary.json"      # a case's results entry and diagram view, next to its case.json


def write_summary(run_dir: str, case_dir: str) -> None:
    """Keep the case's results entry and diagram view in <case>/summary.json and write its page.

    The process that ran the case does this in the background as soon as case.json is final, so
    the run's end (results.json, index.html) reads 146 small files instead of judging and drawing
    every case then, on one core, after the last case. build_results() uses a summary only while
    case.json is the one it was made from (same modification time)."""
    from . import casepage, diagram
    from .page import write
    if not os.path.isfile(os.path.join(case_dir, "case.json")):
        return                  # an older run's folder (outcome.json alone): nothing to stand for
    loaded = load_case(case_dir)
    entry = case_result(run_dir, case_dir, loaded=loaded)
    if not is_case(entry):
        return
    view = diagram.view(entry["id"], loaded[0] or {}, experiment=entry.get("experiment"), family=entry.get("family"))
    data = {"case_json": os.stat(os.path.join(case_dir, "case.json")).st_mtime_ns, "result": entry, "view": view}
    path = os.path.join(case_dir, SUMMARY)
    with open(path + ".tmp", "w") as fh:
        fh.write(json.dumps(data))         # dumps: the C encoder (json.dump runs the Python one)
    os.replace(path + ".tmp", path)
    write(os.path.join(run_dir, casepage.page_path(entry)),
          casepage.render(run_dir, entry, {"run": os.path.basename(run_dir.rstrip(os.sep)),
                                            "kernel": entry.get("kernel") or os.uname().release}))


def _summary(case_dir: str) -> dict | None:
    """The case's summary.json while it matches its case.json; None otherwise."""
    try:
        with open(os.path.join(case_dir, SUMMARY)) as fh:
            data = json.load(fh)
        if data.get("case_json") == os.stat(os.path.join(case_dir, "case.json")).st_mtime_ns:
            return data
    except (OSError, ValueError, AttributeError):
        pass
    return None


def build_results(run_dir: str, profile: str | None = None, judges: dict | None = None,
                  interrupted: bool = False, summarised: set | None = None, harness: str | None = None) -> dict:
    """The results of the run folder `run_dir` as a dict (see the module docstring); with `judges`
    (harness.judge.load_judges()), every claim judged again from the recorded case.json files.
    `interrupted`: the run was stopped (Ctrl-C, SIGTERM); a case in flight has outcome "interrupted".
    Without `judges`, a case's up-to-date summary.json stands for its case.json; `summarised`, if
    given, receives the folders ("dir") of those cases (their pages are written already). `harness`:
    the harness's version when the caller knows it (the plugin: from pytest's plugin list), else
    read from the installed metadata (~9 ms)."""
    from . import articles
    run_dir = os.path.abspath(run_dir)
    views: dict[str, dict] = {}
    results = []
    for d in case_dirs(run_dir):
        summary = _summary(d) if judges is None else None
        if summary is not None:
            entry = summary["result"]
            views[entry["id"]] = summary["view"]
            if summarised is not None:
                summarised.add(entry["dir"])
        else:
            entry = case_result(run_dir, d, judges)
        results.append(entry)
    cases = sorted((c for c in results if is_case(c)), key=lambda c: c["id"])
    # The kernel the cases ran on (case.json records it), not the one writing the report.
    kernel = next((c["kernel"] for c in cases if c.get("kernel")), None) or os.uname().release
    version = next((c["kernel_version"] for c in cases if c.get("kernel_version")), None) or \
        (kernel_version.running() if kernel == os.uname().release else kernel_version.version_of(kernel))
    emulator = next((c["emulator"] for c in cases if c.get("emulator")), None)
    return {"schema": SCHEMA, "kind": KIND, "run": os.path.basename(run_dir.rstrip(os.sep)),
            "kernel": kernel, "kernel_version": version, "emulator": emulator, "harness": harness or harness_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "interrupted": bool(interrupted or any(c["outcome"] == "interrupted" for c in cases)),
            "settings": settings_of(cases, profile), "claims": articles.claims(),
            "articles": articles.titles(), "cases": cases, **_diagram_tables(run_dir, cases, views)}


def _diagram_tables(run_dir: str, cases: list[dict], views: dict | None = None) -> dict:
    """"states" and "edges": the eleven states and RFC 9293's diagram edges over the run (harness/diagram.py)."""
    from . import diagram
    views = views or {}
    return diagram.tables([views[c["id"]] if c["id"] in views else
                           diagram.view(c["id"], load_case(os.path.join(run_dir, c["dir"]))[0] or {},
                                        experiment=c.get("experiment"), family=c.get("family")) for c in cases])


def write_results(run_dir: str, profile: str | None = None, results: dict | None = None) -> str:
    """Write `<run_dir>/results.json` (`results`, or built from the folder now); returns its path."""
    data = {k: v for k, v in results.items() if k != "path"} if results else build_results(run_dir, profile)
    path = os.path.join(run_dir, FILENAME)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        # Compact, through dumps (json's C encoder): 12 ms for the catalogue against 56 ms indented.
        # A baseline, which people read in diffs, is written indented (baseline.record).
        fh.write(json.dumps(data))
        fh.write("\n")
    os.replace(tmp, path)
    return path


def load_results(path: str) -> dict:
    """A results file (or a run folder holding one), checked to be ours and of this schema version."""
    if os.path.isdir(path):
        path = os.path.join(path, FILENAME)
    try:
        data = _read_json(path)
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file (run `socklab report RUN_DIR` to write one)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: not a socklab results file (not JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND or "schema" not in data:
        raise ResultsError(f"{path}: not a socklab results file (no \"kind\": \"{KIND}\" and \"schema\")")
    if not isinstance(data.get("cases"), list):
        raise ResultsError(f"{path}: not a socklab results file (no \"cases\" list)")
    if data["schema"] not in READABLE:
        raise ResultsError(f"{path}: results schema {data['schema']!r}, this socklab reads schema {SCHEMA}; "
                           f"rewrite it with `socklab report` from the run folder")
    data["path"] = os.path.abspath(path)
    return data


def counts(results: dict) -> dict:
    """{"verdicts": {confirmed: n, refuted: n, differs: n, none: n}, "outcomes": {passed: n, ...}}."""
    verdicts = {"confirmed": 0, "refuted": 0, "differs": 0, "none": 0}
    outcomes: dict = {}
    for c in results["cases"]:
        verdicts[c.get("verdict") or "none"] = verdicts.get(c.get("verdict") or "none", 0) + 1
        outcomes[c["outcome"]] = outcomes.get(c["outcome"], 0) + 1
    return {"verdicts": verdicts, "outcomes": outcomes}


def settings_text(results: dict) -> str:
    """The settings of a run in one line: profile, sysctls common to all cases, MTUs other than 1500."""
    s = results.get("settings") or {}
    parts = [f"profile {s['profile']}"] if s.get("profile") else []
    parts += [f"{k}={v}" for k, v in (s.get("common_sysctls") or {}).items()]
    mtus = s.get("mtus") or []
    if any(m != 1500 for m in mtus):
        parts.append("mtu " + ",".join(map(str, mtus)))
    per_case = len(set(s.get("sysctls") or {}) - set(s.get("common_sysctls") or {}))
    return " ".join(parts or ["defaults"]) + (f" (+{per_case} per-case sysctls)" if per_case else "")
