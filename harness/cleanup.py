"""Remove what a killed run left: only resources whose name has our prefix and whose owner pid is dead."""

from __future__ import annotations

import os

from . import names, nsutil, timewait, tracefs
from .topology import kill_processes_in, remove_netns, remove_stale_block, stale_blocks


def leftover_namespaces() -> list[str]:
    try:
        entries = os.listdir(nsutil.NETNS_DIR)
    except FileNotFoundError:
        return []
    out = []
    for name in sorted(entries):
        pid = names.owner_pid(name)
        if pid is not None and not names.pid_alive(pid):
            out.append(name)
    return out


def cleanup(dry_run: bool = False) -> list[str]:
    """Remove leftovers; return one line per thing removed (or that would be, with dry_run)."""
    done = []
    for name in leftover_namespaces():
        if dry_run:
            done.append(f"would remove namespace {name}")
            continue
        pids = kill_processes_in(nsutil.netns_path(name))
        remove_netns(name)
        done.append(f"removed namespace {name}" + (f" (killed processes {pids})" if pids else ""))
    for path in stale_blocks():
        if dry_run:
            done.append(f"would remove address claim {path}")
            continue
        if remove_stale_block(path):
            done.append(f"removed address claim {path}")
    if tracefs.ensure_mounted() is None or os.path.isdir(os.path.join(tracefs.TRACEFS, "instances")):
        for path in tracefs.leftovers():
            if dry_run:
                done.append(f"would remove tracefs instance {path}")
                continue
            err = tracefs.remove_quietly_busy(path)
            done.append(f"could not remove {err}" if err else f"removed tracefs instance {path}")
        # After the instances: an event still enabled in one of them cannot be removed.
        for group in timewait.leftovers():
            if dry_run:
                done.append(f"would remove trace events {group}/*")
                continue
            errors = timewait.remove_group(group)
            done += [f"could not remove trace event {e}" for e in errors] or [f"removed trace events {group}/*"]
    return done
