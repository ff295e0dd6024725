"""Starting socket programs cheaply: one launcher process per harness process, forked per program.

A socket program is harness/agent.py in a namespace. Starting a Python interpreter for each costs
about 45 ms of CPU and as much wall time (the interpreter, then json, socket, ctypes); a case starts
two or more. Instead, each harness process starts `python -S agent.py --launcher FD` once, and every
program is a fork() of it (about 1 ms) that enters its namespace and serves its control socket.

`spawn(netns_path, control, out_fd)` returns the program's pid and a pidfd (poll() on it is readable
once the process has exited); `reap(pid)` then gives its exit status. The launcher exits when its
socket to the harness closes, which a harness killed by SIGKILL also does; PR_SET_PDEATHSIG then
kills its programs. `close()` ends it (pytest_unconfigure).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading

from .errors import SetupError

AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agent.py")


class Launcher:
    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen([sys.executable, "-S", "-u", AGENT, "--launcher", str(theirs.fileno())],
                                     pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        self.sock = ours
        self.lock = threading.Lock()
        self.pid_owner = os.getpid()     # a forked harness process starts its own launcher

    def _ask(self, msg: dict, fds=()) -> tuple[dict, list]:
        with self.lock:
            try:
                socket.send_fds(self.sock, [json.dumps(msg).encode()], list(fds))
                data, got, _flags, _addr = socket.recv_fds(self.sock, 4096, 1)
            except OSError as exc:
                raise SetupError(f"the socket-program launcher (pid {self.proc.pid}) is gone: {exc}") from None
        if not data:
            raise SetupError(f"the socket-program launcher (pid {self.proc.pid}) exited (status {self.proc.poll()})")
        answer = json.loads(data)
        if "error" in answer:
            raise SetupError(answer["error"])
        return answer, got

    def spawn(self, netns_path: str, control: socket.socket, out_fd: int) -> tuple[int, int]:
        """Fork a program into `netns_path` serving `control`, its stdout/stderr on `out_fd`: (pid, pidfd)."""
        answer, fds = self._ask({"netns": netns_path}, [control.fileno(), out_fd])
        return answer["pid"], fds[0]

    def reap(self, pid: int) -> int:
        """The exit status of a program whose pidfd said it has exited (-N: killed by signal N)."""
        return self._ask({"reap": pid})[0]["status"]

    def close(self):
        self.sock.close()               # EOF: the launcher exits
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_launcher: Launcher | None = None
_lock = threading.Lock()


def launcher() -> Launcher:
    """This process's launcher, started on first use (and again after a fork, or if it died)."""
    global _launcher
    with _lock:
        if _launcher is None or _launcher.proc.poll() is not None or _launcher.pid_owner != os.getpid():
            _launcher = Launcher()
        return _launcher


def close() -> None:
    global _launcher
    with _lock:
        if _launcher is not None and _launcher.pid_owner == os.getpid():
            _launcher.close()
        _launcher = None


def wait_exit(pidfd: int, timeout: float) -> bool:
    """True once the process of `pidfd` has exited, False if it still runs after `timeout` seconds."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(max(0, timeout) * 1000))


def kill(pidfd: int) -> None:
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
