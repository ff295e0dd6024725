"""The harness side of the socket program's protocol, against a fake program on a socketpair (no
privileges): a malformed message is reported and the reader goes on; a timed-out call is named by
the next step instead of that step timing out."""

from __future__ import annotations

import json
import socket
from types import SimpleNamespace

import pytest

from harness.wait import wait_until

from harness.errors import StepError, StepTimeout
from harness.program import Program


class FakeAgent:
    def __init__(self):
        self.ours, theirs = socket.socketpair()
        self.program = Program(SimpleNamespace(role="client"), "client", _control=theirs, _pid=1)
        self.file = self.ours.makefile("rb")

    def send(self, data: bytes):
        self.ours.sendall(data)

    def send_msg(self, **msg):
        self.send((json.dumps(msg) + "\n").encode())

    def next_command(self) -> dict:
        return json.loads(self.file.readline())

    def answer(self, cmd, ret=0):
        self.send_msg(type="result", id=cmd["id"], op=cmd["op"], ret=ret, t0=1.0, t1=2.0)

    def close(self):
        self.file.close()
        self.ours.close()
        self.program.control.close()


@pytest.fixture
def fake():
    f = FakeAgent()
    f.send_msg(type="ready", ready=1)
    yield f
    f.close()


def serve_one(fake, ret=0):
    import threading
    t = threading.Thread(target=lambda: fake.answer(fake.next_command(), ret))
    t.start()
    return t


def test_a_malformed_message_is_reported_and_the_reader_survives(fake):
    fake.send(b"this is not json\n")
    fake.send_msg(type="no-such-type", id=5)
    wait_until(lambda: len(fake.program.protocol_errors) == 2, 5, "the reader thread read both messages")
    t = serve_one(fake)
    with pytest.raises(StepError) as exc:
        # the first step after the garbage names it (and is not sent)...
        fake.program.call("listen", {"fd": 3, "backlog": 1}, timeout=5)
    assert "malformed message b'this is not json'" in str(exc.value)
    assert "unknown message type 'no-such-type'" in str(exc.value)
    # ...and the reader loop is alive: the next call gets its answer.
    call = fake.program.call("listen", {"fd": 3, "backlog": 1}, timeout=5)
    t.join()
    assert call.ok and call.ret == 0


def test_an_error_message_fails_its_call_by_name(fake):
    import threading

    def reject():
        cmd = fake.next_command()
        fake.send_msg(type="error", id=cmd["id"], error="malformed command: whatever")
    t = threading.Thread(target=reject)
    t.start()
    with pytest.raises(StepError, match="rejected the step"):
        fake.program.call("listen", {"fd": 3, "backlog": 1}, timeout=5)
    t.join()


def test_after_a_timed_out_call_the_next_step_names_the_stuck_call(fake):
    with pytest.raises(StepTimeout, match=r"recv\(fd=4, size=10\) did not return within 0.2 s"):
        fake.program.call("recv", {"fd": 4, "size": 10}, timeout=0.2)
    stuck = fake.next_command()
    with pytest.raises(StepTimeout) as exc:
        fake.program.call("send", {"fd": 5, "data": "x"}, timeout=0.1)
    assert str(exc.value) == ("client: send(fd=5, data='x') not sent: the program is still blocked in "
                              "recv(fd=4, size=10), which did not return within 0.2 s (nor in the 0.1 s since)")
    # Once the stuck call returns, the program takes steps again.
    fake.answer(stuck, "late")
    fake.program.stuck._future.result(5)       # the late answer has been read
    t = serve_one(fake, 1)
    call = fake.program.call("send", {"fd": 5, "data": "x"}, timeout=5)
    t.join()
    assert call.ret == 1 and fake.program.stuck is None
