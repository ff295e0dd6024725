"""Counterfactuals of cases/test_states.py."""

from harness.record import SsRow
from tests.counterfactuals import Flip
from tests.counterfactuals.edits import remove_rows


def _never_closing(rec):
    remove_rows(rec, "CLOSING")
    for h in rec.transitions:
        h.states = ["FIN_WAIT2" if s == "CLOSING" else s for s in h.states]


def _closed_socket_listed(rec):
    rec.ss[0].rows.append(SsRow(state="UNCONN", local_port=50000))


FLIPS = [
    Flip("ALL-STATES:every_state_reached", "ALL-STATES.json", _never_closing,
         "refuted", "CLOSING is never reached"),
    Flip("ALL-STATES:closed_has_no_entry", "ALL-STATES.json", _closed_socket_listed,
         "refuted", "ss lists a closed socket"),
]
