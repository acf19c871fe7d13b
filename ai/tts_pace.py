"""How fast the synthesizer makes speech, measured on its own recent calls.

Kokoro's time grows with the audio it makes: time = fixed + rate x audio seconds
(`bench/tts_first_piece.py` fits 0.20 s + 0.67 x on two quiet cores). The
wall clock of recent calls includes whatever else the cores are doing, so a loaded
machine reads as a slower synthesizer, which is what a plan must allow for.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

__all__ = ["SynthesisPace"]


@dataclass(frozen=True, slots=True)
class _Call:
    audio_seconds: float
    took_seconds: float


class SynthesisPace:
    """Recent synthesis calls -> predicted time to make a piece, and its audio's length.

    One parameter is fitted, the rate: time = rate x (audio seconds + `overhead`). A
    call's fixed cost is taken as a set share of its rate (`overhead`, in seconds of
    audio), because a faster or idler machine shrinks both alike; fitting it too made
    the estimate swing on a few pieces of similar length.

    Written by the synthesis thread, read by the event loop; a lock keeps both views whole.
    """

    def __init__(
        self, window: int = 16, rate: float = 1.0, overhead: float = 0.3,
        seconds_per_char: float = 0.07,
    ) -> None:
        """`rate` and `seconds_per_char` are priors, used until calls are measured; the
        rate's prior is real time, slower than two quiet cores, so the first plans are
        cautious. `overhead` is Kokoro's fixed cost over its rate on two cores (0.20 s /
        0.67, bench/tts_first_piece.py)."""
        self._calls: deque[_Call] = deque(maxlen=window)
        self._prior_rate = rate
        self._overhead = overhead
        self._prior_seconds_per_char = seconds_per_char
        self._spoken: dict[str, tuple[int, float]] = {}  # lang -> (characters, audio seconds)
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def record(self, lang: str, chars: int, audio_seconds: float, took_seconds: float) -> None:
        """Notes a call; a language's first is left out: it loads that language's
        phonemizer, taking up to three times as long (the warm-up makes it)."""
        with self._lock:
            if lang not in self._seen:
                self._seen.add(lang)
                return
            self._calls.append(_Call(audio_seconds, took_seconds))
            total_chars, total_audio = self._spoken.get(lang, (0, 0.0))
            self._spoken[lang] = (total_chars + chars, total_audio + audio_seconds)

    def audio_seconds(self, lang: str, chars: float) -> float:
        """About how long `chars` characters of `lang` last when spoken."""
        return chars * self._seconds_per_char(lang)

    def chars_lasting(self, lang: str, seconds: float) -> float:
        """About how many characters of `lang` take `seconds` to say."""
        return seconds / self._seconds_per_char(lang)

    def _seconds_per_char(self, lang: str) -> float:
        with self._lock:
            spoken_chars, audio = self._spoken.get(lang, (0, 0.0))
        return audio / spoken_chars if spoken_chars else self._prior_seconds_per_char

    def seconds_to_make(self, audio_seconds: float) -> float:
        return self.rate() * (audio_seconds + self._overhead)

    def audio_made_within(self, seconds: float) -> float:
        """The most audio a call can make in `seconds` (0 when its fixed cost alone is more)."""
        return max(0.0, seconds / self.rate() - self._overhead)

    def rate(self) -> float:
        """Seconds of synthesis per second of audio (and overhead), over the recent calls."""
        with self._lock:
            calls = list(self._calls)
        if not calls:
            return self._prior_rate
        took = sum(c.took_seconds for c in calls)
        return took / sum(c.audio_seconds + self._overhead for c in calls)
