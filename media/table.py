"""One table, many phones: co-located microphones of a room, cleaned before the VAD.

`AcousticTables` (one per room) sees every participant's microphone at 16 kHz and what
the server sent every phone. It

1. finds which microphones hear the same acoustic space (`media.grouping`, by GCC-PHAT
   correlation of their streams every `ANALYSIS_EVERY` seconds, lags up to `MAX_LAG`);
2. removes the echo of other phones' loudspeakers from each microphone (`media.echo`);
3. per group, gates a microphone's frames that only carry crosstalk of a talker another
   microphone hears better (`media.automix`), so each sentence reaches the VAD once, from
   the talker's own phone. A talker the cancellers took down with a neighbour's echo
   is weighed at the level their microphone shows over that echo (`media.echo_return`).

Participants in no group pass through with only step 2, which changes nothing unless a
loudspeaker is heard: a remote participant is treated exactly as before.

All positions are on the server clock (`media.timeline`). To line a frame up with a peer
heard later, `mic` holds chunks back until the peer's audio is in, at most `MAX_LAG` plus
`HOLD_SLACK` of this stream's own time, so a peer that stops delivering stalls no one.
Work per 20 ms is pure numpy/scipy plus the cancellers; it runs on the caller's thread.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from media.automix import ACTIVE_DB, AutoMixer, MicLevel, Peer, frame_db, frame_levels
from media.correlation import Match, Window, match, matches
from media.echo import PLAYED_ACTIVE_DBFS, Loudspeaker, MicEcho, echo_dominated
from media.echo_cancellers import Canceller, WebRtcCanceller
from media.frames import Pcm
from media.grouping import CLEAR, CONSISTENT, Grouping
from media.inbound import Chunk16k
from media.timeline import FRAME, RATE, StreamClock, Timeline, position

ANALYSIS_EVERY = position(0.5)
WINDOW = position(2.0)
MAX_LAG = position(0.5)
"""Mic-to-mic lags of ±0.5 s; loudspeaker echoes 0 to 1 s late."""

HOLD_SLACK = position(0.1)
STALLED = position(2.0)
"""A stream this far behind the newest is left out of the analysis."""

SOUND_SHARE = 0.1
"""A window has sound when this share of its frames stands `ACTIVE_DB` above its floor."""

QUIETEST_FLOOR_DBFS = -70.0
BURST_GAP_FRAMES = 25
"""Crosstalk gated after 0.5 s without any counts as a new suppressed duplicate."""


@dataclass
class TableStats:
    groups: int = 0
    grouped_participants: int = 0
    duplicates_suppressed: int = 0
    """Bursts of a talker's speech gated on a microphone that heard it as crosstalk."""
    echo_suppressed_seconds: float = 0.0
    """Microphone audio that was mostly a neighbouring loudspeaker's echo."""
    echo_paths: int = 0
    """Loudspeakers currently heard by some other phone's microphone."""


@dataclass(eq=False)
class _Participant:
    clock: StreamClock = field(default_factory=StreamClock)
    raw: Timeline = field(default_factory=Timeline)
    clean: Timeline = field(default_factory=Timeline)
    out: Timeline = field(default_factory=Timeline)
    speaker: Loudspeaker = field(default_factory=Loudspeaker)
    echo: MicEcho | None = None
    level: MicLevel = field(default_factory=MicLevel)
    pending: deque[tuple[int, Chunk16k]] = field(default_factory=deque)
    next_echo: int | None = None
    next_mix: int | None = None
    quiet_gated: int = BURST_GAP_FRAMES


