"""A newer sysctl the kernel lacks (tcp_rto_min_us on 6.1) is recorded as absent and the case runs on;
on this kernel every one exists, so a made-up name stands in for it."""

import pytest

from harness import topology
from harness.errors import SysctlAbsent
from harness.lab import Lab

MISSING = "net.ipv4.tcp_socklab_not_in_this_kernel"


def test_a_missing_newer_sysctl_is_recorded_as_absent(monkeypatch, tmp_path):
    monkeypatch.setattr(topology, "NEWER_SYSCTLS", topology.NEWER_SYSCTLS | {MISSING})
    with Lab(sysctls={MISSING: 5, "net.ipv4.tcp_fin_timeout": 7}, artifacts_dir=str(tmp_path)) as lab:
        assert lab.hosts.client.sysctls[MISSING] == topology.ABSENT
        assert lab.hosts.client.sysctls["net.ipv4.tcp_fin_timeout"] == "7"
        assert lab.hosts.server.get_sysctl(MISSING) == topology.ABSENT
        lab.set_sysctl("server", MISSING, 6)            # no error: recorded, with a note
        assert any(f"this kernel has no {MISSING} (recorded as absent)" in text for _, text in lab.notes)
        # the pinned buffer limits: the window scale does not follow the machine's memory
        assert lab.hosts.client.get_sysctl("net.ipv4.tcp_rmem").split() == ["4096", "131072", "6291456"]


def test_any_other_missing_sysctl_is_an_error_naming_it(tmp_path):
    with pytest.raises(SysctlAbsent, match=MISSING):
        with Lab(sysctls={MISSING: 5}, artifacts_dir=str(tmp_path)):
            pass
