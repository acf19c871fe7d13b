"""`media.echo` on its own: how references are lined up, and what is muted when.

The canceller is swapped for one that takes a fixed number of dB out of every frame it
is given, so what `MicEcho` decides can be told apart from what AEC3 does.
"""

from __future__ import annotations

import numpy as np

from media.correlation import Match
from media.echo import (
    ECHO_TAIL,
    LEAD_TOLERANCE,
    ONSET_FRAMES,
    TARGET_LEAD,
    WARM_UP_FRAMES,
    EchoPath,
    Loudspeaker,
    MicEcho,
)
from media.frames import Pcm
from media.grouping import CLEAR, GROUP_AT, Evidence
from media.timeline import FRAME, RATE

MAX_LAG = RATE // 2


def measured(delay: int) -> EchoPath:
    path = EchoPath(Evidence(MAX_LAG))
    move(path, delay)
    return path


def move(path: EchoPath, delay: int) -> None:
    """Evidence that the echo now comes `delay` samples after its reference."""
    for _ in range(int(GROUP_AT) + 2):
        path.evidence.observe(Match(delay - MAX_LAG, CLEAR * 3))
    path.evidence.lag = delay - MAX_LAG


def test_a_reference_moves_only_when_its_echo_drifts_past_the_tolerance() -> None:
    delay = RATE * 330 // 1000
    path = measured(delay)
    first = path.align(nearby=True)
    move(path, delay + LEAD_TOLERANCE - FRAME // 4)
    assert path.align(nearby=True) == first
    move(path, delay + LEAD_TOLERANCE + FRAME)
    assert path.align(nearby=True) == delay + LEAD_TOLERANCE + FRAME - TARGET_LEAD


class Attenuating:
    """Takes `db` out of every microphone frame, whatever the reference."""

    def __init__(self, db: float) -> None:
        self.db = db

    def process(self, mic: Pcm, reference: Pcm) -> Pcm:
        return mic * np.float32(10 ** (-self.db / 20))


def test_what_a_restarted_canceller_leaves_is_muted_at_first_and_later_passes() -> None:
    canceller = Attenuating(10.0)
    echo = MicEcho(lambda: canceller, MAX_LAG)
    speaker = Loudspeaker()
    path = echo.path("neighbour")
    move(path, TARGET_LEAD)
    tone = (0.1 * np.sin(np.arange(FRAME * 3) / 5.0)).astype(np.float32)
    mic = np.full(FRAME, 0.05, np.float32)
    speakers = {"neighbour": speaker}

    def frames(start: int, count: int, playing: bool) -> list[bool]:
        muted = []
        for k in range(count):
            at = start + k * FRAME
            speaker.play(at, tone if playing else None)
            echo.clean(at, mic, speakers, frozenset({"neighbour"}))
            muted.append(echo.muted)
        return muted

    warm_up = frames(0, WARM_UP_FRAMES + 50, playing=True)
    assert all(warm_up[:WARM_UP_FRAMES]) and not any(warm_up[WARM_UP_FRAMES + 10 :])

    after_pause = (WARM_UP_FRAMES + 50) * FRAME + 2 * ECHO_TAIL
    restarted = frames(after_pause, ONSET_FRAMES + 20, playing=True)
    # The reference reaches the canceller TARGET_LEAD after it was played.
    late = TARGET_LEAD // FRAME
    assert all(restarted[late + 1 : ONSET_FRAMES]), restarted
    assert not any(restarted[ONSET_FRAMES + late + 1 :]), restarted


def test_near_speech_over_a_restarted_loudspeaker_is_not_muted() -> None:
    """The cancellers take little out of a frame whose talker is louder than the echo."""
    echo = MicEcho(lambda: Attenuating(3.0), MAX_LAG)
    speaker = Loudspeaker()
    move(echo.path("neighbour"), TARGET_LEAD)
    tone = (0.1 * np.sin(np.arange(FRAME * 3) / 5.0)).astype(np.float32)
    mic = np.full(FRAME, 0.05, np.float32)
    muted = []
    start = (WARM_UP_FRAMES + 10) * FRAME
    for k in range(WARM_UP_FRAMES + 10):
        speaker.play(k * FRAME, tone)
        echo.clean(k * FRAME, mic, {"neighbour": speaker}, frozenset({"neighbour"}))
    for k in range(ONSET_FRAMES):
        at = start + 2 * ECHO_TAIL + k * FRAME
        speaker.play(at, tone)
        echo.clean(at, mic, {"neighbour": speaker}, frozenset({"neighbour"}))
        muted.append(echo.muted)
    assert not any(muted)


def echo_left_over(heard_is_echo: bool) -> list[bool]:
    """Whether each frame of a loudspeaker's 6 s of playback was muted, by a microphone
    whose canceller removes nothing: it hears that loudspeaker's echo, or a talker."""
    echo = MicEcho(lambda: Attenuating(0.0), MAX_LAG)
    speaker = Loudspeaker()
    delay = RATE * 300 // 1000
    move(echo.path("neighbour"), delay)
    rng = np.random.default_rng(7)
    muted = []
    for k in range(300):
        at = k * FRAME
        speaker.play(at, (0.1 * rng.standard_normal(FRAME * 3)).astype(np.float32))
        if heard_is_echo:
            mic = 0.5 * speaker.played.read(at - delay, FRAME)
        else:
            mic = (0.05 * rng.standard_normal(FRAME)).astype(np.float32)
        echo.clean(at, mic, {"neighbour": speaker}, frozenset({"neighbour"}))
        muted.append(echo.muted)
    return muted


def test_echo_the_cancellers_leave_is_muted_and_a_talker_is_not() -> None:
    after_warm_up = slice(WARM_UP_FRAMES + 20, None)
    assert all(echo_left_over(heard_is_echo=True)[after_warm_up])
    assert not any(echo_left_over(heard_is_echo=False)[after_warm_up])


def test_a_copy_lost_among_louder_copies_of_its_sound_is_not_counted_as_out_of_earshot() -> None:
    path = measured(RATE * 200 // 1000)
    faint = Match(0, CLEAR / 2)
    path.observe(faint, sound_heard=True)
    assert path.unheard == 0
    path.observe(faint)
    assert path.unheard == 1


DELAY = RATE * 200 // 1000


class ReverberantPath:
    """A loudspeaker heard by a microphone only through a room's reverberation (300 ms of
    decaying reflections, no direct sound to speak of): what a canceller leaves of such
    an echo is like the reference at no single lag."""

    def __init__(self, db: float) -> None:
        rng = np.random.default_rng(3)
        taps = RATE * 300 // 1000
        self.reflections = (rng.standard_normal(taps) * np.exp(-np.arange(taps) / (RATE * 0.06))
                            * 0.05).astype(np.float32)
        self.canceller = Attenuating(db)
        self.echo = MicEcho(lambda: self.canceller, MAX_LAG)
        self.speaker = Loudspeaker()
        move(self.echo.path("neighbour"), DELAY)
        self._noise = np.random.default_rng(5)
        self.at = 0

    def frames(self, count: int, playing: bool, talker_db: float | None = None) -> list[bool]:
        """`count` frames of playback (or silence), over a talker `talker_db` louder than
        the echo when given; whether each was muted."""
        muted = []
        for _ in range(count):
            sent = 0.1 * self._noise.standard_normal(FRAME * 3) if playing else None
            self.speaker.play(self.at, None if sent is None else sent.astype(np.float32))
            heard = self.speaker.played.read(
                self.at - DELAY - len(self.reflections) + 1, FRAME + len(self.reflections) - 1
            )
            mic = np.convolve(heard, self.reflections, "valid").astype(np.float32)
            mic += (1e-4 * self._noise.standard_normal(FRAME)).astype(np.float32)
            if talker_db is not None:
                echo_rms = 10 ** (self.echo_db / 20)
                talker = self._noise.standard_normal(FRAME) * echo_rms * 10 ** (talker_db / 20)
                mic += talker.astype(np.float32)
            self.echo.clean(self.at, mic, {"neighbour": self.speaker}, frozenset({"neighbour"}))
            muted.append(self.echo.muted)
            self.at += FRAME
        return muted

    @property
    def echo_db(self) -> float:
        """The echo's level at the microphone while the loudspeaker plays."""
        played_db = 10 * np.log10(0.01 / 3)  # noise of 0.1 rms, decimated to 16 kHz
        return played_db + 10 * np.log10(float(np.sum(np.square(self.reflections))))

    def restart(self, db: float) -> None:
        """The loudspeaker falls silent for 2 s; its canceller then takes `db` out."""
        self.frames(100, playing=False)
        self.canceller.db = db


SETTLED = ONSET_FRAMES + TARGET_LEAD // FRAME + 5
"""Frames of a restarted playback after which only the echo return decides."""


def test_echo_a_restarted_canceller_leaves_is_muted_by_the_echo_it_should_carry() -> None:
    """Seen live: a canceller starting again took 3-8 dB out of its echo's reverberant
    tail for over a second, too little for the onset rule and too unlike the reference
    at one lag for the likeness rule. The echo return learned while it cancelled well
    says that all the microphone heard was echo."""
    room = ReverberantPath(30.0)
    room.frames(WARM_UP_FRAMES + 100, playing=True)
    room.restart(5.0)
    restarted = room.frames(SETTLED + 50, playing=True)
    assert all(restarted[SETTLED:]), restarted


def test_a_talker_louder_than_the_echo_is_kept_while_the_canceller_leaves_echo() -> None:
    room = ReverberantPath(30.0)
    room.frames(WARM_UP_FRAMES + 100, playing=True)
    room.restart(5.0)
    over = room.frames(SETTLED + 50, playing=True, talker_db=10.0)
    assert not any(over[SETTLED:]), over


def test_a_talker_the_canceller_takes_out_is_still_weighed_as_heard() -> None:
    """Seen live: a loudspeaker starting over a talker made AEC3's suppressor take the
    talker down 30-40 dB for 0.8 s. The automix weighs the near speech the microphone's
    level shows over the echo it should carry, not what the canceller left."""
    room = ReverberantPath(30.0)
    room.frames(WARM_UP_FRAMES + 100, playing=True)
    room.restart(40.0)
    levels = []
    for _ in range(50):
        room.frames(1, playing=True, talker_db=10.0)
        levels.append(room.echo.near.level_db)
    talker_db = room.echo_db + 10.0
    assert all(level is not None and abs(level - talker_db) < 2.0 for level in levels[10:]), (
        talker_db, levels)
