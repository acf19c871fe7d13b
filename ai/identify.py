"""Who spoke an utterance: a room's voiceprint registry behind a shared embedder."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
import numpy.typing as npt

from ai.speakers import SpeakerRegistry
from ai.utterance import Audio, Utterance

Embed = Callable[[Audio], Awaitable[npt.NDArray[np.float32]]]
"""16 kHz audio -> a voiceprint, computed off the event loop."""


class VoiceprintIdentifier:
    """`SpeakerIdentifier` over one room's registry: embed off-loop, assign on the loop.

    Without an embedder every speaker is named after the participant whose device heard
    them.
    """

    def __init__(
        self,
        embed: Embed | None,
        registry: SpeakerRegistry,
        participant_name: Callable[[str], str | None],
        on_change: Callable[[], None],
    ) -> None:
        self._embed = embed
        self._registry = registry
        self._participant_name = participant_name
        self._on_change = on_change

    async def identify(self, utterance: Utterance) -> tuple[str, str | None]:
        owner = self._participant_name(utterance.source_id)
        if self._embed is None:
            return utterance.source_id, owner
        embedding = await self._embed(utterance.audio)
        assignment = self._registry.assign(
            embedding, utterance.source_id, utterance.duration, participant=owner
        )
        self._on_change()
        return assignment.speaker.id, assignment.speaker.name
