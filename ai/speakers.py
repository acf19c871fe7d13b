"""Who is speaking: a per-room registry that matches voiceprints to known speakers.

Pure numpy; the embedder that makes the prints lives in `ai.voiceprint`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Embedding = npt.NDArray[np.float32]

PALETTE = (
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
    "#bfef45", "#469990", "#9a6324", "#800000", "#808000", "#000075", "#a9a9a9",
)
MAX_NAME_LENGTH = 64
"""The protocol's limit for participant and speaker names (`rename_speaker`), so a name the
client and the signaling layer accept is never refused here."""


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    threshold: float = 0.5
    """Cosine similarity from which a print counts as a known speaker."""
    connection_bonus: float = 0.1
    """Added for speakers already heard on the utterance's connection: most of what a
    device hears is its own people, so a borderline match there is believed."""
    min_learn_seconds: float = 1.0
    """Shorter utterances give noisy prints: they neither found a speaker nor move one."""
    enrolment_seconds: float = 8.0
    """Speech after which confidence reaches 63 % (1 - 1/e); 24 s gives 95 %."""
    max_speakers: int = 64
    """A room keeps at most this many; the one heard least recently goes first."""


@dataclass(frozen=True, slots=True)
class Speaker:
    """What clients see of a speaker."""

    id: str
    name: str
    connection_id: str
    """The connection on which they were first heard."""
    seconds: float
    """Speech learned into the print so far."""
    confidence: float
    """0 to 1: how settled the print is, from the speech learned."""
    color: str


@dataclass(frozen=True, slots=True)
class Assignment:
    speaker: Speaker
    similarity: float
    """Raw cosine similarity to the speaker's print (1.0 for a new speaker)."""
    is_new: bool


@dataclass(slots=True, eq=False)
class _Entry:
    id: str
    name: str
    connection_id: str
    color: str
    total: npt.NDArray[np.float64]
    """Sum of unit prints weighted by seconds: the running mean, unnormalised."""
    seconds: float = 0.0
    connections: set[str] = field(default_factory=set)
    last_heard: int = 0

    def centroid(self) -> npt.NDArray[np.float64]:
        return _unit(self.total)


class SpeakerRegistry:
    """The speakers of one room. Not thread-safe: use it from the room's event loop."""

    def __init__(self, settings: RegistrySettings | None = None) -> None:
        self.settings = settings or RegistrySettings()
        self._entries: dict[str, _Entry] = {}
        self._ids = itertools.count(1)
        self._clock = itertools.count(1)

    def assign(
        self,
        embedding: Embedding,
        connection_id: str,
        seconds: float,
        participant: str | None = None,
    ) -> Assignment:
        """The speaker of one utterance, creating one if the voice is new.

        `participant` is the display name of whoever owns the connection. The
        first voice on a connection is that participant; further new voices on
        it are named "Speaker N on <participant>'s device".
        """
        vector = _unit(np.asarray(embedding, dtype=np.float64).reshape(-1))
        if not np.all(np.isfinite(vector)) or not vector.any():
            raise ValueError("the voiceprint is empty or not finite")
        s = self.settings
        learnable = seconds >= s.min_learn_seconds
        on_connection = [e for e in self._entries.values() if connection_id in e.connections]

        def score(entry: _Entry) -> float:
            bonus = s.connection_bonus if connection_id in entry.connections else 0.0
            return self._similarity(entry, vector) + bonus

        best = max(self._entries.values(), key=score, default=None)
        if not on_connection:
            # The first voice on a connection is its participant, whoever they sound like.
            entry, similarity, is_new = self._create(vector, connection_id, participant), 1.0, True
        elif best is not None and score(best) >= s.threshold:
            entry, similarity, is_new = best, self._similarity(best, vector), False
        elif not learnable:
            # Too short to found a speaker on: credit whoever spoke last on this device.
            entry = max(on_connection, key=lambda e: e.last_heard)
            similarity, is_new = self._similarity(entry, vector), False
        else:
            entry, similarity, is_new = self._create(vector, connection_id, participant), 1.0, True

        if learnable or entry.seconds == 0.0:
            entry.total = entry.total + vector * max(seconds, 1e-3)
            entry.seconds += seconds
        entry.connections.add(connection_id)
        entry.last_heard = next(self._clock)
        self._evict()
        return Assignment(self._public(entry), float(similarity), is_new)

    def speakers(self) -> list[Speaker]:
        """Everyone known in the room, in the order they were first heard."""
        return [self._public(e) for e in self._entries.values()]

    def rename(self, speaker_id: str, name: str) -> Speaker:
        entry = self._entries.get(speaker_id)
        if entry is None:
            raise KeyError(f"no speaker {speaker_id!r} in this room")
        clean = " ".join(name.split())
        if not clean or len(clean) > MAX_NAME_LENGTH:
            raise ValueError(f"a speaker name is 1 to {MAX_NAME_LENGTH} characters")
        entry.name = clean
        return self._public(entry)

    def forget_connection(self, connection_id: str) -> list[str]:
        """A connection left: drop the speakers heard only on it; returns their ids."""
        gone = [e.id for e in self._entries.values() if e.connections == {connection_id}]
        for speaker_id in gone:
            del self._entries[speaker_id]
        for entry in self._entries.values():
            entry.connections.discard(connection_id)
        return gone

    def _similarity(self, entry: _Entry, vector: npt.NDArray[np.float64]) -> float:
        return float(entry.centroid() @ vector)

    def _create(
        self, vector: npt.NDArray[np.float64], connection_id: str, participant: str | None
    ) -> _Entry:
        owner = participant or connection_id
        already = sum(1 for e in self._entries.values() if e.connection_id == connection_id)
        number = next(self._ids)
        entry = _Entry(
            id=f"s{number}",
            name=owner if already == 0 else f"Speaker {already + 1} on {owner}'s device",
            connection_id=connection_id,
            color=PALETTE[(number - 1) % len(PALETTE)],
            total=np.zeros_like(vector),
        )
        self._entries[entry.id] = entry
        return entry

    def _evict(self) -> None:
        while len(self._entries) > self.settings.max_speakers:
            oldest = min(self._entries.values(), key=lambda e: e.last_heard)
            del self._entries[oldest.id]

    def _public(self, entry: _Entry) -> Speaker:
        confidence = 1.0 - math.exp(-entry.seconds / self.settings.enrolment_seconds)
        return Speaker(
            entry.id, entry.name, entry.connection_id, entry.seconds, confidence, entry.color
        )


def _unit(vector: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector
