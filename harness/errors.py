"""The package's exceptions: each says what was wrong and where, in words a user can act on."""


class SocklabError(Exception):
    """Base class of every error the harness raises on purpose."""


def hide_own_frames(excinfo) -> bool:
    """pytest's __tracebackhide__ hook: a harness error is about the case, so show the case's line
    and the message, not the frames inside harness/ (a harness bug still shows them all)."""
    return isinstance(excinfo.value, SocklabError)


class SetupError(SocklabError):
    """The machine lacks a privilege, a kernel feature or a tool the harness needs."""


class SysctlAbsent(SetupError):
    """The running kernel has no such sysctl (e.g. net.ipv4.tcp_rto_min_us before 6.11)."""


class TraceUnavailable(SetupError):
    """The kernel's state-transition trace cannot be read here (no tracefs, no tracepoint)."""


class UnknownRole(SocklabError, KeyError):
    """A role name (host) the lab does not have, e.g. "router"."""

    def __str__(self):            # KeyError would quote the message
        return str(self.args[0])


class BadArgument(SocklabError, ValueError):
    """An argument a case passed is out of range or of the wrong kind; says which call and which argument."""


def check_port(port, where: str) -> None:
    """A TCP port is 1..65535 (None means any); anything else is one BadArgument line."""
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        raise BadArgument(f"{where}: port={port!r} is not a TCP port (1..65535)")


class CommandError(SocklabError):
    """An external command failed; carries the command, exit code and both output streams."""

    def __init__(self, argv, returncode, stdout, stderr):
        self.argv, self.returncode, self.stdout, self.stderr = list(argv), returncode, stdout, stderr
        super().__init__(
            f"command {' '.join(self.argv)!r} exited {returncode}\n"
            f"--- stdout ---\n{stdout.rstrip()}\n--- stderr ---\n{stderr.rstrip()}"
        )


class StepError(SocklabError):
    """A step of a socket program failed, returned something unexpected, or was not possible."""


class StepTimeout(StepError):
    """A step (a call, a wait for an event) did not finish before its deadline."""


class ExpectationSyntaxError(SocklabError):
    """An expectation text is malformed; says the line, the column and what was expected there."""

    def __init__(self, message, text, line, column):
        self.line, self.column = line, column
        lines = text.splitlines() or [""]
        src = lines[line - 1] if 0 < line <= len(lines) else ""
        super().__init__(f"line {line}, column {column}: {message}\n    {src}\n    {' ' * (column - 1)}^")


class ExpectationFailed(SocklabError, AssertionError):
    """Observed behaviour does not match an expectation; the message shows both side by side."""
