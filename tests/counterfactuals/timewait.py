"""Counterfactuals of cases/test_timewait.py."""

from tests.counterfactuals import Flip
from tests.counterfactuals.edits import set_errno

PORT, CLIENT_PORT = 50000, 50100


def _binds(rec, reuse_last: str | None, plain: str | None = "EADDRINUSE"):
    binds = rec.calls_of("bind", program="restarted")
    for b in binds:
        b.errno, b.ret = "EADDRINUSE", None
    if reuse_last is None:
        binds[-1].errno, binds[-1].ret = None, 0
    if plain is None:
        binds[0].errno, binds[0].ret = None, 0


def _connect(rec, pred, errno):
    for c in rec.calls_of("connect", program="client"):
        if pred(c):
            c.errno, c.ret = errno, None


def _no_reuse_by_default(rec):
    connects = rec.calls_of("connect", program="client")
    bound_reconnect = [c for c in connects if c.args.get("port") == PORT][1]
    bound_reconnect.errno, bound_reconnect.ret = "EADDRNOTAVAIL", None
    connects[-1].errno, connects[-1].ret = "ECONNREFUSED", None     # the SYN to the server's TIME-WAIT


def _no_reuse_at_all(rec):
    _no_reuse_by_default(rec)
    ephemeral = [c for c in rec.calls_of("connect", program="client") if c.args.get("port") == PORT + 2]
    ephemeral[-1].errno, ephemeral[-1].ret = "EADDRNOTAVAIL", None


def _accepted_after_time_wait(rec):
    accept = rec.calls_of("accept", program="restarted")[-1]
    accept.t1 = accept.t1 + 61.0


FLIPS = [
    Flip("TIMEWAIT-REBIND:restart_cannot_bind", "TIMEWAIT-REBIND.json", lambda r: _binds(r, "EADDRINUSE"),
         "confirmed", "bind() fails even when both servers set SO_REUSEADDR"),
    Flip("TIMEWAIT-REBIND:restart_cannot_bind", "TIMEWAIT-REBIND.json", lambda r: _binds(r, None, plain=None),
         "refuted", "a plain bind() succeeds over the TIME-WAIT"),
    Flip("TIMEWAIT-4TUPLE:pair_not_reused", "TIMEWAIT-4TUPLE.json", _no_reuse_by_default,
         "differs", "the pair is reused only with tcp_tw_reuse=1"),
    Flip("TIMEWAIT-4TUPLE:pair_not_reused", "TIMEWAIT-4TUPLE.json", _no_reuse_at_all,
         "confirmed", "the pair is never reused within the TIME-WAIT"),
    Flip("QUIET-TIME:restarted_server_waits", "QUIET-TIME.json", _accepted_after_time_wait,
         "confirmed", "the restarted server accepts only after the old TIME-WAIT has ended"),
]