class AcousticTables:
    def __init__(self, make_canceller: Callable[[], Canceller] = WebRtcCanceller) -> None:
        self.stats = TableStats()
        self._make_canceller = make_canceller
        self._people: dict[str, _Participant] = {}
        self._grouping = Grouping(MAX_LAG)
        self._mixer = AutoMixer()
        self._next_analysis: int | None = None
        self._groups: list[frozenset[str]] = []

    # membership and manual control

    def add(self, pid: str) -> None:
        if pid in self._people:
            raise ValueError(f"{pid} is already at this room's tables")
        self._people[pid] = _Participant(
            echo=MicEcho(self._make_canceller, MAX_LAG), level=self._mixer.level(pid)
        )
        self._grouping.add(pid)

    def remove(self, pid: str) -> None:
        if self._people.pop(pid, None) is None:
            return
        self._grouping.remove(pid)
        self._mixer.remove(pid)
        for person in self._people.values():
            assert person.echo is not None
            person.echo.forget(pid)
        self._refresh_groups()

    def override(self, a: str, b: str, together: bool | None) -> None:
        """Put `a` and `b` at one table (True), keep them apart (False), or go back to
        what the microphones say (None)."""
        self._grouping.override(a, b, together)
        self._refresh_groups()

    def groups(self) -> list[frozenset[str]]:
        return list(self._groups)

    def lag(self, a: str, b: str) -> int | None:
        """Samples at 16 kHz after `a` at which `b` hears the same sound, once measured."""
        return self._grouping.lag(a, b)

    # media

    def played(self, pid: str, pcm48k: Pcm | None, at: float | None = None) -> None:
        """What the server sent `pid` in one 20 ms mixer tick (48 kHz mono, None when
        silent), due at `at` (`time.monotonic()`, now when None)."""
        person = self._people.get(pid)
        if person is not None:
            due = time.monotonic() if at is None else at
            person.speaker.play(position(due), pcm48k)

    def mic(self, pid: str, chunk: Chunk16k) -> list[Chunk16k]:
        """Take one chunk of `pid`'s microphone; return its cleaned chunks that are ready,
        in order (none while held back for a peer, several once the peer catches up)."""
        person = self._people.get(pid)
        if person is None:
            return [chunk]
        samples = np.asarray(chunk.samples, np.float32)
        start = person.clock.place(chunk.time, chunk.received, len(samples))
        person.raw.write(start, samples)
        person.pending.append((start, chunk))
        if person.next_echo is None or start > person.next_echo + STALLED:
            person.next_echo = person.next_mix = start
        self._cancel_echo(pid, person)
        self._analyse_if_due()
        self._gate_crosstalk(pid, person)
        return self._release(person)

    # steps

    def _cancel_echo(self, pid: str, person: _Participant) -> None:
        assert person.echo is not None and person.next_echo is not None
        assert person.raw.end is not None
        audible = self._audible_from(pid)
        speakers = {other: p.speaker for other, p in self._people.items()
                    if other != pid and other in audible}
        nearby = next((g for g in self._groups if pid in g), frozenset())
        while person.next_echo + FRAME <= person.raw.end:
            at = person.next_echo
            frame = person.raw.read(at, FRAME)
            cleaned = person.echo.clean(at, frame, speakers, nearby)
            # The automix weighs the cancellers' output, muted or not: a talker muted
            # while a canceller settles is still the talker, and a neighbour's microphone
            # that hears them must not win the sentence meanwhile. For the same reason a
            # talker the cancellers took down with an echo is weighed as heard.
            level_db = frame_db(cleaned)
            if person.echo.near.level_db is not None:
                level_db = max(level_db, person.echo.near.level_db)
            person.level.push(at, level_db)
            if person.echo.muted:
                floor = max(person.level.floor_db, QUIETEST_FLOOR_DBFS)
                cleaned = cleaned * np.float32(min(1.0, 10 ** ((floor - frame_db(cleaned)) / 20)))
            if cleaned is not frame and echo_dominated(frame, cleaned):
                self.stats.echo_suppressed_seconds += FRAME / RATE
            person.clean.write(at, cleaned)
            person.next_echo = at + FRAME

    def _gate_crosstalk(self, pid: str, person: _Participant) -> None:
        assert person.next_mix is not None and person.next_echo is not None
        peers_of = next((g for g in self._groups if pid in g), frozenset())
        while person.next_mix + FRAME <= person.next_echo:
            at = person.next_mix
            peers = self._aligned_peers(pid, peers_of)
            if peers is None:
                own_end = person.raw.end or at
                waiting = [
                    other for other, lag in self._peer_lags(pid, peers_of)
                    if (self._people[other].level.end or 0) < at + lag + 2 * FRAME
                    and own_end < at + lag + 2 * FRAME + HOLD_SLACK
                ]
                if waiting:
                    return
                peers = self._aligned_peers(pid, peers_of, ready_only=False) or []
            frame = person.clean.read(at, FRAME)
            own_db = frame_db(frame)
            gain = self._mixer.gate(pid, at, own_db, peers)
            if gain < 1.0:
                frame = frame * np.float32(gain)
                self._count_burst(person, own_db)
            else:
                person.quiet_gated = min(person.quiet_gated + 1, BURST_GAP_FRAMES)
            person.out.write(at, frame)
            person.next_mix = at + FRAME

    def _count_burst(self, person: _Participant, own_db: float) -> None:
        loud = own_db >= person.level.floor_db + ACTIVE_DB
        if loud and person.quiet_gated >= BURST_GAP_FRAMES:
            self.stats.duplicates_suppressed += 1
        person.quiet_gated = 0 if loud else min(person.quiet_gated + 1, BURST_GAP_FRAMES)

    def _peer_lags(self, pid: str, group: frozenset[str]) -> list[tuple[str, int]]:
        lags = self._group_offsets(group)
        if pid not in lags:
            return []
        return [(other, lags[other] - lags[pid]) for other in group
                if other != pid and other in lags and other in self._people]

    def _aligned_peers(
        self, pid: str, group: frozenset[str], ready_only: bool = True
    ) -> list[Peer] | None:
        """The peers lined up to `pid`, or None while one of them has yet to deliver."""
        person = self._people[pid]
        assert person.next_mix is not None
        peers = []
        for other, lag in self._peer_lags(pid, group):
            level = self._people[other].level
            if ready_only and (level.end or 0) < person.next_mix + lag + 2 * FRAME:
                return None
            peers.append(Peer(level, lag))
        return peers

    def _group_offsets(self, group: frozenset[str]) -> dict[str, int]:
        """Each member's lag after the group's first member, through measured pairs (a
        pair grouped via a third member, or by hand, may have no lag of its own)."""
        if not group:
            return {}
        members = sorted(group)
        offsets = {members[0]: 0}
        frontier = [members[0]]
        while frontier:
            current = frontier.pop()
            for other in members:
                if other in offsets:
                    continue
                lag = self._grouping.lag(current, other)
                if lag is not None:
                    offsets[other] = offsets[current] + lag
                    frontier.append(other)
        return offsets

    def _release(self, person: _Participant) -> list[Chunk16k]:
        ready = []
        assert person.next_mix is not None
        while person.pending:
            start, chunk = person.pending[0]
            if start + len(chunk.samples) > person.next_mix:
                break
            person.pending.popleft()
            samples = person.out.read(start, len(chunk.samples))
            ready.append(Chunk16k(samples, chunk.time, chunk.received))
        return ready

    # analysis

    def _analyse_if_due(self) -> None:
        ends = [p.raw.end for p in self._people.values() if p.raw.end is not None]
        if not ends:
            return
        newest = max(ends)
        if self._next_analysis is None:
            self._next_analysis = newest + WINDOW
        if newest < self._next_analysis:
            return
        self._next_analysis = newest + ANALYSIS_EVERY
        live = {pid: p for pid, p in self._people.items()
                if p.raw.end is not None and p.raw.end >= newest - STALLED}
        if not live:
            return
        end = min(p.raw.end for p in live.values() if p.raw.end is not None)
        self._analyse(live, end)
        self._refresh_groups()

    def _analyse(self, live: dict[str, _Participant], end: int) -> None:
        widened = WINDOW + 2 * MAX_LAG
        since = end - widened
        heard: dict[str, Window] = {}
        raw: dict[str, Window] = {}
        sounding: dict[str, bool] = {}
        for pid, person in live.items():
            clean = person.clean.read(since, widened)
            sounding[pid] = _has_sound(clean[MAX_LAG : MAX_LAG + WINDOW])
            heard[pid] = Window(clean, MAX_LAG)
            raw[pid] = Window(person.raw.read(since, widened), MAX_LAG)
        # A played window starts MAX_LAG before the mics' widened windows, so echoes
        # 0 to 2 * MAX_LAG late fall within them.
        playing: dict[str, Pcm] = {}
        for speaker_pid, speaker in self._people.items():
            played = speaker.speaker.played.read(since - MAX_LAG, widened)
            if _is_playing(played[MAX_LAG : MAX_LAG + WINDOW]):
                playing[speaker_pid] = played
        # The loudspeakers playing that each microphone may hear. One that is alone there
        # is measured alone: a phone ending another translation plays a partly alike
        # window, and its copy would match this sound too.
        heard_playing: dict[str, list[str]] = {}
        for mic_pid in live:
            audible = self._audible_from(mic_pid)
            heard_playing[mic_pid] = [p for p in playing if p != mic_pid and p in audible]
        hears_playback: set[str] = set()
        shares: dict[str, bool] = {}

        def shares_sound(mic_pid: str) -> bool:
            """Whether another microphone of its table hears what this one does: a talker
            there (seen live: the table's talkers masked a loudspeaker for 9 s in a row)
            or a loudspeaker. A phone carried away from the table shares nothing."""
            if mic_pid not in shares:
                shares[mic_pid] = any(
                    match(raw[mic_pid], raw[other]).clarity >= CLEAR
                    for other in self._audible_from(mic_pid) if other != mic_pid and other in raw
                )
            return shares[mic_pid]

        for sharing in _same_sound(playing):
            reference = Window(playing[sharing[0]], MAX_LAG)
            for mic_pid, person in live.items():
                assert person.echo is not None
                speakers = [pid for pid in sharing if pid in heard_playing[mic_pid]]
                if speakers:
                    copies = matches(reference, raw[mic_pid], len(speakers))
                    if any(one.clarity >= CONSISTENT for one in copies):
                        hears_playback.add(mic_pid)
                    sound_heard = any(one.clarity >= CLEAR for one in copies) or shares_sound(
                        mic_pid
                    )
                    alone = len(heard_playing[mic_pid]) == 1
                    for pid, one in _assign(person.echo, speakers, copies):
                        person.echo.path(pid).observe(one, sound_heard, alone)
        # Sound that only one of a pair hears counts against them sharing a room, unless
        # it may be a loudspeaker's echo: one microphone's echo is taken out better than
        # another's, and a table whose phones play translations would drift apart. A
        # phone carried away from the table hears none of them, so its owner's voice
        # there counts against it even while the table's loudspeakers play.
        pids = sorted(live)
        for i, a in enumerate(pids):
            for b in pids[i + 1 :]:
                if sounding[a] or sounding[b]:
                    loner = a if sounding[a] else b
                    one_sided = sounding[a] != sounding[b]
                    found = match(heard[a], heard[b])
                    echo_possible = loner in hears_playback
                    self._grouping.observe(
                        a, b, found, against=one_sided and not echo_possible,
                        steady=a in hears_playback or b in hears_playback,
                    )
        self.stats.echo_paths = sum(
            1 for p in self._people.values() if p.echo is not None
            for path in p.echo.paths.values() if path.delay is not None
        )

    def _audible_from(self, pid: str) -> frozenset[str]:
        """The loudspeakers `pid`'s microphone may hear: its table's, once it has one.

        A remote listener of the same language is sent the same translation at the same
        moment as a phone at the table, so correlation alone cannot tell their echoes
        apart; seen live, the remote phone took the table phone's echo path and that
        phone's echo went through. Before a microphone is grouped, any may be heard."""
        table = next((g for g in self._groups if pid in g), None)
        return frozenset(self._people) if table is None else table

    def _refresh_groups(self) -> None:
        self._groups = self._grouping.groups()
        for pid, person in self._people.items():
            assert person.echo is not None
            for away in set(person.echo.paths) - self._audible_from(pid):
                person.echo.forget(away)
        self.stats.groups = len(self._groups)
        self.stats.grouped_participants = sum(len(g) for g in self._groups)


