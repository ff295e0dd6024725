"""Names of everything the harness creates: a common prefix, the owner pid, a per-process counter.

A name says who owns it, so `socklab cleanup` can remove what a killed run left (owner pid dead)
and nothing else. Namespaces and tracefs instances: ``slab-<pid>-<worker>-<n>-<role>``.
Dynamic trace events (kprobes: global, not per instance) live in the group ``slab_<pid>``.
Interface names must fit IFNAMSIZ (15 characters): ``sl<pid hex><n base36><role letter>``.
"""

from __future__ import annotations

import itertools
import os
import re
import time

PREFIX = "slab"
_NAME_RE = re.compile(rf"^{PREFIX}-(?P<pid>\d+)-")
_GROUP_RE = re.compile(rf"^{PREFIX}_(?P<pid>\d+)$")
_counter = itertools.count(1)   # per-process sequence; each test takes the next number


def worker() -> str:
    """The pytest-xdist worker id ('gw0', ...) or 'main' outside xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def next_index() -> int:
    """A number unique within this process, for one test's resources."""
    return next(_counter)


def resource_name(index: int, role: str) -> str:
    """Name of a namespace or tracefs instance owned by this process."""
    return f"{PREFIX}-{os.getpid()}-{worker()}-{index}-{role}"


def ifname(index: int, role: str) -> str:
    """Interface name with prefix and owner pid that fits IFNAMSIZ (at most 15 characters)."""
    name = f"sl{os.getpid():x}{_base36(index % 36**4)}{role[0]}"
    assert len(name) <= 15, name
    return name


def event_group() -> str:
    """Group name of this process's tracefs dynamic events (letters, digits, '_' only): slab_<pid>."""
    return f"{PREFIX}_{os.getpid()}"


def event_group_owner(group: str) -> int | None:
    """The owner pid of one of our dynamic event groups, or None if the group is not ours."""
    m = _GROUP_RE.match(group)
    return int(m.group("pid")) if m else None


def owner_pid(name: str) -> int | None:
    """The owner pid written into one of our names, or None if the name is not ours."""
    m = _NAME_RE.match(name)
    return int(m.group("pid")) if m else None


def pid_alive(pid: int) -> bool:
    """True while process `pid` runs; a zombie (killed, not yet reaped) counts as dead."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def default_run_name() -> str:
    """run-<date>-<time>-<pid>: two runs started in the same second never share a folder."""
    return time.strftime("run-%Y%m%d-%H%M%S") + f"-{os.getpid()}"
