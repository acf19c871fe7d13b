"""One table, many phones: a room's co-located microphones, wired to feeders, mixes and clients.

`media.table.AcousticTables` does the frame work (who hears whom, echo of neighbouring
loudspeakers, crosstalk gating). This module runs it for one room off the event loop and
turns its groups into what people get: each listener's `MixSettings.table` (no original
voice of a table-mate), a `table` message to each participant whose table changed, a
`table` field in the roster, and manual overrides from `set_table` (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from media.frames import Pcm
from media.inbound import Chunk16k
from media.table import AcousticTables, TableStats
from signaling.rooms import Participant, Room

log = logging.getLogger(__name__)

T = TypeVar("T")

PLAYBACK_BACKLOG_FRAMES = 50
"""Frames (1 s) of "what this phone was sent", per participant, that may wait for the
table worker. Past that the worker is stalled and newer frames are dropped (counted):
the echo reference then has a gap, which costs echo removal for that second, not the
mix."""


class RoomTables:
    """One room's acoustic tables, on a worker thread of their own.

    Every call into `AcousticTables` goes through one single-threaded executor, so they
    run in the order they were made (a microphone chunk after the playback that preceded
    it) and never on the event loop: the grouping analysis costs milliseconds a second.
    """

    def __init__(self, room: Room, tables: AcousticTables | None = None) -> None:
        self._room = room
        self._tables = tables or AcousticTables()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"tables-{room.id}")
        self._groups: list[frozenset[str]] = []
        self._overrides: dict[frozenset[str], bool] = {}
        self._backlog = 0
        self._broken: set[str] = set()
        self._reported = (0, 0.0)
        self._closed = False
        self.dropped_playback_frames = 0
        room.mixer.add_tap(self._played)

    @property
    def groups(self) -> list[frozenset[str]]:
        """The co-located groups of this room's present participants, two or more each."""
        return list(self._groups)

    @property
    def stats(self) -> TableStats:
        return self._tables.stats

    @property
    def backlog(self) -> int:
        return self._backlog

    def add(self, participant: Participant) -> None:
        self._call(self._tables.add, participant.id)

    async def remove(self, participant: Participant) -> None:
        """Forgets `participant`; their table-mates' tables are updated at once."""
        self._overrides = {
            pair: together for pair, together in self._overrides.items()
            if participant.id not in pair
        }
        self._update()
        if not self._closed:  # a closed room forgets everyone at once
            await self._run(self._tables.remove, participant.id)
            self._update()

    async def clean(self, participant: Participant, chunk: Chunk16k) -> list[Chunk16k]:
        """`participant`'s microphone chunk in; the cleaned chunks ready for the VAD out.

        If the table processing fails, that microphone is passed through raw from then on
        (logged once): a fault here must cost co-location, not translation.
        """
        if participant.id in self._broken:
            return [chunk]
        try:
            cleaned = await self._run(self._tables.mic, participant.id, chunk)
        except Exception:
            log.exception(
                "acoustic tables failed on %s in room %s; passing that microphone through",
                participant.id, self._room.id,
            )
            self._broken.add(participant.id)
            return [chunk]
        self._update()
        return cleaned

    async def override(self, a: Participant, b: Participant, together: bool | None) -> None:
        """Seat `a` and `b` at one table (True), apart (False), or as heard (None)."""
        pair = frozenset({a.id, b.id})
        if together is None:
            self._overrides.pop(pair, None)
        else:
            self._overrides[pair] = together
        await self._run(self._tables.override, a.id, b.id, together)
        self._update(tell=(a, b))

    def take_counts(self) -> tuple[int, float]:
        """(duplicate utterances suppressed, echo-suppressed seconds) since the last call."""
        stats = self._tables.stats
        now = (stats.duplicates_suppressed, stats.echo_suppressed_seconds)
        previous, self._reported = self._reported, now
        return now[0] - previous[0], now[1] - previous[1]

    def close(self) -> None:
        self._closed = True
        self._room.mixer.remove_tap(self._played)
        self._worker.shutdown(wait=False, cancel_futures=True)

    def table_message(self, participant: Participant) -> dict[str, Any]:
        overrides = {
            other: together
            for pair, together in self._overrides.items()
            if participant.id in pair
            for other in pair - {participant.id}
        }
        return {
            "type": "table",
            "members": sorted(participant.listener.mix.table),
            "overrides": overrides,
        }

    # -- internals ---------------------------------------------------------------------
    def _played(self, pid: str, pcm: Pcm | None, due: float) -> None:
        """The mixer's tap: `pid` was sent `pcm` in the tick due at `due`. Placed by that
        due time, not by when the tick ran or the worker gets to it: the phone plays it
        by its media time, which follows the due times, so the echo keeps a fixed lag
        behind this reference however late a busy server's ticks run."""
        if self._backlog >= PLAYBACK_BACKLOG_FRAMES * max(1, len(self._room.participants)):
            self.dropped_playback_frames += 1
            return
        self._backlog += 1
        future = asyncio.wrap_future(self._worker.submit(self._tables.played, pid, pcm, due))
        future.add_done_callback(self._played_done)

    def _played_done(self, future: asyncio.Future[None]) -> None:
        self._backlog -= 1
        if not future.cancelled() and (error := future.exception()) is not None:
            log.error("acoustic tables failed on playback in room %s", self._room.id,
                      exc_info=error)

    def _call(self, work: Callable[..., object], *args: object) -> None:
        """Runs `work` on the worker without waiting; a failure is logged."""

        def done(future: Future[object]) -> None:
            if not future.cancelled() and (error := future.exception()) is not None:
                log.error("acoustic tables failed in room %s", self._room.id, exc_info=error)

        self._worker.submit(work, *args).add_done_callback(done)

    async def _run(self, work: Callable[..., T], *args: object) -> T:
        return await asyncio.wrap_future(self._worker.submit(work, *args))

    def _update(self, tell: tuple[Participant, ...] = ()) -> None:
        """Brings listeners' tables, clients and the roster in line with the groups."""
        present = set(self._room.participants)
        groups = [g & present for g in self._tables.groups()]
        groups = sorted((g for g in groups if len(g) > 1), key=sorted)
        if groups == self._groups and not tell:
            return
        self._groups = groups
        mates = {pid: group - {pid} for group in groups for pid in group}
        changed = []
        for participant in list(self._room.participants.values()):
            table = mates.get(participant.id, frozenset())
            if participant.listener.mix.table != table:
                participant.listener.mix.table = table
                changed.append(participant)
        for participant in dict.fromkeys([*changed, *(p for p in tell if p.id in present)]):
            participant.send(self.table_message(participant))
        if changed:
            self._room.broadcast({"type": "participants", "participants": self._room.roster()})
