"""Shared fixtures of the harness's integration tests: they build real namespaces, so they run as root.

- `resources`: what the harness left on the machine for one owner pid (namespaces, tracefs
  instances, processes inside a namespace).
- `spawn`: subprocesses whose output is read against deadlines, killed at the end of the test.
- `run_pytest`: pytest (pytester, inside this process) on a case file with its own reports folder;
  `case_run_argv` and `unprivileged_argv` for a pytest subprocess, started with `spawn`.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from harness import names, nsutil, topology, tracefs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOBODY = 65534
# Variables of the pytest running these tests that must not leak into a pytest started by a test.
_PYTEST_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID",
               "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST", "PYTEST_PLUGINS")


@pytest.fixture(autouse=True)
def _root_only(privileged):
    """Every integration test builds namespaces: without privileges they skip with the plugin's reason."""


# -- what is left on the machine -------------------------------------------------------------------

class Resources:
    """Namespaces, tracefs instances and processes that carry an owner pid in their name."""

    @staticmethod
    def netns(pid: int) -> list[str]:
        """Names under /run/netns owned by `pid` (slab-<pid>-...)."""
        try:
            return sorted(n for n in os.listdir(nsutil.NETNS_DIR) if n.startswith(f"slab-{pid}-"))
        except FileNotFoundError:
            return []

    @staticmethod
    def instances(pid: int) -> list[str]:
        """tracefs instances owned by `pid`."""
        try:
            return sorted(n for n in os.listdir(os.path.join(tracefs.TRACEFS, "instances"))
                          if n.startswith(f"slab-{pid}-"))
        except FileNotFoundError:
            return []

    @staticmethod
    def procs_in(netns: str) -> list[int]:
        """Live (non-zombie) processes whose network namespace is the one bound at /run/netns/<netns>."""
        return topology.processes_in(nsutil.netns_path(netns))

    @staticmethod
    def alive(pid: int) -> bool:
        """True while `pid` exists and is not a zombie (a zombie holds no descriptor and no socket)."""
        return names.pid_alive(pid)

    @staticmethod
    def wait_gone(pids, timeout: float = 5.0) -> list[int]:
        """Wait until none of `pids` is alive; return those still alive at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            left = [p for p in pids if Resources.alive(p)]
            if not left or time.monotonic() > deadline:
                return left
            select.select([], [], [], 0.01)   # a process's end has no event we can wait on from here


@pytest.fixture
def resources() -> Resources:
    """Name: resources. Scope: function. Depends: nothing. Lists what an owner pid has on the machine:

        assert resources.netns(os.getpid()) == []
    """
    return Resources()


# -- pytest in a subprocess ------------------------------------------------------------------------

@dataclass
class PytestRun:
    """A finished pytest subprocess: exit status, output, and where its artifacts went."""

    returncode: int
    output: str
    run_dir: str

    def case_dir(self, nodeid: str) -> str:
        """The artifacts folder of `nodeid`: the one whose case.json names it."""
        cases = os.path.join(self.run_dir, "cases")
        for name in sorted(os.listdir(cases)) if os.path.isdir(cases) else ():
            try:
                with open(os.path.join(cases, name, "case.json")) as fh:
                    if json.load(fh).get("name") == nodeid:
                        return os.path.join(cases, name)
            except FileNotFoundError:
                continue
        raise AssertionError(f"no case folder under {cases} has a case.json for {nodeid}")

    def json(self, nodeid: str, name: str):
        with open(os.path.join(self.case_dir(nodeid), name)) as fh:
            return json.load(fh)


class Child:
    """A subprocess whose output (stdout and stderr together) is read against deadlines."""

    def __init__(self, argv, **kw):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, **kw)
        self.output = ""
        self.run_dir: str | None = None     # set for a pytest run: its reports/<run> folder

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_until(self, marker: str, timeout: float) -> str:
        """Read until the output holds `marker` (then return all output so far); AssertionError otherwise."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while marker not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{marker!r} not printed within {timeout} s; output so far:\n{self.output}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"process ended (status {self.proc.wait()}) before printing "
                                         f"{marker!r}:\n{self.output}")
                self.output += chunk.decode(errors="replace")
        return self.output

    def finish(self, timeout: float) -> int:
        """Wait for the end (stdin closed first) and return the exit status; the output is complete then."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            self.output += out.decode(errors="replace")
            raise AssertionError(f"process {self.pid} still running {timeout} s later:\n{self.output}") from None
        self.output += out.decode(errors="replace")
        return self.proc.returncode

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream and not stream.closed:
                stream.close()


@pytest.fixture
def spawn():
    """Name: spawn. Scope: function. Depends: nothing. Starts subprocesses killed at the end of the test:

        child = spawn([sys.executable, "-c", "print('ready')"])
        child.read_until("ready", timeout=5)
    """
    children = []

    def start(argv, **kw) -> Child:
        children.append(Child(argv, **kw))
        return children[-1]

    yield start
    for child in children:
        child.close()


RUN = "itest"      # the run folder's name in every pytest run these tests start


@pytest.fixture
def run_pytest(pytester):
    """Name: run_pytest. Scope: function. Depends: pytester. pytest inside this process (or, with
    subprocess=True, in a fresh interpreter) on a case file's text, in pytester's folder with its
    own reports folder:

        result = run_pytest("def test_x(lab): ...", "-k", "x")
        assert result.returncode == 0, result.output
    """
    runs = []

    def run(source: str, *args, subprocess: bool = False) -> PytestRun:
        pytester.makepyfile(test_case=source)
        runs.append(source)
        reports = pytester.path / f"reports{len(runs)}"      # each run of a test writes its own folder
        runner = pytester.runpytest_subprocess if subprocess else pytester.runpytest_inprocess
        result = runner("-p", "no:cacheprovider", "-q", "-rs", "--assert=plain",
                        "--socklab-reports", str(reports), "--socklab-run", RUN, *args)
        return PytestRun(int(result.ret), "\n".join(result.outlines + result.errlines), str(reports / RUN))
    return run


def case_run_argv(folder: str, *args) -> list[str]:
    """argv of a pytest subprocess on `folder`/test_case.py with its reports in `folder`/reports."""
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
            "--socklab-reports", os.path.join(folder, "reports"), "--socklab-run", RUN,
            os.path.join(folder, "test_case.py"), *args]


def child_env() -> dict:
    """This process's environment without the variables of the pytest running the tests."""
    env = {k: v for k, v in os.environ.items() if k not in _PYTEST_ENV}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# -- running as an unprivileged user ----------------------------------------------------------------

