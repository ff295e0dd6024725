"""The process xdist starts for a worker that harness/forkserver.py forks: a stand-in, ~15 ms.

xdist runs `<python> -u -c LINE` for each local worker, with its pipes as stdin and stdout; the
fork server's spec makes that `python -S -I forkclient.py SOCKET -u -c LINE`. This hands the pipes
(and stderr), the working folder and the environment to the server, which forks the worker on them,
and then waits: it exits as the worker exited, and passes a SIGTERM on to it. SIGINT is ignored:
the terminal sends Ctrl-C to the worker itself (same process group), which then tears down.

Only built-in modules, so that the stand-in costs an interpreter's start and little more:
`socket`, `signal` and `json` would import enum and re (~25 ms).
"""

import _signal
import _socket
import array
import os
import sys


def main(path: str) -> int:
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    try:
        conn.connect("\0" + path)
    except OSError as exc:
        sys.stderr.write(f"socklab: the fork server for xdist workers ({path}) is not there: {exc}\n")
        return 1
    # The message: the working folder, then the environment's entries, NUL-separated.
    fields = [os.getcwdb()] + [k + b"=" + v for k, v in os.environb.items()]
    conn.sendmsg([b"\0".join(fields)], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
    for fd in (0, 1):
        os.close(fd)            # the worker holds xdist's pipes now: their EOF must not wait for us
    pid = 0
    pending = []                # a SIGTERM that came before the worker's pid

    def forward(signum, frame):
        if pid:
            os.kill(pid, signum)
        else:
            pending.append(signum)
    _signal.signal(_signal.SIGTERM, forward)
    while True:
        data = conn.recv(64)
        if not data:
            return 1            # the server went before the worker's end was known
        word, value = data.split()
        if word == b"pid":
            pid = int(value)
            for signum in pending:
                os.kill(pid, signum)
        else:
            code = int(value)
            if code < 0:                        # killed by a signal: die of the same one
                if -code not in (_signal.SIGKILL, _signal.SIGSTOP):    # those cannot be handled anyway
                    _signal.signal(-code, _signal.SIG_DFL)
                os.kill(os.getpid(), -code)
            return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
