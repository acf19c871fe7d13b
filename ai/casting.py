"""Give each speaker in a room a distinct, stable synthetic voice that matches their pitch.

Pure numpy and data: which voices exist per language comes from
`ai.kokoro_voices`; nothing here loads a model.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping

import numpy as np

from ai.kokoro_voices import KokoroLanguage
from ai.utterance import PIPELINE_RATE, Audio

LOWEST_F0, HIGHEST_F0 = 65.0, 400.0
FEMALE_FROM_HZ = 165.0
"""Median speaking pitch that separates typical male (85-155 Hz) from female (165-255 Hz)."""
_FRAME, _HOP = 640, 320  # 40 ms windows hold at least two periods of the lowest pitch


def estimate_pitch(audio: Audio, rate: int = PIPELINE_RATE) -> float | None:
    """Median F0 (Hz) over the clearly periodic frames, or None if there are too few."""
    if audio.ndim != 1 or len(audio) < _FRAME:
        return None
    frames = np.lib.stride_tricks.sliding_window_view(audio.astype(np.float64), _FRAME)[::_HOP]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sum(frames**2, axis=1)
    loud = frames[energy > 0.1 * np.max(energy)] if np.max(energy) > 0 else frames[:0]
    shortest, longest = int(rate / HIGHEST_F0), int(rate / LOWEST_F0)
    # Every frame at once: one batched FFT instead of a Python loop per 20 ms frame.
    spectra = np.fft.rfft(loud * np.hanning(_FRAME), 2 * _FRAME, axis=1)
    correlation = np.fft.irfft(np.abs(spectra) ** 2, axis=1)[:, : longest + 1]
    power = correlation[:, 0]
    lags = shortest + np.argmax(correlation[:, shortest:], axis=1)
    peaks = correlation[np.arange(len(lags)), lags]
    # Only strongly periodic frames (voiced vowels) speak for the pitch.
    periodic = (power > 0) & (peaks >= 0.5 * power)
    pitches = rate / lags[periodic]
    if len(pitches) < 5:
        return None
    return float(np.median(pitches))


class VoiceCasting:
    """The voices of one room. Not thread-safe: use it from the room's event loop.

    A speaker's gender is judged once, from the first utterance with a clear
    pitch, and each (speaker, language) keeps the voice it was first given.
    New speakers get voices nobody in the room uses yet, while any are left.
    """

    def __init__(self, languages: Mapping[str, KokoroLanguage]) -> None:
        self._languages = languages
        self._gender: dict[str, str | None] = {}
        self._cast: dict[tuple[str, str], str] = {}

    def voice_for(self, speaker_id: str, lang: str, audio: Audio | None = None) -> str:
        """The voice that speaks `speaker_id`'s words in `lang`; `audio` is their 16 kHz speech."""
        cast = self._cast.get((speaker_id, lang))
        if cast is not None:
            return cast
        table = self._languages.get(lang)
        if table is None:
            raise ValueError(f"no synthetic voices for language {lang!r}")
        gender = self._judge(speaker_id, audio)
        matching = {"female": table.female, "male": table.male}.get(gender or "", ())
        candidates = matching or table.female + table.male
        in_use = Counter(v for (_, other), v in self._cast.items() if other == lang)
        voice = min(candidates, key=lambda v: (in_use[v], candidates.index(v)))
        self._cast[(speaker_id, lang)] = voice
        return voice

    async def cast(self, speaker_id: str, lang: str, audio: Audio) -> str:
        """`voice_for`, with the pitch (30-110 ms of numpy for 3-12 s of speech) estimated
        on a worker thread instead of the event loop that runs every room's 20 ms ticks."""
        if self._gender.get(speaker_id) is None and (speaker_id, lang) not in self._cast:
            pitch = await asyncio.to_thread(estimate_pitch, audio)
            if pitch is not None and self._gender.get(speaker_id) is None:
                self._gender[speaker_id] = "female" if pitch >= FEMALE_FROM_HZ else "male"
        return self.voice_for(speaker_id, lang)

    def gender_of(self, speaker_id: str) -> str | None:
        return self._gender.get(speaker_id)

    def forget(self, speaker_id: str) -> None:
        self._gender.pop(speaker_id, None)
        for key in [k for k in self._cast if k[0] == speaker_id]:
            del self._cast[key]

    def _judge(self, speaker_id: str, audio: Audio | None) -> str | None:
        if self._gender.get(speaker_id) is None and audio is not None:
            pitch = estimate_pitch(audio)
            if pitch is not None:
                self._gender[speaker_id] = "female" if pitch >= FEMALE_FROM_HZ else "male"
        return self._gender.get(speaker_id)
