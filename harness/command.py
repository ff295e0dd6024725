"""Any command (a user's own server binary) run inside a host's namespace, stopped at the end of the case."""

from __future__ import annotations

import os
import signal
import subprocess

from .errors import StepError, StepTimeout
from .errors import hide_own_frames as __tracebackhide__  # noqa: F401 (read by pytest)
from .nsutil import preexec_enter
from .timefactor import scaled


class Command:
    """Any command (a user's own server binary) running inside a host's namespace."""

    def __init__(self, host, argv, *, name: str | None = None, output_dir: str | None = None):
        self.host, self.argv = host, [str(a) for a in argv]
        self.name = name or os.path.basename(self.argv[0])
        self.output_dir = output_dir
        self.proc = None
        self.output_path = None

    def start(self) -> "Command":
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            self.output_path = os.path.join(self.output_dir, f"{self.host.role}.{self.name}.output.txt")
            out = open(self.output_path, "wb")
        else:
            out = subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         preexec_fn=preexec_enter(self.host.netns))
        except FileNotFoundError:
            raise StepError(f"{self.host.role}: command {self.argv[0]!r} not found") from None
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        try:
            timeout = scaled(timeout)
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise StepTimeout(f"{self.host.role}: {' '.join(self.argv)} still running after {timeout} s") from None

    def output(self) -> str:
        if not self.output_path:
            return ""
        with open(self.output_path, errors="replace") as fh:
            return fh.read()

    def stop(self, timeout: float = 2.0) -> None:
        """SIGTERM, then SIGKILL if it has not gone within `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
