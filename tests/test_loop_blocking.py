"""No pipeline stage blocks the event loop that runs every room's 20 ms mixer ticks."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator

import numpy as np

from ai.casting import VoiceCasting
from ai.kokoro_voices import KOKORO_LANGUAGES
from ai.stages import SpeakTranslation
from ai.utterance import PIPELINE_RATE, Audio, Utterance
from signaling.metrics import Metrics

MAX_LOOP_LAG = 0.02


class OneChunk:
    """A synthesizer that answers at once, so only the stage's own work is measured."""

    def speaks(self, lang: str) -> bool:
        return True

    async def stream(self, text: str, lang: str, voice: str) -> AsyncIterator[Audio]:
        yield np.zeros(480, np.float32)


def voiced(seconds: float, f0: float = 120.0) -> Audio:
    """A buzzy vowel: periodic in every frame, so pitch estimation does its full work."""
    t = np.arange(int(seconds * PIPELINE_RATE)) / PIPELINE_RATE
    return (0.3 * ((t * f0) % 1.0 - 0.5)).astype(np.float32)


def lag_over(metrics: Metrics, limit: float) -> int:
    """Loop-lag observations above `limit` (a bucket bound of the histogram)."""
    samples = {
        (s.name, s.labels.get("le")): s.value
        for metric in metrics.loop_lag.collect()
        for s in metric.samples
    }
    return int(
        samples[("babblefish_event_loop_lag_seconds_count", None)]
        - samples[("babblefish_event_loop_lag_seconds_bucket", str(limit))]
    )


async def test_casting_a_voice_from_long_speech_does_not_block_the_loop() -> None:
    # A full collection in a process holding torch's object graph pauses the loop too, but
    # that is no pipeline stage: keep it out of this measurement.
    gc.collect()
    gc.disable()
    try:
        await _cast_three_long_utterances()
    finally:
        gc.enable()


async def _cast_three_long_utterances() -> None:
    metrics = Metrics()
    watcher = asyncio.create_task(metrics.watch_loop_lag(interval=0.002))
    casting = VoiceCasting(KOKORO_LANGUAGES)
    stage = SpeakTranslation(OneChunk(), translator=None)  # type: ignore[arg-type]
    chunks: list[Audio] = []
    await asyncio.sleep(0.02)
    loop_cpu = []
    for speaker in ("a", "b", "c"):  # each new speaker's first 12 s utterance is judged
        audio = voiced(12.0)
        utterance = Utterance(audio=audio, start=0.0, end=12.0, source_id=speaker)
        before = time.thread_time()
        await stage(utterance, "spa", "hola", casting.cast, chunks.append)
        loop_cpu.append(time.thread_time() - before)
    await asyncio.sleep(0.02)
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    assert len(chunks) == 3 and casting.gender_of("a") == "male"
    # The loop's own CPU time, not its wall-clock lag, decides: on two shared cores the
    # scheduler alone delays a timer past 20 ms now and then. The lag metric is reported.
    late = lag_over(metrics, MAX_LOOP_LAG)
    assert max(loop_cpu) < MAX_LOOP_LAG, (loop_cpu, f"{late} loop-lag samples over 20 ms")
