"""pytest-xdist workers forked from a warm process instead of started as new interpreters.

Each xdist worker is a fresh `python -c ...` that imports pytest, execnet, xdist, pyroute2 and the
harness before it collects: 0.53-0.57 s of CPU a worker on this machine up to the end of its
collection (0.26-0.27 s forked), paid by all of them at once at the start of a run, on two cores. The cases
mostly wait on protocol timers, so a run wants more workers than cores, and that start-up was the
price of each.

Here the controller starts one server process (`serve`) that imports all of that once and then
forks a worker for each connection. xdist still starts a process per worker, through the `python=`
of its `popen` spec (`Server.spec()`); that process is harness/forkclient.py under `python -S -I`,
about 15 ms, which hands its stdin, stdout and stderr (xdist's pipes) and its environment and
working folder to the server and then stands for the forked worker: it exits with the worker's exit
status. The worker runs execnet's bootstrap line on those pipes as `python -u -c LINE` would (with
execnet's gateway source compiled once, in the server), so execnet and xdist see no difference.
The plugin (harness/plugin.py) starts the server when pytest's early options show `-n`, uses it
for plain `-n N` workers only, and stops it at pytest_unconfigure.

What a killed or interrupted run needs:
- the server dies with the controller (PR_SET_PDEATHSIG) and exits when the controller closes its
  end of the control socket (`close()`, when xdist's loop has ended) and its workers have ended;
  pytest_unconfigure waits for that (`stop()`);
- a client killed by execnet (its `kill()` after a timeout) closes its connection: the server then
  sends the worker SIGTERM, which the harness unwinds like Ctrl-C;
- Ctrl-C reaches the workers from the terminal as before (same process group); the server and the
  clients ignore SIGINT, so they outlive the workers' teardown;
- a worker that the server forked is not the server's to keep: when the server dies first, the
  worker keeps its pipes to the controller and ends as xdist tells it.

The server forks only while it has one thread (it checks), and each worker reseeds `random` (Python
does on fork) and starts from the server's imports only: no pytest configuration, no collection, no
harness state is made before the fork.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from . import importahead

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forkclient.py")

# What a worker imports before and during its cases (sys.modules after a case): pytest and its builtin
# plugins, execnet, the harness's lab and reporting sides; and what a worker imported itself in a
# catalogue run under `python -X importtime` (pytest's debugging plugin imports pdb at configure:
# ~10 ms a worker; a case summary's diagram).
# harness.lab imports at set-up only what set-up uses; importahead.CASE is the rest of the lab side.
WARM = ("pytest", "_pytest.config", "execnet", "execnet.gateway_base", "harness.plugin", "harness.lab",
        *importahead.CASE, "harness.casepage", "harness.report", "harness.baseline", "harness.compare",
        "harness.claimtable", "tap.formatter", "tap.tracker", "pdb", "faulthandler")


def _rewritten_by_pytest() -> set[str]:
    """The top-level names pytest marks for assertion rewriting in every session: the packages of the
    distributions that have a pytest11 plugin (xdist, pytest_tap; harness too where socklab is not an
    editable install). A module of theirs imported before pytest's hook is installed would not be
    rewritten and pytest would warn in every worker, so the server leaves them to the worker."""
    import importlib.metadata as md
    from _pytest.config import _iter_rewritable_modules    # pytest's own rule, not a copy of it
    files = (str(f) for dist in md.distributions()
             if any(ep.group == "pytest11" for ep in dist.entry_points) for f in dist.files or [])
    return set(_iter_rewritable_modules(files))


_gateway = {}       # execnet's gateway source, compiled once in the server (see _run_bootstrap)


def _compile_gateway() -> None:
    """execnet starts a `python=` worker by sending it the source of execnet.gateway_base (61 kB)
    followed by a few lines that start the gateway; compiling that source costs each worker ~23 ms.
    The server compiles it once; a worker whose bootstrap begins with exactly that source runs the
    compiled module and then compiles only the few lines after it."""
    try:
        import inspect
        from execnet import gateway_base
        source = inspect.getsource(gateway_base)
        _gateway.update(source=source, code=compile(source, "<string>", "exec"))
    except (ImportError, OSError, SyntaxError):
        pass                                # no execnet here: every worker compiles what it gets


def _run_bootstrap(text: str, namespace: dict) -> None:
    """exec(text) in namespace, as `python -c "...exec(eval(line))"` does, with the gateway's source
    taken compiled when text starts with it: the same statements in the same namespace, in order."""
    source = _gateway.get("source")
    if source and text.startswith(source + "\n"):
        exec(_gateway["code"], namespace)                       # noqa: S102 - execnet's own module
        exec(compile("\n" * source.count("\n") + text[len(source):], "<string>", "exec"), namespace)  # noqa: S102
    else:
        exec(text, namespace)                                   # noqa: S102 - execnet's own bootstrap


def _import_warm() -> None:
    import importlib
    try:        # pytest's builtin plugins, to import them warm; a private name, so optional
        from _pytest.config import default_plugins
    except ImportError:
        default_plugins = ()
    skip = _rewritten_by_pytest()
    for name in WARM + tuple(f"_pytest.{p}" for p in default_plugins):
        if name.split(".")[0] in skip:
            continue
        try:
            importlib.import_module(name)
        except ImportError:
            pass                        # not installed: the worker does without, as it would anyway


class Server:
    """The controller's handle on its fork server."""

    def __init__(self, fresh: "Fresh | None" = None):
        """A server forked from this process where `fresh` says how a new interpreter started and
        this process has one thread (pytest's controller at its early configuration: pytest and the
        plugins are imported already, so the server is ready ~0.3 s sooner); else a new interpreter."""
        import threading
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.path = f"socklab-forkserver-{os.getpid()}-{id(self):x}"    # an abstract socket: nothing on disk
        if fresh is not None and threading.active_count() == 1:
            def server():
                ours.close()
                fresh.restore(keep=theirs.fileno())
                serve(self.path, theirs.fileno())
            self.proc = _fork(server)
        else:
            self.proc = subprocess.Popen([sys.executable, "-m", "harness.forkserver", self.path, str(theirs.fileno())],
                                         pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        self.control = ours
        self.ready = False

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """True once the server listens (it says so on the control socket); False if it died."""
        if not self.ready:
            self.control.settimeout(timeout)
            try:
                self.ready = self.control.recv(16) == b"ready"
            except OSError:
                self.ready = False
        return self.ready

    def spec(self) -> str:
        """The python= of an xdist popen spec whose worker this server forks."""
        import shlex
        return shlex.join([sys.executable, "-S", "-I", CLIENT, self.path])

    def close(self) -> None:
        """Tell the server to exit (EOF on its control socket), without waiting: no worker is forked
        after this. Its workers live on."""
        self.control.close()

    def stop(self) -> None:
        """close(), and wait until the server has exited (killed after 5 s)."""
        self.close()
        if self.proc.returncode is not None:
            return
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Fresh:
    """What pytest changes in its process before its early configuration ends, as a new interpreter
    has it: taken when the plugin is imported (pytest's entry points are loaded before it captures
    output or records warnings), restored in a server forked later, so its workers start as
    xdist's `python -c` workers would."""

    def __init__(self):
        import warnings
        self.filters = warnings.filters         # the list itself: catch_warnings works on a copy and puts it back
        self.showwarning = warnings.showwarning
        self.showwarnmsg = getattr(warnings, "_showwarnmsg_impl", None)
        self.path0 = sys.path[0] if sys.path and not sys.flags.safe_path else None

    def restore(self, keep: int) -> None:
        """In the forked child: no file descriptor of the controller's but `keep` and stdio (stdin
        from /dev/null), sys's streams on fds 0-2 (not pytest's capture), the warning filters and
        display of the start (not pytest's recording), no assertion-rewriting import hook of the
        controller's (a worker installs its own), and `python -c`'s first path entry."""
        import warnings
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.closerange(3, keep)
        os.closerange(keep + 1, 1 << 20)
        sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__
        # as warnings.catch_warnings.__exit__ puts them back
        warnings.filters = self.filters
        warnings.showwarning = self.showwarning
        if self.showwarnmsg is not None:
            warnings._showwarnmsg_impl = self.showwarnmsg              # noqa: SLF001
        if hasattr(warnings, "_filters_mutated"):
            warnings._filters_mutated()                                 # noqa: SLF001
        sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "AssertionRewritingHook"]
        if self.path0 is not None and sys.path and sys.path[0] == self.path0:
            sys.path[0] = ""


