"""Sysctls reach the test namespaces only, and a bad one is one line, once, before any case (root)."""

from __future__ import annotations

import pytest

from harness import nsutil, sysctls
from harness.errors import UnknownRole
from harness.lab import Lab

CASE = '''
def test_a(lab):
    pass

def test_b(lab):
    pass
'''

HOST_KEY = "kernel.domainname"


def host_value(key=HOST_KEY):
    return nsutil.read_sysctl(key)


def test_check_names_each_problem_in_one_line():
    got = sysctls.check({"net.ipv4.tcp_fin_timeout": "abc",
                         "net.ipv4.tcp_available_congestion_control": "reno",
                         "net.ipv4.tcp_no_such_key": "1",
                         "net.ipv4.tcp_syn_retries": "3"}, "--socklab-sysctl")
    assert got == [
        "--socklab-sysctl: the kernel rejects net.ipv4.tcp_fin_timeout='abc' (EINVAL: invalid argument)",
        "--socklab-sysctl: sysctl net.ipv4.tcp_available_congestion_control is read-only "
        "(/proc/sys/net/ipv4/tcp_available_congestion_control)",
        f"--socklab-sysctl: sysctl net.ipv4.tcp_no_such_key does not exist in this kernel ({__import__('os').uname().release})",
    ]


def test_check_leaves_the_host_as_found():
    before = host_value("net.ipv4.tcp_syn_retries")
    assert sysctls.check({"net.ipv4.tcp_syn_retries": str(int(before) % 6 + 1)}) == []
    assert host_value("net.ipv4.tcp_syn_retries") == before


@pytest.mark.parametrize("item,expected", [
    ("kernel.domainname=socklab-was-here", "--socklab-sysctl kernel.domainname=socklab-was-here: sysctl "
                                           "'kernel.domainname' refused: only net.* keys"),
    ("net.ipv4.tcp_no_such_key=1", "--socklab-sysctl net.ipv4.tcp_no_such_key=1: sysctl net.ipv4.tcp_no_such_key "
                                   "does not exist in this kernel"),
    ("net.ipv4.tcp_fin_timeout=abc", "--socklab-sysctl net.ipv4.tcp_fin_timeout=abc: the kernel rejects "
                                     "net.ipv4.tcp_fin_timeout='abc'"),
    ("net.ipv4.tcp_available_congestion_control=reno", "is read-only"),
])
def test_a_bad_run_sysctl_is_one_line_before_any_case(run_pytest, item, expected):
    before = host_value()
    run = run_pytest(CASE, "-n", "2", "--socklab-sysctl", item, subprocess=True)
    assert run.returncode == 4, run.output
    errors = [l for l in run.output.splitlines() if l.startswith("ERROR:")]
    assert len(errors) == 1 and expected in errors[0], run.output
    assert "passed" not in run.output and "failed" not in run.output, run.output
    assert host_value() == before


def test_lab_refuses_host_keys_and_unknown_roles_in_one_line():
    before = host_value()
    with Lab(trace_states=False, start_programs=False) as lab:
        with pytest.raises(sysctls.SysctlError) as exc:
            lab.set_sysctl("client", HOST_KEY, "socklab-was-here")
        assert str(exc.value).startswith("set_sysctl on host client: sysctl 'kernel.domainname' refused")
        with pytest.raises(sysctls.SysctlError) as exc:
            lab.hosts.server.set_sysctl("net.ipv4.tcp_fin_timeout", "abc")
        assert str(exc.value) == ("set_sysctl on host server: the kernel rejects net.ipv4.tcp_fin_timeout='abc' "
                                  "(EINVAL: invalid argument)")
        with pytest.raises(sysctls.SysctlError, match="is read-only"):
            lab.set_sysctl("server", "net.ipv4.tcp_available_congestion_control", "reno")
        with pytest.raises(UnknownRole) as exc:
            lab.set_sysctl("router", "net.ipv4.tcp_fin_timeout", 1)
        assert str(exc.value) == "lab.set_sysctl: unknown role 'router'; this lab's hosts are client, server"
        lab.set_sysctl("server", "net.ipv4.tcp_fin_timeout", 7)
        assert lab.hosts.server.get_sysctl("net.ipv4.tcp_fin_timeout") == "7"
    assert host_value() == before


def test_lab_sysctls_outside_net_are_refused_before_any_namespace():
    with pytest.raises(sysctls.SysctlError, match="^lab_sysctls: sysctl 'kernel.domainname' refused"):
        Lab(sysctls={HOST_KEY: "x"}, trace_states=False, start_programs=False).__enter__()
