"""The socket program that runs inside a namespace, driven one call at a time by the harness.

Run as ``python -S agent.py NETNS_PATH CONTROL_FD``, or forked by the launcher at the end of this
file (harness/launcher.py), which is how the harness starts it; stdlib only. Commands arrive as JSON lines on the control socket; every answer carries the call's
return value or its errno by name and CLOCK_MONOTONIC start and end times. Every message the agent
sends has a "type": "ready", "started" (a background call was taken up), "result" (a call's
answer) or "error" (a command it could not parse; answered, and the agent keeps serving). A call sent with
``"bg": true`` runs in a thread, so the harness can await it later ("blocked in accept").
``fork`` makes a child agent that holds copies of every descriptor and gets its own control socket,
passed back to the harness with SCM_RIGHTS.
"""

import ctypes
import errno
import json
import os
import resource
import socket
import struct
import sys
import threading
import time

FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6, 4: socket.AF_INET, 6: socket.AF_INET6}
TYPES = {"stream": socket.SOCK_STREAM, "dgram": socket.SOCK_DGRAM}
SHUT = {"SHUT_RD": socket.SHUT_RD, "SHUT_WR": socket.SHUT_WR, "SHUT_RDWR": socket.SHUT_RDWR}
MSG_FLAGS = {"MSG_PEEK": socket.MSG_PEEK, "MSG_DONTWAIT": socket.MSG_DONTWAIT, "MSG_WAITALL": socket.MSG_WAITALL,
             "MSG_OOB": socket.MSG_OOB, "MSG_MORE": 0x8000, "MSG_NOSIGNAL": socket.MSG_NOSIGNAL}
# Options whose value is not a plain int: name -> (level, optname, kind).
OPTIONS = {
    "SO_LINGER": (socket.SOL_SOCKET, socket.SO_LINGER, "linger"),
    "TCP_USER_TIMEOUT": (socket.IPPROTO_TCP, 18, "int"),     # named here too: older Pythons lack it
    "TCP_FASTOPEN_CONNECT": (socket.IPPROTO_TCP, 30, "int"),  # Python's socket module lacks it (Linux 4.11)
}
# An option name's prefix says its level; the number is the socket module's constant of that name.
LEVELS = (("SO_", "SOL_SOCKET"), ("TCP_", "IPPROTO_TCP"), ("IPV6_", "IPPROTO_IPV6"), ("IP_", "IPPROTO_IP"))


def option_names():
    """Every option name setsockopt/getsockopt take: the socket module's SO_/TCP_/IP_/IPV6_ constants."""
    names = set(OPTIONS)
    for prefix, _level in LEVELS:
        names.update(n for n in dir(socket) if n.startswith(prefix) and isinstance(getattr(socket, n), int))
    return sorted(names)


def resolve_option(name):
    """(level, optname, kind) of an option by name, or (level, optname, "raw") of a [level, optname]
    pair (numbers or names such as "IPPROTO_TCP"); KeyError with the closest names otherwise."""
    if isinstance(name, (list, tuple)):
        level, opt = (getattr(socket, v) if isinstance(v, str) and hasattr(socket, v) else v for v in name)
        if not (isinstance(level, int) and isinstance(opt, int)):
            raise KeyError(f"raw option {list(name)!r}: give (level, optname) as numbers or socket constant names")
        return level, opt, "raw"
    if name in OPTIONS:
        return OPTIONS[name]
    for prefix, level in LEVELS:
        if name.startswith(prefix) and isinstance(getattr(socket, name, None), int):
            return getattr(socket, level), getattr(socket, name), "int"
    import difflib
    close = difflib.get_close_matches(str(name), option_names(), n=4, cutoff=0.6)
    raise KeyError(f"unknown socket option {name!r}" + (f"; closest: {', '.join(close)}" if close else
                   "; names are the socket module's SO_*, TCP_*, IP_*, IPV6_* constants, or (level, optname)"))


def encode_value(value):
    """A setsockopt value as JSON carries it: bytes as {"hex": ...}, the rest as is."""
    return {"hex": value.hex()} if isinstance(value, (bytes, bytearray)) else value


def decode_value(value):
    return bytes.fromhex(value["hex"]) if isinstance(value, dict) and "hex" in value else value


RLIMITS = {"NOFILE": resource.RLIMIT_NOFILE}


