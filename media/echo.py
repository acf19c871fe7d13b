"""Echo of other phones' loudspeakers, taken out of a microphone before the VAD hears it.

The server knows what it sent to every phone. Correlating a microphone with what another
phone was sent (`media.correlation`) tells whether that loudspeaker is heard and how late
(network both ways, the phone's playout buffer, the air: 0 to 1 s); the `Evidence`
hysteresis of the grouping keeps the link steady. Each microphone has one canceller per
loudspeaker it hears, in cascade, each fed what that loudspeaker played, lined up ahead
of its own echo. A single canceller on the sum of the references (the first design)
had to learn afresh whenever another loudspeaker took over, and let the first second of
each such turn through to the VAD; one translation played by two phones at once (a room
sends it to every listener of a language together) made it worse. A canceller is made
only once its loudspeaker has played, so a quiet table costs nothing. Loudspeakers of
the same table are included before their echo has been measured, at `NOMINAL_DELAY`,
because measuring takes a couple of seconds of playback.

Choice of canceller: WebRTC AEC3 (PyPI `aec-audio-processing`). Measured with
bench/echo_cancellers.py on a simulated 6 x 4 x 3 m room, RT60 0.4 s: a neighbour's
loudspeaker 1.2 m away plays 14 s of Spanish, then the owner talks over it. ERLE after 4
s; "echo VAD": utterances the project's VAD cuts from the echo-only output; "near kept":
near speech over (residual + distortion) in double talk, sample by sample; "DT VAD":
utterances found in double talk / with the talker alone.

    canceller                 ERLE dB  echo VAD  near kept dB  DT VAD  CPU % of a core
    none                          0.0         3           4.6     1/2             0.01
    AEC3 (aec-audio-processing)  35.2         0          -1.6     2/2             1.61
    speexdsp, 128 ms filter      24.6         3          13.2     2/2             0.57
    speexdsp, 256 ms filter      25.7         2          13.2     2/2             0.66

AEC3's "near kept" is low because its high-pass filter and residual suppressor change the
waveform; the VAD still finds both double-talk sentences. With two neighbours playing
(Spanish and French) into one microphone, after 4 s: AEC3 on the summed reference 24.7 dB
ERLE, 0 echo utterances, 1.26 % CPU; one AEC3 per loudspeaker 30.2 dB, 1 utterance,
2.15 %; AEC3 with a 2-channel reference 25.1 dB, 1 utterance, 1.23 %; two speexdsp in
cascade 15.4 dB, 3 utterances, 0.97 %, near speech untouched (-0.1 dB) where AEC3 lowers
it by 7-23 dB while both play. With its reference 0-400 ms early, AEC3 still reaches
19-30 dB in its first 2 s (500 ms: 11 dB), so references need no exact alignment.

Reasons: speexdsp is linear only, and its residual echo is loud enough for the VAD to cut
utterances from it, which is the one thing this module must prevent; it also needs
`apt-get install libspeexdsp-dev swig` and dates from 2018. AEC3's residual suppressor
leaves no utterance. One instance costs about 1.6 % of a core, per loudspeaker heard
(bench/colocated.py prints the table's cost per participant). Its cost is double talk:
near speech is attenuated while a neighbour plays (the VAD still hears it, but levels
across the table become less comparable, see bench/colocated.py). Where its suppressor
misjudges a frame either way, the echo each loudspeaker should leave in it tells
(`media.echo_return`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from media.automix import frame_db
from media.correlation import Match, likeness
from media.echo_cancellers import Canceller
from media.echo_return import (
    ECHO_ALONE_LOSS_DB,
    ENVELOPE_FRAMES,
    EchoReturn,
    NearSpeech,
    echo_envelope,
    sum_db,
)
from media.frames import Pcm
from media.grouping import CLEAR, Evidence
from media.resample import Decimator
from media.timeline import FRAME, RATE, Timeline

MAX_LEAD = RATE * 350 // 1000
TARGET_LEAD = RATE * 100 // 1000
LEAD_TOLERANCE = RATE * 60 // 1000
"""A measured echo is lined up `TARGET_LEAD` behind its reference, give or take
`LEAD_TOLERANCE`. AEC3's own delay estimator finds echoes up to `MAX_LEAD` behind (see
bench/echo_cancellers.py --lead), but only slowly: seen live, a reference 280 ms ahead
let the first 300 ms of each new playback through, and with a lead of 100-200 ms a
second playback was cancelled from its start."""

NOMINAL_DELAY = RATE * 50 // 1000
"""Echo delay assumed for a loudspeaker at the table before its own has been measured:
the shortest a real one takes. AEC3's own delay estimator finds echoes that come up to
about 450 ms later than the reference (bench/echo_cancellers.py --lead), which covers
the usual 100-500 ms of network, playout buffer and air, so a phone's first translation
is cancelled from its first second."""

WARM_UP_FRAMES = 200
SETTLE_FRAMES = 75
"""AEC3 leaves echo through for about its first seconds of playback, for a while after a
reference is moved, and for a loudspeaker not yet measured (lined up at `NOMINAL_DELAY`,
off the others' common lead): seen on the simulated table. Two phones playing one
translation together need longer: 2 s of muting let the onset of the second such
translation through; 4 s did not (tests/test_table.py). So a microphone's frames are
muted during its first 4 s of playback, 1.5 s of playback after a move, and while a
loudspeaker of its table that has not been measured yet plays. Someone speaking over
exactly those seconds loses them; after that, double talk passes."""

UNHEARD_WINDOWS = 16
"""A loudspeaker of the table that played through this many analysis windows in a row
(8 s) without this microphone hearing it, or anything the table hears, is not heard here,
and no longer mutes it while unmeasured: a phone carried away from the table would
otherwise stay muted whenever the table's phones play, until it is ungrouped."""

ONSET_FRAMES = 40
ONSET_RESIDUAL_DB = 6.0
"""A canceller that sat idle lets some of its loudspeaker's echo through when it starts
again (seen live: 0.2-0.7 s, starting 0.1 s after the reference does, only 8-20 dB
down, loud enough for the VAD). For `ONSET_FRAMES` after a reference starts sounding, a
frame the cancellers took `ONSET_RESIDUAL_DB` or more out of is taken to be that
residual and muted. Near speech over it loses less than that unless the echo is about
as loud as the talker."""

LIKENESS_WINDOW = RATE * 256 // 1000
LIKENESS_SLACK = RATE * 40 // 1000
ECHO_LIKENESS = 0.25
"""What the cancellers leave is muted while its last 256 ms correlate this well (at the
measured echo delay, give or take 40 ms) with what a loudspeaker played. On the
simulated table, what leaked through AEC3 scored 0.22-0.33 at its 10th percentile and
0.4-0.68 at its median; a talker over a converged canceller scored 0.16 at the 90th."""

ECHO_TAIL = RATE
"""A loudspeaker's echo is over a second after its reference fell silent (RT60 0.4 s):
its canceller then sits idle, so a table costs only for the loudspeakers playing."""

PLAYED_ACTIVE_DBFS = -50.0
"""Played audio louder than this counts as the loudspeaker sounding."""

ECHO_DOMINATED_DB = 10.0
"""A frame that loses this much to the cancellers was mostly echo (for the metric)."""


class Loudspeaker:
    """What the server sent one phone, at 16 kHz on the server clock."""

    def __init__(self) -> None:
        self.played = Timeline()
        self._decimator = Decimator()
        self._next: int | None = None

    def play(self, start: int, pcm48k: Pcm | None) -> None:
        """One mixer tick (20 ms at 48 kHz, or None for silence) sent at `start`.

        Ticks are contiguous, so a tick lands where the previous one ended unless the
        clock says it is more than a frame off (the mixer skipped ticks, or stalled).
        """
        if self._next is not None and abs(start - self._next) <= FRAME:
            start = self._next
        samples = (np.zeros(FRAME * 3, np.float32) if pcm48k is None
                   else np.asarray(pcm48k, np.float32))
        decimated = self._decimator(samples)
        self.played.write(start, decimated)
        self._next = start + len(decimated)


@dataclass
class EchoPath:
    """One loudspeaker as heard by one microphone: echo delays 0 to 1 s are searched as
    lags of ±0.5 s around 0.5 s."""

    evidence: Evidence
    shift: int | None = None
    """Samples back from a microphone frame at which the reference is read."""
    unheard: int = 0
    """Analysis windows in a row in which it played and this microphone did not hear it
    (see `UNHEARD_WINDOWS`)."""
    measured_alone: bool = False
    """Whether its tracked lag was confirmed in a window where no other loudspeaker this
    microphone hears played anything: a lag no other copy can have been taken for."""
    echo_return: EchoReturn = field(default_factory=EchoReturn)

    @property
    def delay(self) -> int | None:
        """Samples from a sound's place in the played timeline to its echo in the mic's."""
        lag = self.evidence.lag if self.evidence.linked else None
        return None if lag is None else lag + self.evidence.max_lag

    def align(self, nearby: bool) -> int | None:
        """How far back to read the played audio for this microphone's frame, or None
        when the loudspeaker is not heard. Moving a reference sends AEC3 looking for the
        delay afresh, so it moves only when the measured echo drifts more than
        `LEAD_TOLERANCE` from `TARGET_LEAD` behind it."""
        measured = self.delay
        if measured is None:
            if not nearby:
                self.shift = None
            elif self.shift is None:
                self.shift = NOMINAL_DELAY
        elif self.shift is None or abs(measured - self.shift - TARGET_LEAD) > LEAD_TOLERANCE:
            self.shift = max(measured - TARGET_LEAD, 0)
        return self.shift

    @property
    def measured(self) -> bool:
        return self.delay is not None

    def observe(self, found: Match, sound_heard: bool = False, alone: bool = False) -> None:
        """One analysis window in which the loudspeaker played, and where this microphone
        heard it best. `sound_heard`: a copy of it that was not heard clearly is no sign
        that it is out of earshot, because another loudspeaker playing the same sound was
        heard clearly (its copy may be too close to a louder one to tell apart), or because
        the microphone hears what others at its table hear, which may mask it. `alone`: no
        other loudspeaker heard here played anything, so `found` can be no one else's copy."""
        tracked = self.evidence.tracks(found)
        self.evidence.observe(found)
        if self.evidence.lag is None:
            self.measured_alone = False
        elif alone and self.evidence.tracks(found):
            self.measured_alone = True
        elif not tracked and self.evidence.tracks(found):
            self.measured_alone = False  # moved to a copy that may be another's
        if found.clarity >= CLEAR:
            self.unheard = 0
        elif not sound_heard:
            self.unheard += 1


class MicEcho:
    """One microphone's canceller, fed every loudspeaker it hears, each lined up."""

    def __init__(self, make_canceller: Callable[[], Canceller], max_lag: int) -> None:
        self.paths: dict[str, EchoPath] = {}
        self._max_lag = max_lag
        self._make = make_canceller
        self._cancellers: dict[str, Canceller] = {}
        """One per loudspeaker, in cascade: each keeps its own path to this microphone, so
        none has to learn afresh when another loudspeaker starts or stops."""
        self._last_played: dict[str, int] = {}
        """Where each loudspeaker's reference last sounded, on this microphone's timeline."""
        self._settling = WARM_UP_FRAMES
        """Frames of playback still to be muted while the canceller converges."""
        self._onset = 0
        """Frames left in which what the cancellers leave may be a restarted echo."""
        self._left = Timeline(seconds=1.0)
        """What the cancellers left of the last second, before any muting."""
        self.muted = False
        """Whether the last frame cleaned should be muted: it may be residual echo."""
        self.near = NearSpeech()
        """Near speech in the last frame, by the echo it should carry."""
        self._echo_return = EchoReturn()
        """The echo return of all its loudspeakers together (see `_expected_echo`)."""

    def path(self, speaker: str) -> EchoPath:
        return self.paths.setdefault(speaker, EchoPath(Evidence(self._max_lag)))

    def forget(self, speaker: str) -> None:
        self.paths.pop(speaker, None)
        self._cancellers.pop(speaker, None)
        self._last_played.pop(speaker, None)

    def clean(
        self, start: int, frame: Pcm, speakers: dict[str, Loudspeaker], nearby: frozenset[str]
    ) -> Pcm:
        """The frame at `start` with the echo taken out of every loudspeaker that is
        linked or `nearby` (at the same table); the frame itself while there is none."""
        references: dict[str, Pcm] = {}
        unmeasured_playing = False
        for speaker, loudspeaker in speakers.items():
            if speaker not in nearby and speaker not in self.paths:
                continue
            path = self.path(speaker)
            before = path.shift
            shift = path.align(nearby=speaker in nearby)
            if shift is None:
                continue
            if before is not None and shift != before:
                # Moving a reference sends AEC3 looking for the delay afresh.
                self._settling = max(self._settling, SETTLE_FRAMES)
            played = loudspeaker.played.read(start - shift, FRAME)
            if not path.measured:
                # Its echo in this frame may be of anything played up to MAX_LEAD earlier.
                ahead = loudspeaker.played.read(start - shift - MAX_LEAD, MAX_LEAD + FRAME)
                if path.unheard < UNHEARD_WINDOWS:
                    unmeasured_playing |= frame_db(ahead) >= PLAYED_ACTIVE_DBFS
            references[speaker] = played
        if not references:
            self.muted = False
            self.near.reset()
            return frame
        cleaned = frame
        playing = False
        sounding = []
        for speaker, reference in sorted(references.items()):
            prior = self._last_played.get(speaker)
            if frame_db(reference) >= PLAYED_ACTIVE_DBFS:
                playing = True
                self._last_played[speaker] = start
            last = self._last_played.get(speaker)
            if last is None or start - last > ECHO_TAIL:
                continue  # nothing of it can be in this frame: leave the frame alone
            if last == start and (prior is None or start - prior > ECHO_TAIL):
                self._onset = ONSET_FRAMES
            canceller = self._cancellers.get(speaker)
            if canceller is None:
                canceller = self._cancellers[speaker] = self._make()
            cleaned = canceller.process(cleaned, reference)
            sounding.append(speaker)
        self._left.write(start, cleaned)
        heard_db, left_db = frame_db(frame), frame_db(cleaned)
        residual = self._onset > 0 and heard_db - left_db >= ONSET_RESIDUAL_DB
        self._onset = max(self._onset - 1, 0)
        expected_db = self._expected_echo(start, heard_db, left_db, sounding, speakers)
        self.near.update(heard_db, expected_db, left_db)
        residual = residual or (self.near.echo_left and left_db >= PLAYED_ACTIVE_DBFS)
        residual = residual or self._echo_left(start, cleaned, speakers)
        self.muted = unmeasured_playing or residual or (playing and self._settling > 0)
        if playing and self._settling > 0:
            self._settling -= 1
        return cleaned

    def _expected_echo(
        self, start: int, heard_db: float, left_db: float, sounding: list[str],
        speakers: dict[str, Loudspeaker],
    ) -> float | None:
        """The level (dB) of the echo the frame at `start` (heard at `heard_db`, `left_db`
        after the cancellers) should carry from the loudspeakers `sounding` in it, or
        None while that is unknown. Frames the cancellers took most of out measure the
        echo returns: each loudspeaker's where it sounds alone, and that of them all
        together, for loudspeakers that never sound alone here (two phones of one
        language play every translation together)."""
        envelopes = {}
        for speaker in sounding:
            delay = self.paths[speaker].delay
            if delay is None:
                return None
            since = start - delay - (ENVELOPE_FRAMES - 1) * FRAME
            played = speakers[speaker].played.read(since, ENVELOPE_FRAMES * FRAME)
            envelopes[speaker] = echo_envelope(played)
        if not envelopes:
            return None
        together = sum_db(envelopes.values())
        if heard_db - left_db >= ECHO_ALONE_LOSS_DB and together >= PLAYED_ACTIVE_DBFS:
            self._echo_return.learn(heard_db, together)
            if len(envelopes) == 1:
                (speaker,) = envelopes
                self.paths[speaker].echo_return.learn(heard_db, together)
        echoes = []
        for speaker, envelope in envelopes.items():
            echo_return = self.paths[speaker].echo_return.db
            if echo_return is None:
                combined = self._echo_return.db
                return None if combined is None else together + combined
            echoes.append(envelope + echo_return)
        return sum_db(echoes)

    def _echo_left(self, start: int, cleaned: Pcm, speakers: dict[str, Loudspeaker]) -> bool:
        """Whether what the cancellers left of the last `LIKENESS_WINDOW` is still mostly
        a measured loudspeaker's echo (AEC3 lets some through while it reconverges, and
        when two loudspeakers that play different sounds start together)."""
        if frame_db(cleaned) < PLAYED_ACTIVE_DBFS:
            return False
        end = start + FRAME
        left = self._left.read(end - LIKENESS_WINDOW, LIKENESS_WINDOW)
        for speaker, last in self._last_played.items():
            path = self.paths.get(speaker)
            loudspeaker = speakers.get(speaker)
            if path is None or path.delay is None or loudspeaker is None:
                continue
            if start - last > ECHO_TAIL:
                continue
            since = end - LIKENESS_WINDOW - path.delay - LIKENESS_SLACK
            played = loudspeaker.played.read(since, LIKENESS_WINDOW + 2 * LIKENESS_SLACK)
            if likeness(left, played) >= ECHO_LIKENESS:
                return True
        return False


def echo_dominated(before: Pcm, after: Pcm) -> bool:
    return frame_db(before) - frame_db(after) >= ECHO_DOMINATED_DB