class _Child:
    """A forked server process, with the part of subprocess.Popen that Server uses."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode = None
        self._pidfd = os.pidfd_open(pid)

    def wait(self, timeout: float | None = None) -> int:
        import select
        if self.returncode is None:
            if not select.select([self._pidfd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(f"fork server {self.pid}", timeout)
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
            os.close(self._pidfd)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)


def _fork(run) -> _Child:
    """run() in a forked child that never returns into its parent's code: it exits with 0 when run
    returns, 1 (with the traceback on stderr) when it raises."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            run()
            status = 0
        except BaseException:                   # noqa: BLE001 - the child must end here, whatever happened
            import traceback
            traceback.print_exc()
        finally:
            os._exit(status)
    return _Child(pid)


def _prctl(option: int, arg) -> None:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)


def _die_with_parent() -> None:
    _prctl(1, signal.SIGTERM)           # PR_SET_PDEATHSIG


SERVER_NAME = b"socklab-forksrv"        # the server's name in ps and /proc/PID/comm (15 bytes at most)


def _name(name: bytes) -> None:
    _prctl(15, name)                    # PR_SET_NAME


def serve(path: str, control_fd: int) -> None:
    """The fork server: import, listen on the abstract socket `path`, fork a worker per connection."""
    import gc
    import select
    import threading
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    _name(SERVER_NAME)
    control = socket.socket(fileno=control_fd)
    _import_warm()
    _compile_gateway()
    gc.freeze()     # the imports' objects (and the few they left as garbage, not worth a 16 ms collection
                    # before the first worker): shared with the workers, never walked again
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind("\0" + path)
    listener.listen(64)
    control.send(b"ready")
    conns: dict[socket.socket, int] = {}            # a client's connection -> its worker's pidfd
    workers: dict[int, tuple[int, socket.socket | None]] = {}     # pidfd -> (pid, connection or None)
    accepting = True
    # Until the controller closes its end: fork workers. After: no more, but go on telling each
    # client when its worker exits (the client stands for it: execnet waits for the client's exit)
    # until every worker is reaped, so their CPU time adds up in the controller's.
    while accepting or workers:
        readable, _, _ = select.select([*((control, listener) if accepting else ()), *conns, *workers], [], [])
        if accepting and control in readable:
            accepting = False
            listener.close()
            control.close()
            continue
        for r in readable:
            if r is listener:
                conn, _ = listener.accept()
                if not _from_our_clients(conn):
                    conn.close()
                    continue
                try:
                    msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
                except OSError:
                    conn.close()
                    continue
                if len(fds) != 3 or threading.active_count() != 1:
                    for fd in fds:
                        os.close(fd)
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    for fd in workers:
                        os.close(fd)
                    for other in (listener, control, *conns):
                        other.close()
                    _worker(conn, msg, fds)                     # never returns
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                conns[conn] = pidfd
                workers[pidfd] = (pid, conn)
                try:
                    conn.send(f"pid {pid}".encode())
                except OSError:
                    pass
            elif isinstance(r, int):                            # a worker exited: tell its client
                pid, conn = workers.pop(r)
                os.close(r)
                _, status = os.waitpid(pid, 0)
                if conn is not None:
                    conns.pop(conn, None)
                    try:
                        conn.send(f"exit {os.waitstatus_to_exitcode(status)}".encode())
                    except OSError:
                        pass
                    conn.close()
            elif r in conns and not r.recv(64):                 # a client went away: end its worker
                pidfd = conns.pop(r)
                r.close()
                pid = workers[pidfd][0]
                workers[pidfd] = (pid, None)                    # still to be reaped, with no one to tell
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass


