"""The one place synthesized speech is brought to the rate WebRTC sends (48 kHz)."""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import resample_poly

from ai.utterance import Audio

SPEECH_RATE = 48_000
"""Rate of every chunk a SpeechSynthesizer yields, and of `Utterance.speech`."""


def to_speech_rate(audio: Audio, rate: int) -> Audio:
    """Mono float32 at `rate` (Kokoro's 24 kHz, Seamless' 16 kHz, ...) to 48 kHz.

    Polyphase filtering keeps the band edge clean, which linear interpolation
    would alias into audible hiss at these ratios.
    """
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio, got shape {audio.shape}")
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    if rate == SPEECH_RATE or len(audio) == 0:
        return audio.astype(np.float32, copy=False)
    step = gcd(rate, SPEECH_RATE)
    resampled = resample_poly(audio, SPEECH_RATE // step, rate // step)
    return np.asarray(resampled, dtype=np.float32)
