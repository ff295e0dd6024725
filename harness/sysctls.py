"""Sysctls of the test namespaces: which keys are allowed, and a check of a run's settings up front.

Only `net.*` keys are accepted: they are the ones a network namespace has its own copy of, so
writing them inside a test namespace never touches the host. Anything else (`kernel.*`, `vm.*`)
would be written into whatever namespace the writer is in, the host's, and is refused before
anything is written.

`check(sysctls)` tries a run's sysctls once, in a throwaway namespace, before the first case
(`socklab run`, pytest_configure), and returns one line per problem: a key outside `net.*`, a key
this kernel does not have at all, a key the host has but a namespace does not, a value the kernel
rejects, a read-only key. The same function decides for every caller, so a kernel that lacks a
setting is reported the same way everywhere.
"""

from __future__ import annotations

import errno
import os

from . import errors
from .errors import SetupError

ALLOWED_PREFIX = "net."


class SysctlError(SetupError):
    """A sysctl that cannot be used in a test namespace: one line saying which, why and where."""


class SysctlAbsent(SysctlError, errors.SysctlAbsent):
    """The key does not exist inside a network namespace (this kernel lacks it, or it is host-only)."""


PER_INTERFACE = ("conf", "neigh")           # net.ipv4.conf.IF.*, net.ipv6.neigh.IF.*, ...
NOT_AN_INTERFACE = ("all", "default", "lo")
VETH = "<veth>"


def recorded_key(key: str) -> str:
    """The key as results and baselines keep it: a per-interface key names the host's veth end as
    `<veth>`, since its real name carries the run's process id and counter (a case that sets
    net.ipv4.neigh.sl1a2b3c.retrans_time_ms would otherwise never have the settings of its baseline).
    A role prefix ("client:") is kept."""
    role, sep, bare = key.rpartition(":")
    parts = bare.split(".")
    if len(parts) > 4 and parts[0] == "net" and parts[2] in PER_INTERFACE and parts[3] not in NOT_AN_INTERFACE:
        parts[3] = VETH
    return role + sep + ".".join(parts)


def check_key(key: str, where: str) -> None:
    """Refuse a key outside net.* (it would be the host's), naming where it came from."""
    if not isinstance(key, str) or not key.startswith(ALLOWED_PREFIX) or ".." in key or "/" in key:
        raise SysctlError(f"{where}: sysctl {key!r} refused: only net.* keys are allowed (they are set inside "
                          f"the test namespaces; any other key would change the host)")


def path_of(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def write(key: str, value, where: str = "sysctl") -> None:
    """Write `key` in the calling thread's network namespace; a failure is one SysctlError line."""
    check_key(key, where)
    path = path_of(key)
    try:
        with open(path, "w") as fh:
            fh.write(f"{value}\n")
    except FileNotFoundError:
        raise SysctlAbsent(f"{where}: sysctl {key} does not exist in a network namespace of this kernel "
                           f"({os.uname().release})") from None
    except PermissionError:
        raise SysctlError(f"{where}: sysctl {key} is read-only ({path})") from None
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise SysctlError(f"{where}: the kernel rejects {key}={value!r} (EINVAL: invalid argument)") from None
        raise SysctlError(f"{where}: cannot write {key}={value!r}: {exc.strerror or exc}") from None


def check(sysctls: dict, where="sysctl") -> list[str]:
    """One line per sysctl in `sysctls` that cannot be set in a test namespace (empty: all fine).

    `where` names the source of the settings in each line: a string, or a function of the key (the
    command-line item or profile it came from). Keys are checked without privileges; values are
    tried in one throwaway network namespace (needs root; without it only the keys are checked,
    since every case skips anyway).
    """
    where_of = where if callable(where) else (lambda key: where)
    problems = []
    for key in sysctls:
        try:
            check_key(key, where_of(key))
        except SysctlError as exc:
            problems.append(str(exc))
    if problems or not sysctls:
        return problems
    from . import nsutil, privileges
    if privileges.missing():
        return problems
    found = nsutil.run_in(_try_all, dict(sysctls), where_of, new=True)
    return [_absent(p[0], where_of(p[0])) if isinstance(p, tuple) else p for p in found]


def _try_all(sysctls: dict, where_of) -> list[str]:
    problems = []
    for key, value in sysctls.items():
        try:
            write(key, value, where_of(key))
        except SysctlAbsent:
            problems.append((key,))
        except SysctlError as exc:
            problems.append(str(exc))
    return problems


def _absent(key: str, where: str) -> str:
    """Why `key` is missing from a namespace; runs in the caller's thread, in the host's namespace."""
    if os.path.exists(path_of(key)):
        return f"{where}: sysctl {key} exists on the host but not inside a network namespace (not per-namespace)"
    return f"{where}: sysctl {key} does not exist in this kernel ({os.uname().release})"
