"""A kernel's version as baselines key it: the upstream version, not the build string.

`uname -r` names a build (`6.18.44-fc-v782`, `6.1.0-57-amd64`); two builds of one version behave the
same as far as the catalogue can tell, so baselines are keyed on the version: the leading
`X.Y.Z` of the release, or for Debian's kernels (whose release carries an ABI number, 6.1.0-57) the
version in `uname -v` (`#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (...)`).
"""

from __future__ import annotations

import os
import re


def version_of(release: str, build: str = "") -> str:
    """'6.18.44-fc-v782' -> '6.18.44'; ('6.1.0-57-amd64', '... Debian 6.1.192-3 ...') -> '6.1.192'."""
    m = re.search(r"Debian (\d+\.\d+(?:\.\d+)?)", build or "")
    if m:
        return m.group(1)
    m = re.match(r"(\d+\.\d+(?:\.\d+)?)", release or "")
    return m.group(1) if m else (release or "unknown")


def running() -> str:
    """The version of the kernel this process runs on."""
    u = os.uname()
    return version_of(u.release, u.version)


def key(version: str) -> tuple:
    """A sort key: '6.12.118' -> (6, 12, 118)."""
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3]) or (0,)
