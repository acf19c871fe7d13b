"""Which microphones hear the same room: evidence per pair, hysteresis, manual overrides.

Each analysis window where at least one of a pair hears sound is one piece of evidence:
for (their streams correlate at some lag), or against (one hears sound, the other does
not hear it). A pair is grouped once evidence
for it has built up to `GROUP_AT`, and ungrouped when evidence against it has worn the
score down to zero, which takes `GROUP_AT` windows of sound heard by one and not the
other: a few seconds after someone leaves the table, while they or the table talk.
Silence is no evidence either way, so a quiet table stays grouped.

The lag a pair is heard at is tracked as it drifts (clock skew, changing jitter buffers),
so the automixer can line their frames up.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from media.correlation import Match

GROUP_AT = 3.0
"""Windows of shared sound before a pair is grouped (and the most evidence kept)."""

CLEAR = 9.0
"""Correlation clarity that is evidence on its own."""

CONSISTENT = 7.0
"""Lower clarity still counts when the lag agrees with the one already tracked."""

VERY_CLEAR = 2 * CLEAR
"""Clarity that counts as two windows of evidence: a sentence both hear plainly."""

EDGE = 160
"""Peaks within 10 ms of the search's edge are not trusted."""

LAG_TOLERANCE = 320
"""Samples (20 ms) within which a new lag counts as the tracked one: the lag between two
microphones shifts by a few ms with who is talking (the air path differs), and drifts."""


@dataclass(slots=True)
class Evidence:
    """Hysteresis over analysis windows for one link (two microphones, or a microphone
    and a loudspeaker), and the lag the link is heard at."""

    max_lag: int
    """The largest lag searched, in samples either way."""
    score: float = 0.0
    linked: bool = False
    lag: int | None = None

    def observe(self, found: Match, against: bool = True, steady: bool = False) -> None:
        """One window with sound and its correlation. Without a clear match it counts
        against the link only when `against`: two talkers at once blur the correlation
        of two microphones that share a room, so a window where both sides have sound is
        evidence for, never against. With `steady`, a clear match away from the tracked
        lag is no evidence either way (see `Grouping.observe`)."""
        clear = self._is_evidence(found)
        if clear and steady and self.lag is not None and not self.tracks(found):
            return
        if clear:
            if self.lag is not None and self.tracks(found):
                self.lag = round(0.7 * self.lag + 0.3 * found.lag)
            elif self.lag is None or self.score <= 1.0 or found.clarity >= CLEAR:
                self.lag = found.lag
            gain = 2.0 if found.clarity >= VERY_CLEAR else 1.0
            self.score = min(self.score + gain, GROUP_AT)
        elif against:
            self.score = max(self.score - 1.0, 0.0)
        else:
            return
        if self.score >= GROUP_AT:
            self.linked = True
        elif self.score <= 0.0:
            self.linked = False
            self.lag = None

    def tracks(self, found: Match) -> bool:
        """Whether `found` is at the lag this link is tracked at, give or take its drift."""
        return self.lag is not None and abs(found.lag - self.lag) <= LAG_TOLERANCE

    def _is_evidence(self, found: Match) -> bool:
        if abs(found.lag) >= self.max_lag - EDGE:
            return False  # a peak at the edge of the search is the search running out
        if found.clarity >= CLEAR:
            return True
        return found.clarity >= CONSISTENT and self.tracks(found)


@dataclass(slots=True)
class PairState:
    evidence: Evidence
    override: bool | None = None


def _pair(a: str, b: str) -> tuple[str, str]:
    if a == b:
        raise ValueError("a pair needs two different participants")
    return (a, b) if a < b else (b, a)


class Grouping:
    def __init__(self, max_lag: int) -> None:
        self.max_lag = max_lag
        self._members: set[str] = set()
        self._pairs: dict[tuple[str, str], PairState] = {}

    def add(self, pid: str) -> None:
        for other in self._members:
            self._pairs.setdefault(_pair(pid, other), PairState(Evidence(self.max_lag)))
        self._members.add(pid)

    def remove(self, pid: str) -> None:
        self._members.discard(pid)
        for key in [key for key in self._pairs if pid in key]:
            del self._pairs[key]

    def pairs(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def observe(
        self, a: str, b: str, found: Match, against: bool = True, steady: bool = False
    ) -> None:
        """One window of sound for the pair (see `Evidence.observe`); `found.lag` is how
        much later b hears a sound than a. `steady`: what they hear may be loudspeakers'
        echo left by the cancellers, which two microphones hear at the lag between two
        loudspeakers' echoes, not a talker's: it may confirm the lag they are tracked at,
        not move it. Seen live, echo residue moved pairs' lags by 180-300 ms for 3-10 s,
        and the automix lined up the wrong frames: a talker's first words got through a
        neighbour's microphone as a duplicate."""
        key = _pair(a, b)
        state = self._pairs.get(key)
        if state is None:
            return
        if key != (a, b):
            found = Match(-found.lag, found.clarity)
        state.evidence.observe(found, against, steady)

    def override(self, a: str, b: str, together: bool | None) -> None:
        state = self._pairs.get(_pair(a, b))
        if state is None:
            raise KeyError(f"{a} and {b} are not both at this room's tables")
        state.override = together

    def together(self, a: str, b: str) -> bool:
        state = self._pairs.get(_pair(a, b))
        if state is None:
            return False
        return state.evidence.linked if state.override is None else state.override

    def lag(self, a: str, b: str) -> int | None:
        """Samples after `a` at which `b` hears the same sound, when measured."""
        key = _pair(a, b)
        state = self._pairs.get(key)
        lag = None if state is None else state.evidence.lag
        if lag is None:
            return None
        return lag if key == (a, b) else -lag

    def groups(self) -> list[frozenset[str]]:
        """Connected sets of co-located participants, two or more each."""
        parent = {pid: pid for pid in self._members}

        def root(pid: str) -> str:
            while parent[pid] != pid:
                parent[pid] = parent[parent[pid]]
                pid = parent[pid]
            return pid

        for a, b in itertools.combinations(sorted(self._members), 2):
            if self.together(a, b):
                parent[root(a)] = root(b)
        sets: dict[str, set[str]] = {}
        for pid in self._members:
            sets.setdefault(root(pid), set()).add(pid)
        return sorted((frozenset(s) for s in sets.values() if len(s) > 1), key=sorted)