class Agent:
    def __init__(self, control):
        self.control = control
        self.socks = {}                      # fd -> socket object (keeps the descriptor open)
        self.lock = threading.Lock()

    # -- protocol ---------------------------------------------------------------------------
    def reply(self, msg, fds=()):
        data = (json.dumps(msg) + "\n").encode()
        with self.lock:
            if fds:
                socket.send_fds(self.control, [data[:1]], list(fds))
                self.control.sendall(data[1:])
            else:
                self.control.sendall(data)

    def serve(self):
        self.reply({"type": "ready", "ready": os.getpid()})
        buf = b""
        while True:
            chunk = self.control.recv(65536)
            if not chunk:
                os._exit(0)                  # the harness went away: so do we
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                cmd = self.parse(line)
                if cmd is None:
                    continue
                if cmd.get("bg"):
                    threading.Thread(target=self.execute_bg, args=(cmd,), daemon=True).start()
                else:
                    self.execute(cmd)

    def parse(self, line):
        """A command, or None after answering a malformed one with an "error" message."""
        cmd = None
        try:
            cmd = json.loads(line)
            if not isinstance(cmd, dict) or not isinstance(cmd.get("op"), str) or not isinstance(cmd.get("args", {}), dict):
                raise ValueError("expected an object with \"op\" (text) and \"args\" (object)")
            return cmd
        except ValueError as exc:
            ident = cmd.get("id") if isinstance(cmd, dict) else None
            self.reply({"type": "error", "id": ident, "error": f"malformed command {line[:200]!r}: {exc}"})
            return None

    def execute_bg(self, cmd):
        """A call the harness awaits later: say it has started, then make it."""
        self.reply({"type": "started", "id": cmd.get("id"), "started": time.monotonic(),
                    "tid": threading.get_native_id()})
        self.execute(cmd)

    def execute(self, cmd):
        op = cmd["op"]
        out = {"type": "result", "id": cmd.get("id"), "op": op}
        t0 = time.monotonic()
        fds, passing = (), None
        try:
            fn = getattr(self, "op_" + op, None)
            if fn is None:
                raise ValueError(f"unknown operation {op!r}")
            ret = fn(**cmd.get("args", {}))
            if op == "fork" and ret.get("child"):
                return self.become_child(ret["sock"])
            if isinstance(ret, dict) and "pass_sock" in ret:
                passing = ret.pop("pass_sock")
                fds = (passing.fileno(),)
            out["ret"] = ret
        except OSError as exc:
            code = exc.errno if exc.errno is not None else errno.EIO
            if isinstance(exc, socket.timeout) and exc.errno is None:
                code = errno.ETIMEDOUT
            out["errno"] = errno.errorcode.get(code, str(code))
            out["strerror"] = os.strerror(code)
        except Exception as exc:             # a bad command: report it, keep serving
            out["error"] = f"{type(exc).__name__}: {exc}"
        out["t0"], out["t1"] = t0, time.monotonic()
        if op == "connect":
            out["local_port"] = self.local_port(cmd.get("args", {}).get("fd"))
        self.reply(out, fds)
        if passing is not None:
            passing.close()                  # the harness holds its own copy now
        if op == "exit" and "ret" in out:
            os._exit(int(out["ret"]))

    def local_port(self, fd):
        """The port the kernel bound for `fd` (0 once a failed connect released it)."""
        try:
            return self.socks[fd].getsockname()[1]
        except (KeyError, OSError):
            return 0

    def sock(self, fd):
        try:
            return self.socks[fd]
        except KeyError:
            raise OSError(errno.EBADF, f"fd {fd} is not an open socket of this program") from None

    def keep(self, s):
        self.socks[s.fileno()] = s
        return s.fileno()

    # -- socket calls -----------------------------------------------------------------------
    def op_socket(self, family="ipv4", type="stream"):
        return self.keep(socket.socket(FAMILIES[family], TYPES[type]))

    def op_setsockopt(self, fd, name, value):
        level, opt, kind = _option(name)
        value = decode_value(value)
        if kind == "linger":
            value = struct.pack("ii", int(value[0]), int(value[1]))
        elif isinstance(value, bool):
            value = int(value)
        self.sock(fd).setsockopt(level, opt, value)
        return 0

    def op_getsockopt(self, fd, name, buflen=None):
        level, opt, kind = _option(name)
        if kind == "linger":
            return list(struct.unpack("ii", self.sock(fd).getsockopt(level, opt, 8)))
        if buflen:
            return encode_value(self.sock(fd).getsockopt(level, opt, int(buflen)))
        return self.sock(fd).getsockopt(level, opt)

    def op_bind(self, fd, addr, port):
        self.sock(fd).bind((addr, port))
        return 0

    def op_listen(self, fd, backlog):
        self.sock(fd).listen(backlog)
        return 0

    def op_connect(self, fd, addr, port, nonblocking=False, timeout=None):
        s = self.sock(fd)
        if nonblocking:
            s.setblocking(False)
            code = s.connect_ex((addr, port))
            s.setblocking(True)
            if code:
                raise OSError(code, os.strerror(code))
            return 0
        s.connect((addr, port))
        return 0

    def op_wait_connected(self, fd):
        """Finish a non-blocking connect: wait until writable, then SO_ERROR."""
        import select
        s = self.sock(fd)
        select.select([], [s], [])
        code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))
        return 0

    def op_accept(self, fd):
        conn, peer = self.sock(fd).accept()
        return {"fd": self.keep(conn), "peer": list(peer[:2])}

    def op_send(self, fd, data=None, size=None, flags=()):
        payload = data.encode("latin-1") if data is not None else b"x" * int(size)
        return self.sock(fd).send(payload, _flags(flags))

    def op_sendall(self, fd, data=None, size=None, flags=()):
        payload = data.encode("latin-1") if data is not None else b"x" * int(size)
        self.sock(fd).sendall(payload, _flags(flags))
        return len(payload)

    def op_recv(self, fd, size=65536, flags=()):
        return self.sock(fd).recv(int(size), _flags(flags)).decode("latin-1")

    def op_shutdown(self, fd, how):
        self.sock(fd).shutdown(SHUT[how])
        return 0

    def op_close(self, fd):
        self.sock(fd).close()
        del self.socks[fd]
        return 0

    def op_dup(self, fd):
        return self.keep(socket.socket(fileno=os.dup(self.sock(fd).fileno())))

    def op_getsockname(self, fd):
        return list(self.sock(fd).getsockname()[:2])

    def op_getpeername(self, fd):
        return list(self.sock(fd).getpeername()[:2])

    def op_setrlimit(self, name, soft, hard=None):
        cur_soft, cur_hard = resource.getrlimit(RLIMITS[name])
        resource.setrlimit(RLIMITS[name], (int(soft), cur_hard if hard is None else int(hard)))
        return 0

    def op_exit(self, code=0):
        return int(code)                     # execute() exits after replying: no close() on any socket

    def op_fork(self):
        parent_end, child_end = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            parent_end.close()
            return {"child": True, "sock": child_end}
        child_end.close()
        return {"pid": pid, "pass_sock": parent_end}

    def become_child(self, sock):
        self.control.close()
        self.control, self.lock = sock, threading.Lock()
        self.serve()


