"""The order cases are handed to pytest-xdist workers: the waiting ones first, short ones between.

xdist's load scheduling hands out cases in collection order. In file order the catalogue's longest
cases (3-4 s of protocol timers) can start last and leave one worker running while the others are
done. Sorted longest first, the long ones all start together and then all wait together: a case
that lasts 0.5 s or more (WAITING) spends nearly all of it waiting on a retransmission, delayed-ACK
or keepalive timer, so while every worker sat in one of them the cores were idle (25-50% busy for
6-7 s of a 15 s catalogue at -n 6), and the short cases, which are CPU work, came after them with
every core saturated. So the long ones go first, longest first, each followed by SHORT_PER_WAIT of
the short ones (longest first too): the workers in a long case leave the cores to the workers in
the short ones, and the long ones have all started by about the middle of the run, so none is
left as the tail.

The durations are the last known of each case, kept in `durations.json` in the reports folder: each
run's end merges its cases' durations into it (remember_durations), so a run of a few cases (-k,
the bench's) does not leave the next full run without the rest. Without that file (a reports
folder from before it), the newest results.json gives them (each case entry carries its lab's
duration); in a fresh clone, the baseline of the running kernel (baselines/, a results.json too).
The controller reads them once and hands the same table to every worker (`workerinput`), so all
workers collect the same order, as xdist requires, even while another run writes its results.

Under `--dist loadgroup`, the plugin's choice (see grouped()), each case is a unit of its own
except the scapy group, and a worker holds two units (the one it runs and the next; see
harness/scheduler.py), so the long ones spread over the workers. Under an explicit `--dist load`, whose first chunks would give one worker all the
longest, the plugin sets `--maxschedchunk 1` unless the user gave one. A serial run keeps the file
order; a test without a previous duration counts as its expected_duration marker says (the kernel
matrix's smoke run: 80 s), else UNKNOWN seconds.
"""

from __future__ import annotations

import json
import os
from typing import Callable

UNKNOWN = 1.0       # s: a new case might be long; it goes before the previous run's short ones
WAITING = 0.5       # s: a case this long is mostly protocol timers (the catalogue's: 1.0-3.2 s against
                    #    <= 0.4 s for the rest)
SHORT_PER_WAIT = 2  # short cases handed out after each waiting one (see README, Benchmark)


DURATIONS = "durations.json"     # {case id: seconds}, in the reports folder


def previous_durations(reports_dir: str, *, exclude: str | None = None,
                       baseline: Callable[[], str | None] | None = None) -> dict[str, float]:
    """{case id: duration} as last measured (durations.json), else of the newest finished run under
    `reports_dir` other than `exclude`, else of the results file `baseline()` names (a fresh clone's
    first run: the baseline of this kernel, which is a results.json too; looked for only then);
    {} when there is none."""
    known = _read_durations(os.path.join(reports_dir, DURATIONS))
    known = known or _newest_run_durations(reports_dir, exclude=exclude)
    if known or baseline is None:
        return known
    path = baseline()
    return _results_durations(path) if path else {}


def remember_durations(reports_dir: str, cases: list) -> None:
    """Merge the durations of a run's case entries into durations.json (a case without one keeps
    its old figure). Written whole and renamed into place, so a reader never sees half of it."""
    path = os.path.join(reports_dir, DURATIONS)
    known = _read_durations(path)
    known.update(_durations_of(cases))
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(known, fh, sort_keys=True)
    os.replace(tmp, path)


def _read_durations(path: str) -> dict[str, float]:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}                   # none yet, or unreadable: it only costs the ordering
    if not isinstance(data, dict):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(k, str) and isinstance(v, (int, float))}


def _durations_of(cases) -> dict[str, float]:
    return {c["id"]: float(c["duration"]) for c in cases
            if isinstance(c, dict) and isinstance(c.get("id"), str) and isinstance(c.get("duration"), (int, float))}


def _newest_run_durations(reports_dir: str, *, exclude: str | None = None) -> dict[str, float]:
    newest, newest_time = None, -1.0
    try:
        entries = list(os.scandir(reports_dir))
    except OSError:
        return {}
    for entry in entries:
        if not entry.is_dir() or entry.name == exclude:
            continue
        try:
            mtime = os.stat(os.path.join(entry.path, "results.json")).st_mtime
        except OSError:
            continue
        if mtime > newest_time:
            newest, newest_time = entry.path, mtime
    return _results_durations(os.path.join(newest, "results.json")) if newest else {}


def _results_durations(path: str) -> dict[str, float]:
    try:
        with open(path) as fh:
            cases = json.load(fh).get("cases") or []
    except (OSError, ValueError, AttributeError):
        return {}                   # an unreadable results file only costs the ordering
    return _durations_of(cases)


def waiting_first(items: list, durations: dict[str, float]) -> None:
    """Order pytest items in place: longest first by their previous duration (stable for ties), then
    each waiting one (>= WAITING) followed by the next SHORT_PER_WAIT short ones. A test with no
    previous duration (the harness's own tests: results.json has only cases) counts as its
    `expected_duration(seconds)` marker says, else as UNKNOWN."""
    def expected(item) -> float:
        marker = item.get_closest_marker("expected_duration")
        return float(marker.args[0]) if marker and marker.args else UNKNOWN
    seconds = {item.nodeid: durations[item.nodeid] if item.nodeid in durations else expected(item) for item in items}
    longest = sorted(items, key=lambda item: -seconds[item.nodeid])
    waiting = [i for i in longest if seconds[i.nodeid] >= WAITING]
    short = longest[len(waiting):]
    items[:] = []
    for n, item in enumerate(waiting):
        items.append(item)
        items.extend(short[n * SHORT_PER_WAIT:(n + 1) * SHORT_PER_WAIT])
    items.extend(short[len(waiting) * SHORT_PER_WAIT:])


def one_at_a_time(config) -> None:
    """Have xdist's load scheduler send cases one by one (unless the user chose a chunk size)."""
    if getattr(config.option, "maxschedchunk", "absent") is None:
        config.option.maxschedchunk = 1


def grouped(config) -> None:
    """Run xdist with --dist loadgroup unless the user chose a --dist: the cases marked
    xdist_group(SCAPY_GROUP) share one worker (harness/peer.py); every other case is a unit of its
    own, handed out in the order above, two at a time per worker (harness/scheduler.py).

    With it, a crashed worker is not replaced (--max-worker-restart 0, unless the user gave one):
    pytest-xdist 3.8.0's loadgroup scheduler hangs the run when it replaces a crashed worker (it
    requeues the dead worker's finished units; pytest-xdist issues 1323, 1327 and 1378, fixed after
    that release). Without a replacement xdist stops the run at once, saying "worker gwN crashed and
    worker restarting disabled", and the crashed case fails."""
    if getattr(config.option, "dist", None) == "load" and not any(
            a == "-d" or a.startswith("--dist") for a in config.invocation_params.args):
        config.option.dist = "loadgroup"
        config.socklab_loadgroup = True         # its scheduler starts with the first collection (harness/scheduler.py)
        if getattr(config.option, "maxworkerrestart", "absent") is None:
            config.option.maxworkerrestart = 0
