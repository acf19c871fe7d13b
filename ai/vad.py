"""Cut a live 16 kHz stream into utterances with webrtcvad.

A frame counts as speech when webrtcvad says so *and* it stands clear of the
recent noise floor: webrtcvad alone calls steady fan or white noise speech.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from ai.utterance import PIPELINE_RATE, Audio, Stage, Utterance

_SILENCE_DB = -100.0
_QUIETEST_FLOOR_DB = -60.0
"""About a real microphone's own hiss. Digital silence (a muted start, a filled gap) would
otherwise set a floor so low that the hiss, once it starts, would count as speech."""


@dataclass(frozen=True, slots=True)
class VadSettings:
    aggressiveness: int = 2
    """webrtcvad's 0 (keeps most) to 3 (rejects most non-speech)."""
    frame_ms: int = 20
    """10, 20 or 30: what webrtcvad accepts. 20 matches one WebRTC packet."""
    hangover: float = 0.3
    """Silence (s) that ends an utterance.

    It is the largest fixed part of the latency: nothing is translated until it
    has passed. 300 ms sits just above most pauses inside a sentence
    (breaths and hesitations mostly last under a quarter second), so sentences
    are rarely cut, and each extra 100 ms would be felt by every listener.
    A longer pause cuts the sentence into clauses, which still translate well.
    """
    pre_roll: float = 0.3
    """Audio kept from before the first voiced frame, so soft first syllables survive."""
    post_roll: float = 0.1
    """Audio kept after the last voiced frame, for trailing fricatives."""
    max_length: float = 12.0
    """Longer speech is split at its quietest point within the second half."""
    min_voiced: float = 0.15
    """Utterances with less voiced audio than this are clicks and are dropped."""
    floor_window: float = 3.0
    """The noise floor is the quietest frame this far back."""
    floor_margin_db: float = 9.0
    """How far above the noise floor a frame must be to count as speech."""

    def __post_init__(self) -> None:
        if self.frame_ms not in (10, 20, 30):
            raise ValueError(f"frame_ms must be 10, 20 or 30, not {self.frame_ms}")
        if not 0 <= self.aggressiveness <= 3:
            raise ValueError(f"aggressiveness must be 0 to 3, not {self.aggressiveness}")
        if not 0 < self.hangover < self.max_length / 2:
            raise ValueError("hangover must be positive and under half of max_length")
        if not 0 <= self.post_roll <= self.hangover:
            raise ValueError("post_roll must be between 0 and hangover")


@dataclass(slots=True)
class _Frame:
    samples: Audio
    start: float
    energy_db: float
    voiced: bool
    received_at: float


