"""Each participant's microphone cut into utterances: 16 kHz chunks -> VAD -> the pipeline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from ai.utterance import Utterance
from ai.vad import VadSegmenter, VadSettings
from media.inbound import Chunk16k
from signaling.rooms import Participant

log = logging.getLogger(__name__)

CleanMic = Callable[[Participant, Chunk16k], Awaitable[list[Chunk16k]]]
"""A raw microphone chunk in, the chunks the VAD should hear out (`RoomTables.clean`)."""

INBOUND_QUEUE_CHUNKS = 250
"""16 kHz chunks (20 ms each, so 5 s) a feeder may fall behind before the oldest are
dropped; the VAD costs microseconds a chunk, so only a stalled loop gets there."""

STALLED_SECONDS = 1.0
"""A microphone that sends nothing for this long has lost its connection (a muted browser
microphone still sends silence): what it said up to then is cut and translated now, not
when (or if) it comes back."""


@dataclass(eq=False)
class _Feeder:
    participant: Participant
    queue: asyncio.Queue[Chunk16k]
    task: asyncio.Task[None]


class Feeders:
    """One room's feeders: a task per participant, started on join and awaited on leave.

    Each feeder reads its participant's 16 kHz queue, passes each chunk through `clean`
    (the room's acoustic tables) when given, cuts utterances with the VAD and hands each to
    `submit`, tagged with the language the participant speaks then: the one they pinned,
    or none (the translator detects it) with the language they were last heard speaking
    (at first, the one they listen in) as the declared one that detection favours. A
    feeder that dies is logged with its error; nothing else stops it but `stop`/`close`.
    """

    def __init__(
        self,
        room_id: str,
        vad: VadSettings,
        submit: Callable[[Utterance], object],
        on_segmented: Callable[[], None] = lambda: None,
        clean: CleanMic | None = None,
    ) -> None:
        self._room_id = room_id
        self._vad = vad
        self._submit = submit
        self._on_segmented = on_segmented
        self._clean = clean
        self._feeders: dict[str, _Feeder] = {}

    def __iter__(self) -> Iterator[str]:
        """The ids of the participants being fed."""
        return iter(list(self._feeders))

    def __len__(self) -> int:
        return len(self._feeders)

    @property
    def queued(self) -> int:
        """16 kHz chunks waiting in every feeder's queue."""
        return sum(feeder.queue.qsize() for feeder in self._feeders.values())

    def start(self, participant: Participant) -> None:
        if participant.id in self._feeders:
            raise ValueError(f"{participant.id} is already fed")
        queue = participant.audio.subscribe_16k(INBOUND_QUEUE_CHUNKS)
        task = asyncio.create_task(self._feed(participant, queue), name=f"vad-{participant.id}")
        task.add_done_callback(self._ended)
        self._feeders[participant.id] = _Feeder(participant, queue, task)

    async def stop(self, participant_id: str) -> None:
        """Stops feeding `participant_id` and waits until its feeder is gone."""
        feeder = self._feeders.pop(participant_id, None)
        if feeder is None:
            return
        feeder.participant.audio.unsubscribe(feeder.queue)
        feeder.task.cancel()
        await asyncio.wait({feeder.task})  # its error, if any, was logged when it died

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(pid) for pid in list(self._feeders)))

    async def _feed(self, participant: Participant, queue: asyncio.Queue[Chunk16k]) -> None:
        segmenter = VadSegmenter(self._vad, source_id=participant.id, room=self._room_id)
        while True:
            try:
                async with asyncio.timeout(STALLED_SECONDS):
                    raw = await queue.get()
            except TimeoutError:
                self._hand_on(participant, segmenter.flush())
                raw = await queue.get()
            chunks = [raw] if self._clean is None else await self._clean(participant, raw)
            for chunk in chunks:
                self._hand_on(
                    participant, segmenter.push(chunk.samples, chunk.time, chunk.received)
                )

    def _hand_on(self, participant: Participant, utterances: list[Utterance]) -> None:
        for utterance in utterances:
            utterance.source_lang = participant.speaks
            utterance.declared_lang = participant.speaking
            self._on_segmented()
            self._submit(utterance)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error(
                "feeder %s in room %s died; that microphone is no longer translated",
                task.get_name(), self._room_id, exc_info=error,
            )
