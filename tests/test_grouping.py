"""Grouping's evidence per pair of microphones: how the lag they are tracked at moves."""

from __future__ import annotations

from media.correlation import Match
from media.grouping import CLEAR, GROUP_AT, Grouping
from media.table import MAX_LAG


def _linked(lag: int) -> Grouping:
    grouping = Grouping(MAX_LAG)
    grouping.add("p0")
    grouping.add("p2")
    for _ in range(int(GROUP_AT)):
        grouping.observe("p0", "p2", Match(lag, CLEAR * 1.5))
    assert grouping.together("p0", "p2") and grouping.lag("p0", "p2") == lag
    return grouping


def test_echo_residue_does_not_move_a_pairs_lag() -> None:
    """Seen live: while the table's loudspeakers played, what the cancellers left of their
    echo made p0 and p2 correlate about 150 ms away from where a talker is heard, and the
    pair's lag jumped there for 10 s. Windows that may be echo confirm the lag, never move it."""
    grouping = _linked(-260)
    residue = Match(-2664, CLEAR * 1.5)
    grouping.observe("p0", "p2", residue, against=False, steady=True)
    assert grouping.lag("p0", "p2") == -260

    grouping.observe("p0", "p2", Match(-250, CLEAR * 1.5), steady=True)
    assert grouping.lag("p0", "p2") == round(0.7 * -260 + 0.3 * -250)

    grouping.observe("p0", "p2", residue)  # a talker heard at a new lag, no echo about
    assert grouping.lag("p0", "p2") == -2664


def test_a_phone_carried_away_still_loses_its_table_while_loudspeakers_play() -> None:
    """The table's microphones hear the loudspeakers, the phone carried away hears only
    its owner: an unclear match still counts against the pair."""
    grouping = _linked(-260)
    for _ in range(int(GROUP_AT)):
        grouping.observe("p0", "p2", Match(3000, CLEAR / 2), against=True, steady=True)
    assert not grouping.together("p0", "p2")
