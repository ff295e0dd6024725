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