SAME_SOUND = 0.98
"""Played windows this alike (normalised correlation) carry the same mix."""


def _same_sound(playing: dict[str, Pcm]) -> list[list[str]]:
    """Loudspeakers grouped by what they play: a room sends one translation to every
    listener of a language at once, so phones of one language play the same sound."""
    groups: list[list[str]] = []
    for pid, samples in playing.items():
        for group in groups:
            other = playing[group[0]]
            norm = float(np.sqrt(np.dot(samples, samples) * np.dot(other, other))) or 1.0
            if float(np.dot(samples, other)) / norm >= SAME_SOUND:
                group.append(pid)
                break
        else:
            groups.append([pid])
    return groups


def _assign(echo: MicEcho, speakers: list[str], found: list[Match]) -> list[tuple[str, Match]]:
    """Pairs loudspeakers playing one sound with the copies of it a microphone hears.

    Correlation alone cannot tell which copy is whose. A copy at the lag a loudspeaker is
    tracked at is taken to be its own (the most settled loudspeakers choose first); the
    copies left go, loudest first, to the loudspeakers left. Matching all of them at
    once by least total drift (the first design) could give a tracked loudspeaker a
    reflection of its neighbour's copy in a tie, and its reference then jumped back and
    forth between the two, each jump a second of echo let through.

    Two loudspeakers may reach the microphone at one lag (seen live: 0.5 ms apart), and
    then one copy is found where two are, the next peak being a reflection (32 ms later):
    given that leftover, a loudspeaker's measured delay jumped to it. So one whose lag was
    measured while it played alone, where only an already taken copy is found, shares
    that copy: heard, at its own lag (the shared copy's lag would pull it onto the
    other's). A lag measured among copies may be another's copy taken by mistake, and
    sharing would lock it there (in the simulated table, bench/colocated.py, sharing any
    tracked lag cost more than it saved), so such a loudspeaker takes a leftover as before."""
    if len(speakers) == 1:
        return [(speakers[0], found[0])]
    evidence = {pid: echo.path(pid).evidence for pid in speakers}
    free = list(found)
    pairs: list[tuple[str, Match]] = []
    waiting = []
    for pid in sorted(speakers, key=lambda p: -evidence[p].score):
        near = [c for c in free if evidence[pid].tracks(c)]
        taken = [c for _, c in pairs if evidence[pid].tracks(c)]
        if near:
            own = max(near, key=lambda c: c.clarity)
            free.remove(own)
            pairs.append((pid, own))
        elif taken and echo.path(pid).measured_alone and (lag := evidence[pid].lag) is not None:
            pairs.append((pid, Match(lag, max(c.clarity for c in taken))))
        else:
            waiting.append(pid)
    # One copy was found per loudspeaker, so none waits in vain; a shared copy leaves one
    # over.
    pairs.extend(zip(waiting, free, strict=False))
    return pairs


def _has_sound(samples: Pcm) -> bool:
    levels = frame_levels(samples)
    floor = max(float(np.min(levels)), QUIETEST_FLOOR_DBFS)
    return float(np.mean(levels >= floor + ACTIVE_DB)) >= SOUND_SHARE


def _is_playing(samples: Pcm) -> bool:
    return float(np.mean(frame_levels(samples) >= PLAYED_ACTIVE_DBFS)) >= SOUND_SHARE