class VadSegmenter:
    """Streaming segmenter for one connection: `push` 16 kHz chunks, get utterances back.

    Not thread-safe; one per stream. Work per 20 ms frame is a few tens of
    microseconds, so it may run on the event loop.
    """

    def __init__(
        self, settings: VadSettings | None = None, source_id: str = "", room: str = ""
    ) -> None:
        self.settings = s = settings or VadSettings()
        self.source_id = source_id
        self.room = room
        self._vad = webrtcvad.Vad(s.aggressiveness)
        self._frame_len = PIPELINE_RATE * s.frame_ms // 1000
        self._frame_s = s.frame_ms / 1000
        self._pending = np.zeros(0, np.float32)
        self._origin: float | None = None
        """Stream time of the first sample since the clock (re)started."""
        self._consumed = 0
        """Samples framed since then; counting samples keeps times free of rounding drift."""
        self._idle: deque[_Frame] = deque(maxlen=round(s.pre_roll / self._frame_s))
        self._speech: list[_Frame] = []
        self._recent_db: deque[float] = deque(maxlen=round(s.floor_window / self._frame_s))

    @property
    def frame_samples(self) -> int:
        return self._frame_len

    def push(
        self, samples: Audio, stream_time: float, received_at: float | None = None
    ) -> list[Utterance]:
        """Feed a chunk starting at `stream_time` (s); returns the utterances it completed.

        `received_at` is the `time.monotonic()` the chunk arrived (now if None);
        it becomes the utterance's `Stage.LAST_VOICED` stamp. A gap in stream
        time of up to `hangover` is heard as silence; a larger gap, or time
        going backwards, ends the current utterance and restarts the clock.
        """
        samples = _validated(samples)
        received = time.monotonic() if received_at is None else received_at
        done: list[Utterance] = []
        expected = self._expected_time()
        if expected is None:
            self._restart_clock(stream_time)
        elif abs(stream_time - expected) > self._frame_s / 2:
            gap = stream_time - expected
            if 0 < gap <= self.settings.hangover:
                silence = np.zeros(round(gap * PIPELINE_RATE), np.float32)
                samples = np.concatenate([silence, samples])
            else:
                done += self.flush()
                self._restart_clock(stream_time)
        self._pending = np.concatenate([self._pending, samples])
        while len(self._pending) >= self._frame_len:
            chunk, self._pending = (
                self._pending[: self._frame_len], self._pending[self._frame_len :]
            )
            assert self._origin is not None
            start = self._origin + self._consumed / PIPELINE_RATE
            self._consumed += self._frame_len
            done += self._advance(self._classify(chunk, start, received))
        return done

    def flush(self) -> list[Utterance]:
        """End of stream: the utterance in progress, if long enough. Resets the segmenter."""
        done = self._finish(len(self._speech))
        self._pending = np.zeros(0, np.float32)
        self._origin = None
        self._idle.clear()
        return done

    def _restart_clock(self, stream_time: float) -> None:
        self._origin, self._consumed = stream_time, 0

    def _expected_time(self) -> float | None:
        if self._origin is None:
            return None
        return self._origin + (self._consumed + len(self._pending)) / PIPELINE_RATE

    def _classify(self, samples: Audio, start: float, received_at: float) -> _Frame:
        power = float(np.mean(np.square(samples, dtype=np.float64)))
        energy_db = max(10 * np.log10(power + 1e-12), _SILENCE_DB)
        self._recent_db.append(energy_db)
        floor = max(min(self._recent_db), _QUIETEST_FLOOR_DB)
        above_floor = energy_db - floor >= self.settings.floor_margin_db
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        voiced = above_floor and self._vad.is_speech(pcm, PIPELINE_RATE)
        return _Frame(samples, start, energy_db, voiced, received_at)

    def _advance(self, frame: _Frame) -> list[Utterance]:
        s = self.settings
        if not self._speech:
            if frame.voiced:
                self._speech = [*self._idle, frame]
                self._idle.clear()
            else:
                self._idle.append(frame)
            return []
        self._speech.append(frame)
        last_voiced = _last_voiced_index(self._speech)
        silent_for = (len(self._speech) - 1 - last_voiced) * self._frame_s
        if silent_for >= s.hangover:
            keep = last_voiced + 1 + round(s.post_roll / self._frame_s)
            return self._finish(keep)
        if len(self._speech) * self._frame_s >= s.max_length:
            return self._split()
        return []

    def _finish(self, keep: int) -> list[Utterance]:
        """Close the utterance after `keep` frames; the rest become pre-roll candidates."""
        frames, rest = self._speech[:keep], self._speech[keep:]
        self._speech = []
        self._idle.extend(rest)
        return self._emit(frames)

    def _split(self) -> list[Utterance]:
        """Cut at the quietest moment of the second half, which is between words."""
        energies = np.array([f.energy_db for f in self._speech])
        smoothed = np.convolve(energies, np.ones(3) / 3, mode="same")
        half = len(self._speech) // 2
        cut = half + int(np.argmin(smoothed[half:-1])) + 1
        frames, self._speech = self._speech[:cut], self._speech[cut:]
        if not any(f.voiced for f in self._speech):
            self._idle.extend(self._speech)
            self._speech = []
        return self._emit(frames)

    def _emit(self, frames: list[_Frame]) -> list[Utterance]:
        voiced = [f for f in frames if f.voiced]
        if not voiced or len(voiced) * self._frame_s < self.settings.min_voiced:
            return []
        utterance = Utterance(
            audio=np.concatenate([f.samples for f in frames]),
            start=frames[0].start,
            end=frames[-1].start + self._frame_s,
            source_id=self.source_id,
            room=self.room,
        )
        utterance.stamp(Stage.LAST_VOICED, voiced[-1].received_at)
        utterance.stamp(Stage.VAD_END)
        return [utterance]


def _last_voiced_index(frames: list[_Frame]) -> int:
    for i in range(len(frames) - 1, -1, -1):
        if frames[i].voiced:
            return i
    return -1


def _validated(samples: Audio) -> Audio:
    array = np.asarray(samples)
    if array.ndim != 1:
        raise ValueError(f"expected mono 16 kHz samples, got shape {array.shape}")
    if array.dtype.kind != "f":
        raise ValueError(f"expected float samples in [-1, 1], got {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError("samples contain NaN or infinity")
    return array.astype(np.float32, copy=False)


def segment(
    audio: Audio, settings: VadSettings | None = None, source_id: str = "", room: str = ""
) -> list[Utterance]:
    """Every utterance in a whole 16 kHz recording, as a live stream would give them."""
    segmenter = VadSegmenter(settings, source_id, room)
    step = segmenter.frame_samples
    found: list[Utterance] = []
    for offset in range(0, len(audio), step):
        found += segmenter.push(audio[offset : offset + step], offset / PIPELINE_RATE)
    return found + segmenter.flush()
