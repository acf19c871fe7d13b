"""Per-language playout of translated speech: one utterance at a time, in spoken order.

TTS for a later utterance can finish before an earlier one's; the room still
hears translations in the order their utterances ended. `TranslationPlayout`
holds each utterance's 48 kHz audio under an order key reserved when the
utterance was dispatched, and the mixer pulls one 20 ms frame per tick.

Policies, all counted in frames pulled (the mixer's clock), never wall time:
- Order: the earliest reserved utterance plays first. If it has no audio yet
  while a later one has, it keeps its turn for up to `wait_for_late` seconds,
  then becomes *late*: it stops blocking others and plays, still whole, as
  soon as it has audio and the floor is free.
- No overlap: an utterance keeps the floor while it has audio; the next starts
  on a fresh frame, so a frame never carries two speakers (the mixer leaves a
  listener's own translations out by frame origin).
- No switching mid-sentence: an utterance being heard whose next piece of speech
  is late keeps the floor, silent, for up to `resume_within` seconds, even while
  a later one has audio. Half a sentence, the other speaker, then the rest would
  be worse than a pause. On a slow two-core host, with two speakers translated
  into two languages at once, Kokoro's next piece came over 4 s late; with 1.5 s
  of patience, the next speaker cut in mid-sentence in about half the runs of
  tests/test_live.py's two-speaker test.
- Backlog: past `speedup_from` seconds of queued audio, playback speeds up
  along a ramp to `max_speed` (reached 2 s later), by cutting whole pitch
  periods found by waveform similarity and crossfading: pitch is kept, no
  clicks. Once the newest utterance would wait more than `drop_past` seconds
  of audio to start, whole utterances ahead of it are dropped oldest first (the
  one being heard last, faded out), with `on_dropped` and `dropped` counted, so
  latency stays bounded. Length alone drops nothing: a long turn is translated
  into long speech, and two people who spoke at once are both heard.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from media.frames import FRAME_SAMPLES, MIX_RATE, Pcm, SourceFrame

_CROSSFADE = MIX_RATE // 100
"""10 ms: long enough to hide a splice, shorter than a syllable."""
_MIN_CUT = MIX_RATE // 200
"""5 ms: the shortest span removed, two periods of a 400 Hz voice."""
_CUT_WHEN_OWED = MIX_RATE * 15 // 1000
"""15 ms: cut only once this much is owed, so the search spans a full period of a low voice."""
_SPEEDUP_RAMP = 2.0
"""Seconds of extra backlog over which speed rises from 1 to its maximum."""
_FADE_IN = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, _CROSSFADE))).astype(np.float32)
_FADE_OUT = (1.0 - _FADE_IN).astype(np.float32)
_CUT_SHORT_RAMP = np.linspace(1.0, 0.0, FRAME_SAMPLES, dtype=np.float32)

_EMPTY: Pcm = np.zeros(0, dtype=np.float32)


@dataclass(slots=True, eq=False)
class _Queued:
    utterance_id: str
    origin: str
    order: tuple[float, int]
    audio: Pcm = field(default_factory=lambda: _EMPTY)
    finished: bool = False
    started: bool = False
    late: bool = False
    waited: int = 0
    """Frames this utterance held its turn, empty, while a later one had audio."""
    stalled: int = 0
    """Frames in a row this utterance, being heard, had no audio for."""

    def playable(self) -> bool:
        return self.audio.size >= FRAME_SAMPLES or (self.finished and self.audio.size > 0)


class TranslationPlayout:
    """A `MixSource` of translated speech into one language. Event-loop only, never blocks."""

    def __init__(
        self,
        lang: str,
        *,
        on_started: Callable[[str], None] | None = None,
        on_dropped: Callable[[str], None] | None = None,
        on_underrun: Callable[[], None] | None = None,
        on_ended: Callable[[str], None] | None = None,
        speedup_from: float = 2.0,
        max_speed: float = 1.25,
        drop_past: float = 6.0,
        wait_for_late: float = 1.5,
        resume_within: float = 8.0,
    ) -> None:
        if not 1.0 <= max_speed <= 2.0:
            raise ValueError("max_speed must be within [1, 2]")
        if not 0 < speedup_from < drop_past:
            raise ValueError("need 0 < speedup_from < drop_past")
        self.lang = lang
        self._on_started = on_started
        self._on_dropped = on_dropped
        self._on_underrun = on_underrun
        self._on_ended = on_ended
        self._speedup_from = speedup_from * MIX_RATE
        self._speedup_ramp = _SPEEDUP_RAMP * MIX_RATE
        self._max_speed = max_speed
        self._drop_past = drop_past * MIX_RATE
        self._wait_frames = round(wait_for_late * MIX_RATE / FRAME_SAMPLES)
        self._resume_frames = round(resume_within * MIX_RATE / FRAME_SAMPLES)
        self._queue: list[_Queued] = []
        self._by_id: dict[str, _Queued] = {}
        self._reservations = itertools.count()
        self._current: _Queued | None = None
        self._owed = 0.0
        self.speed = 1.0
        """The speed the last frame was played at."""
        self.dropped = 0
        """Utterances dropped to keep the backlog bounded."""
        self.underruns = 0
        """Frames of silence inside an utterance being heard: its next audio came late."""
        self._wake: Callable[[], None] = lambda: None

    @property
    def pending(self) -> bool:
        """Something is reserved, queued or playing (a reservation waits on ticks, too)."""
        return bool(self._queue)

    def wake_with(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    @property
    def queued_seconds(self) -> float:
        return self._queued_samples() / MIX_RATE

    def __len__(self) -> int:
        """Utterances reserved and not yet played out, dropped or cancelled."""
        return len(self._queue)

    def __contains__(self, utterance_id: object) -> bool:
        """Whether the utterance is still to be heard (reserved, queued or playing)."""
        return utterance_id in self._by_id

    def reserve(self, utterance_id: str, origin: str, order_key: float) -> None:
        """Holds a place for an utterance, ordered by `order_key` (when it ended)."""
        if utterance_id in self._by_id:
            raise ValueError(f"utterance {utterance_id!r} already reserved in {self.lang}")
        queued = _Queued(utterance_id, origin, (order_key, next(self._reservations)))
        bisect.insort(self._queue, queued, key=lambda q: q.order)
        self._by_id[utterance_id] = queued
        self._wake()

    def feed(self, utterance_id: str, chunk: Pcm) -> None:
        """Appends 48 kHz mono audio. Ignored once the utterance is finished, dropped or gone."""
        pcm = np.asarray(chunk, dtype=np.float32)
        if pcm.ndim != 1:
            raise ValueError(f"expected mono samples (1-D), got shape {pcm.shape}")
        queued = self._by_id.get(utterance_id)
        if queued is None or queued.finished or pcm.size == 0:
            return
        queued.audio = np.concatenate((queued.audio, pcm))

    def finish(self, utterance_id: str) -> None:
        """No more audio will come for this utterance; an empty one gives up its place."""
        queued = self._by_id.get(utterance_id)
        if queued is None:
            return
        queued.finished = True
        if queued.audio.size == 0:
            self._remove(queued)

    def cancel(self, utterance_id: str) -> None:
        """Forgets an utterance; if it is being heard, it fades out over one frame."""
        queued = self._by_id.get(utterance_id)
        if queued is not None:
            self._cut_short(queued)

    def discard_origin(self, origin: str) -> None:
        """Forgets every utterance spoken by `origin` (a participant who left)."""
        for queued in [q for q in self._queue if q.origin == origin]:
            self._cut_short(queued)

    def pull(self) -> SourceFrame | None:
        self._bound_backlog()
        current = self._current
        if current is not None and not current.finished and not current.playable():
            self.underruns += 1
            if self._on_underrun is not None:
                self._on_underrun()
            current.stalled += 1
            if current.stalled <= self._resume_frames:
                return None
            current.late = True  # its turn is over: the rest plays once the floor is free
        queued = current if current is not None and current.playable() else self._next_ready()
        if queued is None:
            return None
        queued.stalled = 0
        self._current = queued
        if not queued.started:
            queued.started = True
            if self._on_started is not None:
                self._on_started(queued.utterance_id)
        pcm = self._take_frame(queued)
        if queued.finished and queued.audio.size == 0:
            self._remove(queued)
        return SourceFrame(pcm=pcm, origin=queued.origin, kind="translation", lang=self.lang)

    def _next_ready(self) -> _Queued | None:
        ready = next((q for q in self._queue if q.playable()), None)
        if ready is None:
            return None
        blocked = False
        for queued in self._queue:
            if queued is ready:
                break
            if queued.late:
                continue
            queued.waited += 1
            if queued.waited > self._wait_frames:
                queued.late = True
            else:
                blocked = True
        return None if blocked else ready

    def _take_frame(self, queued: _Queued) -> Pcm:
        self.speed = self._speed_for(self._queued_samples())
        self._owed = min(self._owed + (self.speed - 1.0) * FRAME_SAMPLES, FRAME_SAMPLES)
        cut = min(int(self._owed), queued.audio.size - FRAME_SAMPLES)
        if self._owed >= _CUT_WHEN_OWED and cut >= _MIN_CUT:
            cut = _best_cut(queued.audio[: FRAME_SAMPLES + cut], cut)
            self._owed -= cut
            pcm = _splice(queued.audio[: FRAME_SAMPLES + cut], cut)
            queued.audio = queued.audio[FRAME_SAMPLES + cut :]
            return pcm
        pcm = np.zeros(FRAME_SAMPLES, dtype=np.float32)
        taken = queued.audio[:FRAME_SAMPLES]
        pcm[: taken.size] = taken
        queued.audio = queued.audio[taken.size :]
        return pcm

    def _speed_for(self, queued_samples: int) -> float:
        over = (queued_samples - self._speedup_from) / self._speedup_ramp
        return 1.0 + (self._max_speed - 1.0) * min(max(over, 0.0), 1.0)

    def _bound_backlog(self) -> None:
        while self._wait_samples() > self._drop_past:
            ahead = self._voiced()[:-1]  # never empty: with one voiced utterance the wait is 0
            victim = next((q for q in ahead if q is not self._current), ahead[0])
            self._cut_short(victim)
            self.dropped += 1
            if self._on_dropped is not None:
                self._on_dropped(victim.utterance_id)

    @property
    def wait_seconds(self) -> float:
        """How long the newest utterance with audio waits to start, at normal speed."""
        return self._wait_samples() / MIX_RATE

    def _wait_samples(self) -> int:
        """Audio queued ahead of the newest utterance with audio. A lone translation has
        nothing ahead, so however long it is, it is only sped up, never dropped."""
        voiced = self._voiced()
        return self._queued_samples() - voiced[-1].audio.size if len(voiced) > 1 else 0

    def _voiced(self) -> list[_Queued]:
        """Utterances still to be heard that have audio, in playing order."""
        return [q for q in self._queue if q.audio.size and q.utterance_id in self._by_id]

    def _cut_short(self, queued: _Queued) -> None:
        """Removes an utterance; one being heard ends with a one-frame fade instead of a click."""
        if queued is self._current and queued.audio.size:
            tail = queued.audio[:FRAME_SAMPLES]
            queued.audio = tail * _CUT_SHORT_RAMP[: tail.size]
            queued.finished = True
            del self._by_id[queued.utterance_id]
        else:
            self._remove(queued)

    def _remove(self, queued: _Queued) -> None:
        if queued in self._queue:
            self._queue.remove(queued)
            if queued.started and self._on_ended is not None:
                self._on_ended(queued.utterance_id)
        if self._by_id.get(queued.utterance_id) is queued:
            del self._by_id[queued.utterance_id]
        if self._current is queued:
            self._current = None

    def _queued_samples(self) -> int:
        return sum(q.audio.size for q in self._queue)


def _best_cut(audio: Pcm, longest: int) -> int:
    """The span in [_MIN_CUT, longest] whose removal joins the most similar waveforms.

    Removing a whole number of pitch periods leaves pitch unchanged; the
    normalized cross-correlation of the frame's start with each candidate
    continuation peaks at such spans.
    """
    head = audio[:_CROSSFADE].astype(np.float64)
    tails = audio[_MIN_CUT : longest + _CROSSFADE].astype(np.float64)
    similarity = np.correlate(tails, head, mode="valid")
    energy = np.concatenate(([0.0], np.cumsum(tails * tails)))
    tail_energy = energy[_CROSSFADE:] - energy[:-_CROSSFADE]
    score = similarity / np.sqrt(tail_energy * float(head @ head) + 1e-12)
    return _MIN_CUT + int(np.argmax(score))


def _splice(audio: Pcm, cut: int) -> Pcm:
    """One frame from `FRAME_SAMPLES + cut` samples: skips `cut` of them behind a crossfade."""
    joined = audio[:_CROSSFADE] * _FADE_OUT + audio[cut : cut + _CROSSFADE] * _FADE_IN
    return np.concatenate((joined, audio[cut + _CROSSFADE : cut + FRAME_SAMPLES])).astype(
        np.float32
    )
