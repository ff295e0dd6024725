"""Named settings profiles: sysctls applied inside every test namespace of a run (never the host's)."""

from __future__ import annotations

from .errors import SocklabError
from .sysctls import check_key

PROFILES = {
    "default": {},
    "no-timestamps": {"net.ipv4.tcp_timestamps": "0"},
    "no-timewait": {"net.ipv4.tcp_max_tw_buckets": "0"},
    "abort-on-overflow": {"net.ipv4.tcp_abort_on_overflow": "1"},
    "no-sack": {"net.ipv4.tcp_sack": "0"},
    "no-wscale": {"net.ipv4.tcp_window_scaling": "0"},
    "syncookies-always": {"net.ipv4.tcp_syncookies": "2"},
}


def sysctls_for(profile: str | None, extra: list[str] = ()) -> dict:
    """The sysctls of `profile` plus KEY=VALUE items (which win); a clear error for unknown names."""
    if profile and profile not in PROFILES:
        raise SocklabError(f"unknown profile {profile!r}; known: {', '.join(sorted(PROFILES))}")
    out = dict(PROFILES.get(profile or "default", {}))
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SocklabError(f"sysctl {item!r}: expected KEY=VALUE, e.g. net.ipv4.tcp_timestamps=0")
        out[key.strip()] = value.strip()
    for key in out:
        check_key(key, where_of(key, profile, extra))
    return out


def where_of(key: str, profile: str | None, extra=()) -> str:
    """Where a run's sysctl came from, for error lines: the command-line item or the profile."""
    for item in extra:
        if item.partition("=")[0].strip() == key:
            return f"--socklab-sysctl {item.strip()}"
    return f"profile {profile}"