def _option(name):
    try:
        return resolve_option(name)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None


def _flags(names):
    value = 0
    for name in names:
        value |= MSG_FLAGS[name]
    return value


def enter(netns_path):
    """Move this process into the namespace at `netns_path` and make it die with its parent."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns_path, os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:
        sys.exit(f"agent: setns({netns_path}) failed: {os.strerror(ctypes.get_errno())}")
    os.close(fd)
    libc.prctl(1, 9)                          # PR_SET_PDEATHSIG SIGKILL: never outlive the parent


def main():
    netns_path, control_fd = sys.argv[1], int(sys.argv[2])
    enter(netns_path)
    control = socket.socket(fileno=control_fd)
    Agent(control).serve()


# -- the launcher ---------------------------------------------------------------------------------
# Starting a Python interpreter and importing this module costs about 45 ms of CPU; a case starts two
# or more programs. The launcher is this module, imported once per harness process
# (``python -S agent.py --launcher FD``); each program is a fork() of it, which costs about 1 ms.
# Requests on the launcher's SOCK_SEQPACKET socket: {"netns": path} with two descriptors (the program's
# control socket, and where its stdout/stderr go), answered {"pid": n} with a pidfd of the program, or
# {"error": text}; {"reap": pid} once that pidfd says the program has exited, answered {"status": n}
# (as subprocess's returncode: -N for a signal). The launcher exits when the harness closes its end (a
# killed harness too): its programs then die of PR_SET_PDEATHSIG.

CONTROL_FD = 100


def _answer(requests, msg, fds=()):
    socket.send_fds(requests, [json.dumps(msg).encode()], list(fds))


def _fork_program(requests, netns_path, control_fd, out_fd):
    pid = os.fork()
    if pid == 0:
        try:
            requests.close()
            os.dup2(out_fd, 1)
            os.dup2(out_fd, 2)
            os.close(out_fd)
            # The control socket out of the way: the program's own sockets get descriptors from 3 up,
            # as in any process (results name them, and a lowered RLIMIT_NOFILE counts them).
            os.dup2(control_fd, CONTROL_FD, inheritable=False)
            os.close(control_fd)
            enter(netns_path)
            Agent(socket.socket(fileno=CONTROL_FD)).serve()
        finally:
            os._exit(1)
    os.close(control_fd)
    os.close(out_fd)
    pidfd = os.pidfd_open(pid)               # it cannot be gone yet: nobody has reaped it
    _answer(requests, {"pid": pid}, [pidfd])
    os.close(pidfd)


def launcher(fd):
    requests = socket.socket(fileno=fd)
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(requests, 4096, 2)
        except OSError:
            os._exit(0)
        if not data:
            os._exit(0)                      # the harness went away
        try:
            msg = json.loads(data)
            if "reap" in msg and not fds:
                _answer(requests, {"status": os.waitstatus_to_exitcode(os.waitpid(int(msg["reap"]), 0)[1])})
                continue
            netns_path, (control_fd, out_fd) = msg["netns"], fds
        except (ValueError, KeyError, TypeError, ChildProcessError) as exc:
            for f in fds:
                os.close(f)
            _answer(requests, {"error": f"launcher: cannot serve {data[:200]!r}: {type(exc).__name__}: {exc}"})
            continue
        _fork_program(requests, netns_path, control_fd, out_fd)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--launcher"]:
        launcher(int(sys.argv[2]))
    else:
        main()
