"""Counterfactuals of cases/test_teardown.py."""

from tests.counterfactuals import Flip
from tests.counterfactuals.edits import drop_segments, remove_rows, set_errno, set_flags, set_history

PORT = 50000


def _first(rec, pred):
    return next(s for s in rec.segments_ if pred(s))


def _ack_of_client_fin_is_fin_seq(rec):
    fin = _first(rec, lambda s: s.src == "client" and "F" in s.flags)
    ack = _first(rec, lambda s: s.src == "server" and s.t >= fin.t and s.ack is not None and s.ack > fin.seq)
    ack.ack = fin.seq                     # the FIN took no sequence number


def _transitions_inside_calls(rec):
    for h in rec.transitions:
        call = next(c for c in rec.calls if c.role == h.local_role)
        h.times = [call.t0] * len(h.times)


def _fin_before_close(rec):
    close = rec.calls_of("close", role="server")[-1]
    _first(rec, lambda s: s.src == "server" and "F" in s.flags).t = close.t0 - 0.1


def _server_established_first(rec):
    client, server = rec.history("client", PORT), rec.history("server", PORT)
    i, j = client.states.index("ESTABLISHED") - 1, server.states.index("ESTABLISHED") - 1
    client.times[i] = server.times[j] + 0.001


def _roles_as_the_article_says(rec):
    set_history(rec, "server", ["LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"], port=PORT)
    set_history(rec, "client", ["CLOSE", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE"], port=PORT)
    for state in ("FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT"):
        remove_rows(rec, state, role="server")
    for state in ("CLOSE-WAIT", "LAST-ACK"):
        remove_rows(rec, state, role="client")


def _server_never_time_wait(rec):
    remove_rows(rec, "TIME-WAIT", role="server")


def _fin_between_the_closes(rec):
    first = rec.calls_of("close", role="server")[-2]
    fin = _first(rec, lambda s: s.src == "server" and "F" in s.flags)
    fin.t = first.t0 + 0.0001


def _accept_and_socket_succeed(rec):
    for c in rec.calls_of("accept", role="server") + rec.calls_of("socket", role="server"):
        c.errno, c.ret = None, 7


FLIPS = [
    Flip("CLOSE-4WAY:fin_ack_fin_ack", "CLOSE-4WAY.json",
         lambda r: drop_segments(r, lambda s: s.src == "server" and s.flags == "." and s.ack == 7),
         "refuted", "the passive side's ACK rides on its FIN: three segments"),
    Flip("CLOSE-4WAY:fin_ack_fin_ack", "CLOSE-4WAY.json", lambda r: remove_rows(r, "TIME-WAIT", role="client"),
         "refuted", "the active closer keeps no TIME-WAIT"),
    Flip("CLOSE-4WAY:fin_takes_one_number", "CLOSE-4WAY.json", _ack_of_client_fin_is_fin_seq,
         "refuted", "the FIN is acknowledged without taking a sequence number"),
    Flip("CLOSE-4WAY:close_states_follow_segments", "CLOSE-4WAY.json",
         lambda r: set_history(r, "client", ["CLOSE", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "CLOSE"], port=PORT),
         "refuted", "the active closer never enters FIN_WAIT2"),
    Flip("CLOSE-4WAY:time_wait_follows_last_ack", "CLOSE-4WAY.json",
         lambda r: remove_rows(r, "TIME-WAIT", role="client"), "refuted", "no TIME-WAIT after the last ACK"),
    Flip("CLOSE-4WAY:passive_fin_follows_close", "CLOSE-4WAY.json", _fin_before_close,
         "refuted", "the passive side's FIN leaves before its close()"),
    Flip("CLOSE-4WAY:transitions_come_from_calls", "CLOSE-4WAY.json", _transitions_inside_calls,
         "confirmed", "every transition happens inside a call of its program"),
    Flip("CLOSE-PATHS:client_path_matches", "CLOSE-PATHS.json", lambda r: remove_rows(r, "TIME-WAIT", role="client"),
         "refuted", "the client never shows TIME-WAIT"),
    Flip("CLOSE-PATHS:server_path_matches", "CLOSE-PATHS.json",
         lambda r: set_history(r, "server", ["LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE"], port=PORT),
         "refuted", "the server's connection closes without CLOSE_WAIT and LAST_ACK"),
    Flip("CLOSE-PATHS:client_established_first", "CLOSE-PATHS.json", _server_established_first,
         "refuted", "the server is ESTABLISHED before the client"),
    Flip("ROLES:states_belong_to_roles", "ROLES.json", _roles_as_the_article_says,
         "confirmed", "the states stay on the sides the article names"),
    Flip("ROLES:first_closer_is_active", "ROLES.json", _server_never_time_wait,
         "refuted", "the server that closed first never reaches TIME_WAIT"),
    Flip("TIMEWAIT-LEN:time_wait_lasts_2msl", "TIMEWAIT-LEN.json", lambda r: remove_rows(r, "TIME-WAIT"),
         "refuted", "no TIME-WAIT entry is kept"),
    Flip("KILL-SERVER:killed_server_sends_fin", "KILL-SERVER.json",
         lambda r: set_flags(r, lambda s: s.src == "server" and "F" in s.flags, "R."),
         "refuted", "the killed server's kernel resets the connection"),
    Flip("EXIT-CLOSE:exit_sends_fin", "EXIT-CLOSE.json",
         lambda r: set_flags(r, lambda s: s.src == "client" and "F" in s.flags, "R."),
         "refuted", "the exited client's kernel resets the connection"),
    Flip("REFCOUNT:fin_on_last_close", "REFCOUNT.json", _fin_between_the_closes,
         "refuted", "the first close() already sends the FIN"),
    Flip("FD-LEAK:descriptors_run_out", "FD-LEAK.json", _accept_and_socket_succeed,
         "refuted", "accept() and socket() never run out of descriptors"),
    Flip("LINGER0:rst_closes", "LINGER0.json",
         lambda r: set_flags(r, lambda s: s.src == "client" and "R" in s.flags, "F."),
         "refuted", "close() with SO_LINGER 0 sends FIN"),
]
