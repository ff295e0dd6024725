"""The fork server for xdist workers (harness/forkserver.py, harness/forkclient.py), driven as execnet
drives it: a client process started with a bootstrap line on its stdin, the forked worker's output on
its stdout, the worker's exit status as the client's."""

from __future__ import annotations

import os
import select
import shlex
import signal
import subprocess
import sys
import time

import pytest

from harness.forkserver import Server


@pytest.fixture(scope="module")
def server():
    srv = Server()
    assert srv.wait_ready(), "the fork server did not come up"
    yield srv
    srv.stop()


_started: list = []


@pytest.fixture(autouse=True)
def _no_client_left():
    """A test that fails half-way leaves no client behind, and so no worker: a killed client's
    connection closes and the server sends its worker SIGTERM."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _client(server, code: str, **kw) -> subprocess.Popen:
    """A client as execnet starts one (the spec's python= plus `-u -c LINE`), fed `code` as the line."""
    argv = shlex.split(server.spec()) + ["-u", "-c", "import sys;exec(eval(sys.stdin.readline()))"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    _started.append(proc)
    proc.stdin.write((repr(code) + "\n").encode())
    proc.stdin.flush()
    return proc


def _read_line(stream, timeout: float = 10.0) -> bytes:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no output from the worker in time"
    return stream.readline()


def test_the_worker_runs_the_line_forked_from_the_server_in_our_folder_and_environment(server, tmp_path):
    env = dict(os.environ, SOCKLAB_FORK_TEST="here")
    proc = _client(server, "import os, sys\n"
                           "print(os.getppid(), os.getcwd(), os.environ.get('SOCKLAB_FORK_TEST'), sys.argv)\n"
                           "sys.exit(3)", cwd=tmp_path, env=env)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 3, err
    ppid, cwd, value, argv = out.decode().split(" ", 3)
    assert int(ppid) == server.proc.pid             # forked by the server, not started by us
    assert (cwd, value, argv.strip()) == (str(tmp_path), "here", "['-c']")
    assert "pytest" in _modules_of(server), "the worker did not start from the server's imports"


def _modules_of(server) -> str:
    proc = _client(server, "import sys; print(' '.join(sorted(sys.modules)))")
    out, _ = proc.communicate(timeout=10)
    return out.decode()


def test_the_line_may_be_longer_than_a_pipe_read(server):
    filler = "x" * 200_000          # execnet's own line carries its gateway's source, ~70 kB
    proc = _client(server, f"filler = {filler!r}\nprint(len(filler))")
    out, err = proc.communicate(timeout=10)
    assert (proc.returncode, out.strip()) == (0, b"200000"), err


def test_an_uncaught_exception_exits_1_with_its_traceback(server):
    proc = _client(server, "raise ValueError('in the worker')")
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert b"ValueError: in the worker" in err


def test_a_worker_killed_by_a_signal_kills_its_client_with_the_same_signal(server):
    proc = _client(server, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def test_a_killed_client_ends_its_worker_with_sigterm(server):
    proc = _client(server, "import signal, sys\n"
                           "def term(*a):\n"
                           "    print('terminated', flush=True); sys.exit(0)\n"
                           "signal.signal(signal.SIGTERM, term)\n"
                           "print('up', flush=True)\n"
                           "while True: signal.pause()")
    assert _read_line(proc.stdout) == b"up\n"
    proc.kill()                     # as execnet's kill() after a timeout
    proc.wait(timeout=10)
    assert _read_line(proc.stdout) == b"terminated\n"      # the worker still holds the pipe


def test_sigterm_to_the_client_is_passed_on_to_the_worker(server):
    proc = _client(server, "import signal, sys\n"
                           "signal.signal(signal.SIGTERM, lambda *a: sys.exit(9))\n"
                           "print('up', flush=True)\n"
                           "while True: signal.pause()")
    assert _read_line(proc.stdout) == b"up\n"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert proc.returncode == 9


def test_a_client_not_started_by_the_servers_parent_gets_no_worker(server, tmp_path):
    marker = tmp_path / "ran"
    # the same client, one process further down (sh's child): the server refuses the connection
    argv = shlex.split(server.spec()) + ["-u", "-c", "import sys;exec(eval(sys.stdin.readline()))"]
    line = repr(f"open({str(marker)!r}, 'w').close()")
    proc = subprocess.run(["sh", "-c", f"echo {shlex.quote(line)} | {shlex.join(argv)}; echo status $?"],
                          capture_output=True, timeout=10)
    assert b"status 1" in proc.stdout, proc.stderr
    assert not marker.exists()


def test_a_client_without_a_server_says_so():
    argv = [sys.executable, "-S", "-I", os.path.join(os.path.dirname(Server.__init__.__code__.co_filename),
                                                      "forkclient.py"), f"socklab-forkserver-none-{time.time()}"]
    proc = subprocess.run(argv, capture_output=True, timeout=10)
    assert proc.returncode == 1
    assert b"the fork server for xdist workers" in proc.stderr and b"is not there" in proc.stderr


def test_a_stopped_server_exits():
    srv = Server()
    assert srv.wait_ready()
    srv.stop()
    assert srv.proc.returncode == 0


def test_a_closed_server_forks_no_more_but_tells_its_clients_when_their_workers_exit():
    """Once the controller's loop has ended (close()), the server takes no new client, yet a client
    still running gets its worker's exit status, and the server exits after its last worker."""
    srv = Server()
    assert srv.wait_ready()
    running = _client(srv, "import sys; print('up', flush=True); sys.stdin.readline(); sys.exit(7)")
    assert _read_line(running.stdout) == b"up\n"
    srv.close()
    late = _client(srv, "print('forked')")
    assert late.wait(timeout=10) != 0               # refused: the server listens no more
    assert srv.proc.poll() is None and running.poll() is None
    running.stdin.write(b"go\n")
    running.stdin.flush()
    assert running.wait(timeout=10) == 7
    assert srv.proc.wait(timeout=10) == 0


def test_the_gateway_source_compiled_ahead_runs_as_the_whole_line_would():
    from harness import forkserver
    forkserver._compile_gateway()
    source = forkserver._gateway["source"]
    text = source + "\nmarker = serve.__name__\nraise ValueError('trailer')"
    ahead, plain = {"__name__": "__main__"}, {"__name__": "__main__"}
    for run, ns in ((forkserver._run_bootstrap, ahead), (exec, plain)):
        with pytest.raises(ValueError) as info:
            run(text, ns)
        assert info.traceback[-1].lineno == source.count("\n") + 2      # the trailer's own line number
    assert ahead["marker"] == plain["marker"] == "serve"
    assert sorted(k for k in ahead if k != "__builtins__") == sorted(k for k in plain if k != "__builtins__")
    other = {}
    forkserver._run_bootstrap("value = 41 + 1", other)     # not execnet's: compiled as it comes
    assert other["value"] == 42


FRESH_CHECK = r'''
import io, json, os, sys, warnings
from harness.forkserver import Fresh, _fork

fresh = Fresh()                               # as the plugin takes it, at its import
r, w = os.pipe()
extra = os.open(os.devnull, os.O_RDONLY)      # a descriptor of the parent's, e.g. pytest's capture file


class AssertionRewritingHook:                 # pytest's import hook, by the name restore() looks for
    def find_spec(self, *args):
        return None


with warnings.catch_warnings(record=True):    # as pytest's early configuration records warnings
    sys.meta_path.insert(0, AssertionRewritingHook())
    sys.stdout = io.StringIO()                # as pytest's capture replaces sys's streams
    if sys.path:
        sys.path[0] = "/the/script/folder"
        fresh.path0 = "/the/script/folder"

    def child():
        fresh.restore(keep=w)
        with warnings.catch_warnings():       # a warning shown as a new interpreter shows it, not recorded
            warnings.simplefilter("always")
            shown = []
            warnings._showwarnmsg_impl = shown.append
            warnings.warn("shown")
        os.write(w, json.dumps({
            "parent_fds_open": [fd for fd in (r, extra) if os.path.exists(f"/proc/self/fd/{fd}")],
            "stdin": os.readlink("/proc/self/fd/0"), "stdout": sys.stdout is sys.__stdout__,
            "hooks": [type(f).__name__ for f in sys.meta_path].count("AssertionRewritingHook"),
            "filters": warnings.filters is fresh.filters, "shown": len(shown),
            "impl": warnings._showwarnmsg_impl is fresh.showwarnmsg, "path0": sys.path[0],
        }).encode())
    proc = _fork(child)
os.close(w)
print(os.read(r, 65536).decode(), proc.wait(timeout=10), extra, file=sys.__stderr__)
'''


def test_a_server_forked_from_pytest_starts_as_a_new_interpreter_would(tmp_path):
    """Fresh.restore(), in the child of a fork of pytest's controller: no descriptor of the parent's
    but stdio and the control socket (stdin from /dev/null), sys's streams on fds 0-2, the warning
    filters and display of the interpreter's start, no import hook of the parent's pytest, and
    `python -c`'s first path entry."""
    proc = subprocess.run([sys.executable, "-c", FRESH_CHECK], capture_output=True, text=True, timeout=30,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    import json
    text, status, extra = proc.stderr.rsplit(maxsplit=2)
    seen = json.loads(text)
    assert status == "0"
    assert seen["parent_fds_open"] == [] and int(extra) > 2, seen     # open in the parent, closed in the child
    assert seen["stdin"] == "/dev/null" and seen["stdout"] is True, seen
    assert seen["hooks"] == 0 and seen["filters"] is True and seen["impl"] is True, seen
    assert seen["path0"] == "", seen