# Run as root inside `unshare --mount`: folders the unprivileged user cannot enter (root's home with
# the Python installation in it) are covered by a tmpfs holding only what the run needs, moved
# back in from a private bind mount. Only this private mount namespace sees it; then setpriv drops
# to uid/gid 65534 without any capability and execs the command.
_LAUNCHER = r"""
import ctypes, json, os, sys, tempfile
MS_MOVE, MS_BIND, MS_REC, MS_PRIVATE = 8192, 4096, 16384, 1 << 18
libc = ctypes.CDLL(None, use_errno=True)
def mount(src, dst, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        sys.exit(f"launcher: mount {src} on {dst}: {os.strerror(err)}")
mount(None, "/", None, MS_REC | MS_PRIVATE)
for hidden, children in json.loads(sys.argv[1]).items():
    kept = {}
    for child in children:
        kept[child] = tempfile.mkdtemp(dir=sys.argv[2])
        mount(os.path.join(hidden, child), kept[child], None, MS_BIND | MS_REC)
    mount("tmpfs", hidden, "tmpfs", 0, "mode=0755")
    for child, where in kept.items():
        os.mkdir(os.path.join(hidden, child))
        mount(where, os.path.join(hidden, child), None, MS_MOVE)
        os.rmdir(where)
os.execvp("setpriv", ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                      "--inh-caps=-all", "--"] + sys.argv[3:])
"""


def _blocked(path: str):
    """(first ancestor of `path` that others cannot enter, the child of it on the way) or None."""
    parts = os.path.abspath(path).strip("/").split("/")
    cur = "/"
    for part in parts:
        mode = os.stat(cur).st_mode
        if mode & (stat.S_IXOTH | stat.S_IROTH) != (stat.S_IXOTH | stat.S_IROTH):
            return cur, part
        cur = os.path.join(cur, part)
    return None


def unprivileged_argv(argv: list[str], workdir: str) -> list[str]:
    """`argv` wrapped so it runs as uid/gid 65534 with no capabilities and can still read Python and the repo."""
    for tool in ("unshare", "setpriv"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} (util-linux) is needed to run pytest as an unprivileged user")
    hidden: dict[str, list[str]] = {}
    for path in {sys.base_prefix, sys.prefix, REPO, os.path.realpath(sys.executable)}:
        blocked = _blocked(path)
        if blocked:
            if blocked[0] == "/":
                pytest.skip(f"{path} sits in a folder the unprivileged user cannot enter")
            hidden.setdefault(blocked[0], [])
            if blocked[1] not in hidden[blocked[0]]:
                hidden[blocked[0]].append(blocked[1])
    code = _LAUNCHER.replace("NOBODY", str(NOBODY))
    return ["unshare", "--mount", "--", sys.executable, "-c", code, json.dumps(hidden), workdir, *argv]