def _from_our_clients(conn: socket.socket) -> bool:
    """Only a client our controller started may have a worker forked: a connection from another
    process (the socket is abstract, so any process of the host's network namespace can connect) is
    refused, whoever runs it."""
    import struct
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    if uid != os.getuid():
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return False
    return ppid == os.getppid()


def _worker(conn: socket.socket, msg: bytes, fds: list[int]) -> None:
    """In the forked child: become `python -u -c "import sys;exec(eval(sys.stdin.readline()))"`."""
    import atexit
    import io
    import threading
    import types
    status = 1
    try:
        conn.close()
        _name(os.path.basename(sys.executable).encode()[:15])     # as the interpreter xdist would start
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        cwd, *env = msg.split(b"\0")           # as harness/forkclient.py sends them
        os.chdir(cwd)
        os.environ.clear()
        for entry in env:
            key, _, value = entry.partition(b"=")
            os.environb[key] = value
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.argv = ["-c"]
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True,
                                      errors="backslashreplace")
        line = bytearray()
        while not line.endswith(b"\n"):
            # execnet writes the line (its gateway's source, ~70 kB) and then waits for the gateway's
            # answer, so nothing past the line can be read here
            chunk = os.read(0, 1 << 16)
            if not chunk:
                break
            line += chunk
        main = types.ModuleType("__main__")
        sys.modules["__main__"] = main
        try:
            _run_bootstrap(eval(line.decode()), main.__dict__)     # noqa: S307 - execnet's bootstrap line
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:                   # noqa: BLE001 - as the interpreter would: print, exit 1
            import traceback
            traceback.print_exc()
            status = 1
        threading._shutdown()                   # noqa: SLF001 - join non-daemon threads, as at exit
        atexit._run_exitfuncs()                 # noqa: SLF001
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:                   # noqa: BLE001
                pass
    finally:
        os._exit(status)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
