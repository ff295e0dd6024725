"""Bad input a case or a user gives: each is one line saying what was wrong and where (no privileges)."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from harness import sysctls
from harness.errors import BadArgument, ExpectationSyntaxError, SocklabError, UnknownRole, check_port
from harness.faults import Faults
from harness.profiles import sysctls_for

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def one_line(exc) -> str:
    text = str(exc.value if hasattr(exc, "value") else exc)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("key", ["kernel.domainname", "vm.swappiness", "net./../kernel/domainname", "fs.file-max"])
def test_only_net_keys(key):
    with pytest.raises(sysctls.SysctlError) as exc:
        sysctls.check_key(key, "lab_sysctls")
    assert one_line(exc).startswith("lab_sysctls: sysctl") and "only net.* keys" in str(exc.value)


def test_check_refuses_host_keys_without_touching_anything():
    # No namespace is made for a refused key, with or without privileges.
    assert sysctls.check({"kernel.domainname": "x"}, "--socklab-sysctl kernel.domainname=x") == [
        "--socklab-sysctl kernel.domainname=x: sysctl 'kernel.domainname' refused: only net.* keys are allowed "
        "(they are set inside the test namespaces; any other key would change the host)"]


def test_profiles_and_command_line_name_the_source():
    with pytest.raises(SocklabError) as exc:
        sysctls_for(None, ["net.ipv4.tcp_sack=0", "kernel.domainname=x"])
    assert one_line(exc).startswith("--socklab-sysctl kernel.domainname=x:")
    assert sysctls_for("no-sack", ["net.ipv4.tcp_timestamps=0"]) == {"net.ipv4.tcp_sack": "0",
                                                                     "net.ipv4.tcp_timestamps": "0"}


def _faults():
    hosts = {"client": SimpleNamespace(role="client"), "server": SimpleNamespace(role="server")}
    topology = SimpleNamespace(hosts=hosts, peer_of=lambda h: h, next_hop=lambda h: h)
    return Faults(topology, capture=None)


@pytest.mark.parametrize("count", [0, -2, 1.5, True])
def test_drop_count_must_be_positive(count):
    with pytest.raises(BadArgument) as exc:
        _faults().drop("client > server", "S", count=count)
    assert f"count={count!r}" in one_line(exc) and "faults.drop('client > server', 'S')" in str(exc.value)


@pytest.mark.parametrize("call", [lambda f: f.delay("router"), lambda f: f.block_output("router", "R")])
def test_unknown_role_in_faults(call):
    with pytest.raises(UnknownRole) as exc:
        call(_faults())
    assert "unknown role 'router'" in one_line(exc) and "client, server" in str(exc.value)


@pytest.mark.parametrize("direction", ["router > server", "client > router"])
def test_unknown_role_in_a_direction_names_it_first(direction):
    """A direction is notation: its error shows the text with a caret under the unknown role, and
    the first line says what was wrong."""
    with pytest.raises(ExpectationSyntaxError) as exc:
        _faults().drop(direction, "S")
    first = str(exc.value).splitlines()[0]
    assert "unknown role 'router'" in first and "['client', 'server']" in first, str(exc.value)


@pytest.mark.parametrize("port", [0, -1, 65536, 99999, "80", 1.0])
def test_ports_are_1_to_65535(port):
    with pytest.raises(BadArgument) as exc:
        check_port(port, "lab.expect_segments")
    assert one_line(exc) == f"lab.expect_segments: port={port!r} is not a TCP port (1..65535)"


@pytest.mark.parametrize("port", [None, 1, 50000, 65535])
def test_valid_ports_pass(port):
    check_port(port, "lab.expect_segments")


def test_unwritable_reports_folder_is_a_usage_error(tmp_path):
    """A reports folder that cannot be made (here: under a plain file) is one line and exit 4, no
    INTERNALERROR from xdist workers."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_x.py"), "-n", "2", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), "-c", os.devnull, "--socklab-reports", str(blocker / "reports")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "INTERNALERROR" not in proc.stdout + proc.stderr
    lines = [l for l in proc.stderr.splitlines() if "socklab-reports" in l]
    assert len(lines) == 1 and "cannot write the run folder" in lines[0] and "Not a directory" in lines[0], proc.stderr
