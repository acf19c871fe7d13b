"""AcousticTables on simulated rooms (tests/acoustic_room.py), counted by the real VAD.

Three phones around one table (p0, p1, p2, each with its owner) and one remote phone in
another room (r0), with different network delays. Spoken times below are seconds of the
simulation; utterances are mapped back to them by the harness (tests/table_sim.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from media.correlation import Match
from media.echo import UNHEARD_WINDOWS, EchoPath, MicEcho
from media.echo_cancellers import WebRtcCanceller
from media.grouping import CLEAR, LAG_TOLERANCE
from media.inbound import Chunk16k
from media.table import MAX_LAG, AcousticTables, _assign
from media.timeline import FRAME, RATE
from tests.acoustic_room import Signal, table_of
from tests.fixtures.speech import compose
from tests.table_sim import Heard, Link, TableSim

LINKS = {
    "p0": Link(uplink=3, playout=6, stream_offset=10.0),
    "p1": Link(uplink=8, playout=5, stream_offset=200.0),
    "p2": Link(uplink=2, playout=9, stream_offset=33.0),
    "r0": Link(uplink=5, playout=7, stream_offset=7.0),
}


@dataclass(frozen=True)
class Said:
    who: str
    start: float
    end: float


class Script:
    """Sentences placed at chosen times, per talker, as whole 16 kHz signals."""

    def __init__(self, seconds: float) -> None:
        self.length = round(seconds * 16_000)
        self.signals: dict[str, Signal] = {}
        self.said: list[Said] = []

    def say(self, who: str, at: float, text: str, voice: str = "en-us") -> Said:
        speech = compose([at, text], voice=voice, level=0.4)
        signal = self.signals.setdefault(who, np.zeros(self.length, np.float32))
        signal[: len(speech.audio)] += speech.audio[: self.length]
        start, end = speech.voiced[0]
        said = Said(who, start, end)
        self.said.append(said)
        return said


def covering(heard: list[Heard], said: Said, offset: float = 0.0) -> list[Heard]:
    return [h for h in heard if h.start < offset + said.end and h.end > offset + said.start]


def spans(heard: list[Heard]) -> list[tuple[str, float, float]]:
    return [(h.pid, round(h.start, 2), round(h.end, 2)) for h in heard]


def assert_once_from(heard: list[Heard], said: Said, offset: float) -> None:
    found = covering(heard, said, offset)
    assert [h.pid for h in found] == [said.who], spans(found)
    (only,) = found
    assert only.start <= offset + said.start + 0.1
    assert only.end >= offset + said.end - 0.1


@pytest.fixture(scope="module")
def conversation() -> dict[str, object]:
    """One run, phase by phase: warm-up, turns, overlap, a phone leaves, overrides."""
    table, remote = table_of(3), table_of(1, prefix="r", seed=7)
    sim = TableSim([table, remote], links=dict(LINKS))
    results: dict[str, object] = {"sim": sim}

    turns = Script(24.0)
    turns.say("p0", 0.5, "Good morning everyone, let us begin the meeting now.")
    results["turns"] = [
        turns.say("p1", 4.5, "Thank you, I have the numbers for the first quarter."),
        turns.say("p2", 8.5, "We will meet again after the lunch break."),
        turns.say("r0", 12.5, "Sorry, I am calling in from the other office today."),
        turns.say("p0", 16.0, "The quick brown fox jumps over the lazy dog."),
    ]
    results["overlap"] = [
        turns.say("p0", 20.0, "Please write the numbers on the board today."),
        turns.say("p1", 20.1, "I think the budget will be much larger this year."),
    ]
    sim.run(turns.signals, seconds=24.0)
    results["groups_after_turns"] = sim.tables.groups()
    results["duplicates_after_turns"] = sim.tables.stats.duplicates_suppressed
    results["heard_turns"] = list(sim.heard)

    sim.stream("p2").leave("p2", carrying="p2")
    away = Script(14.0)
    away.say("p2", 0.5, "I am out in the corridor now, can you still hear me?")
    results["away"] = [
        away.say("p2", 5.0, "Good, then I will stay out here for a while."),
        away.say("p0", 9.5, "Yes, we can hear you well from the table."),
    ]
    before = len(sim.heard)
    sim.run(away.signals, seconds=14.0)
    results["groups_after_leaving"] = sim.tables.groups()
    results["heard_away"] = sim.heard[before:]

    sim.tables.override("p0", "p1", False)
    results["groups_apart"] = sim.tables.groups()
    apart = Script(5.0)
    results["apart"] = apart.say("p0", 0.5, "Now the two of us are kept apart by hand.")
    before = len(sim.heard)
    sim.run(apart.signals, seconds=5.0)
    results["heard_apart"] = sim.heard[before:]

    sim.tables.override("p0", "p1", None)
    results["groups_cleared"] = sim.tables.groups()
    sim.finish()
    return results


def test_phones_at_one_table_group_and_a_remote_phone_does_not(
    conversation: dict[str, object],
) -> None:
    assert conversation["groups_after_turns"] == [frozenset({"p0", "p1", "p2"})]


def test_each_sentence_survives_once_on_its_talkers_phone(
    conversation: dict[str, object],
) -> None:
    heard = conversation["heard_turns"]
    assert isinstance(heard, list)
    turns = conversation["turns"]
    assert isinstance(turns, list)
    for said in turns:
        assert_once_from(heard, said, 0.0)
    assert conversation["duplicates_after_turns"]


def test_two_talkers_at_once_at_opposite_ends_both_survive(
    conversation: dict[str, object],
) -> None:
    heard = conversation["heard_turns"]
    overlap = conversation["overlap"]
    assert isinstance(heard, list) and isinstance(overlap, list)
    first, second = overlap
    during = covering(heard, first) + [h for h in covering(heard, second)
                                       if h not in covering(heard, first)]
    assert {h.pid for h in during} == {"p0", "p1"}, spans(during)
    for said in overlap:
        # A soft first syllable under the other talker's loud one may be gated: allow
        # a quarter second at the start.
        mine = [h for h in during if h.pid == said.who]
        assert mine[0].start <= said.start + 0.25, spans(during)
        assert mine[-1].end >= said.end - 0.1, spans(during)


def test_a_phone_that_leaves_the_table_is_ungrouped_and_heard_as_remote(
    conversation: dict[str, object],
) -> None:
    assert conversation["groups_after_leaving"] == [frozenset({"p0", "p1"})]
    heard, away = conversation["heard_away"], conversation["away"]
    assert isinstance(heard, list) and isinstance(away, list)
    for said in away:
        assert_once_from(heard, said, 24.0)


def test_a_phone_that_leaves_while_the_table_plays_translations_is_ungrouped() -> None:
    """The table's loudspeakers play all along (as live, where one sentence's translation
    plays while the next is spoken): the phone gone to the corridor hears none of them,
    so what it alone hears is not echo, and counts against it being at the table."""
    sim = TableSim([table_of(3)], links={p: LINKS[p] for p in ("p0", "p1", "p2")})
    warm_up = Script(8.0)
    warm_up.say("p0", 0.5, "Good morning everyone, let us begin the meeting now.")
    warm_up.say("p2", 4.5, "We will meet again after the lunch break.")
    sim.run(warm_up.signals, seconds=8.0)
    assert sim.tables.groups() == [frozenset({"p0", "p1", "p2"})]
    sim.stream("p2").leave("p2", carrying="p2")
    away, played = Script(24.0), Script(24.0)
    for at in (0.5, 6.5, 12.5, 18.5):
        played.say("p0", at, "Buenos días a todos, hoy vamos a hablar del proyecto nuevo.",
                   voice="es")
        played.say("p1", at + 1.0, "Bonjour à tous, la réunion va commencer.", voice="fr")
        away.say("p2", at + 0.5, "I am out in the corridor now, can you still hear me?")
    sim.run(away.signals, played.signals, seconds=24.0)
    assert sim.tables.groups() == [frozenset({"p0", "p1"})]


def test_overrides_work_both_ways(conversation: dict[str, object]) -> None:
    assert conversation["groups_apart"] == []
    heard, said = conversation["heard_apart"], conversation["apart"]
    assert isinstance(heard, list) and isinstance(said, Said)
    # Kept apart by hand, p1's microphone is no longer gated: it hears p0 too.
    assert {h.pid for h in covering(heard, said, 38.0)} == {"p0", "p1"}
    assert conversation["groups_cleared"] == [frozenset({"p0", "p1"})]


@pytest.fixture(scope="module")
def playback() -> dict[str, object]:
    """A table talks, then its phones play translations: alone, then under a talker."""
    sim = TableSim([table_of(3)], links={p: LINKS[p] for p in ("p0", "p1", "p2")})
    talk, sent = Script(34.0), Script(34.0)
    talk.say("p0", 0.5, "Good morning everyone, let us begin the meeting now.")
    talk.say("p1", 4.5, "Thank you, I have the numbers for the first quarter.")
    alone = [
        sent.say("p1", 9.0, "Buenos días a todos, hoy vamos a hablar del proyecto nuevo.",
                 voice="es"),
        sent.say("p2", 14.0, "Bonjour à tous, la réunion va commencer dans cinq minutes.",
                 voice="fr"),
        sent.say("p0", 19.0, "Merci de couper vos téléphones pendant la présentation.",
                 voice="fr"),
    ]
    sent.say("p1", 25.0, "Por favor, apaguen los teléfonos móviles durante la reunión.",
             voice="es")
    over = talk.say("p2", 26.0, "Please write the numbers on the board today.")
    sim.run(talk.signals, sent.signals, seconds=34.0)
    sim.finish()
    return {"sim": sim, "alone": alone, "over": over}


def test_played_translations_never_reach_the_vad(playback: dict[str, object]) -> None:
    sim, alone = playback["sim"], playback["alone"]
    assert isinstance(sim, TableSim) and isinstance(alone, list)
    for played in alone:
        # What a phone plays reaches the others' microphones 0.1-0.4 s later.
        echoes = sim.heard_between(played.start, played.end + 0.5)
        assert echoes == [], (played, spans(echoes))
    assert sim.tables.stats.echo_suppressed_seconds > 5.0
    assert sim.tables.stats.echo_paths >= 4


def test_one_translation_played_by_several_phones_at_once_never_reaches_the_vad() -> None:
    """What a real room does: p1 speaks Spanish-bound English, so both English phones
    (p0 and p2) play the same English translation at the same moment; then the Spanish
    phone plays the translation of what they said."""
    sim = TableSim([table_of(3)], links={p: LINKS[p] for p in ("p0", "p1", "p2")})
    talk, sent = Script(40.0), Script(40.0)
    talk.say("p0", 0.5, "Good morning everyone, let us begin the meeting now.")
    talk.say("p1", 4.5, "Thank you, I have the numbers for the first quarter.")
    played = []
    for at in (9.0, 17.0, 25.0):
        english = "Thank you, I have the numbers for the first quarter of the year."
        played.append(sent.say("p0", at, english))
        sent.say("p2", at, english)
        played.append(sent.say(
            "p1", at + 4.0, "Buenos días a todos, hoy vamos a hablar del proyecto nuevo.",
            voice="es",
        ))
    sim.run(talk.signals, sent.signals, seconds=40.0)
    sim.finish()
    echoes = [spans(sim.heard_between(p.start, p.end + 0.5)) for p in played]
    assert echoes == [[]] * len(played)
    assert sim.tables.groups() == [frozenset({"p0", "p1", "p2"})]


def test_a_talker_over_a_neighbours_loudspeaker_is_still_heard(
    playback: dict[str, object],
) -> None:
    sim, over = playback["sim"], playback["over"]
    assert isinstance(sim, TableSim) and isinstance(over, Said)
    mine = [h for h in covering(sim.heard, over) if h.pid == "p2"]
    assert mine, spans(covering(sim.heard, over))
    # The first syllable may be lost while a canceller settles on a moved reference.
    assert mine[0].start <= over.start + 0.35 and mine[-1].end >= over.end - 0.1


def test_manual_grouping_of_phones_that_never_heard_each_other() -> None:
    tables = AcousticTables()
    for pid in ("a", "b", "c"):
        tables.add(pid)
    assert tables.groups() == []
    tables.override("a", "b", True)
    assert tables.groups() == [frozenset({"a", "b"})]
    tables.override("b", "a", None)
    assert tables.groups() == []
    tables.remove("b")
    with pytest.raises(KeyError):
        tables.override("a", "b", True)


def test_an_unknown_participant_passes_through() -> None:
    from media.inbound import Chunk16k

    tables = AcousticTables()
    chunk = Chunk16k(np.ones(320, np.float32) * 0.1, 0.0, 1.0)
    assert tables.mic("nobody", chunk) == [chunk]


def test_a_stream_whose_clock_jumps_back_reaches_the_vad_once_and_in_order() -> None:
    """Its first chunk came in 1.5 s late, then the rest caught up (a loaded phone), so
    the stream's offset to the server clock jumps back: every sample must still be
    passed on exactly once, in order."""
    from media.inbound import Chunk16k

    tables = AcousticTables()
    tables.add("p0")
    sent = np.arange(320 * 400, dtype=np.float32) / (320 * 400)
    released = []
    for n in range(400):
        late = 1.5 if n < 50 else 0.0
        chunk = Chunk16k(sent[n * 320 : (n + 1) * 320], 100.0 + n * 0.02, 500.0 + n * 0.02 + late)
        released.extend(tables.mic("p0", chunk))
    out = np.concatenate([c.samples for c in released])
    assert len(out) > 320 * 350
    assert np.array_equal(out, sent[: len(out)])


def test_a_copy_heard_at_a_loudspeakers_tracked_lag_stays_its_own() -> None:
    """Two phones play one translation; this window the microphone found p2's copy and an
    early reflection of it, not p0's. Giving p0 the loud copy would move both references."""
    echo = MicEcho(WebRtcCanceller, MAX_LAG)
    for pid, lag in (("p0", -4424), ("p2", -3444)):
        for _ in range(4):
            echo.path(pid).evidence.observe(Match(lag, CLEAR * 3))
    found = [Match(-3444, CLEAR + 0.4), Match(-3156, CLEAR - 2.4)]
    assert dict(_assign(echo, ["p0", "p2"], found)) == {"p0": found[1], "p2": found[0]}

    newcomer = [Match(-4472, CLEAR + 0.5), Match(-3444, CLEAR * 2)]
    assert dict(_assign(echo, ["p2", "p4"], newcomer)) == {"p2": newcomer[1], "p4": newcomer[0]}


def test_two_loudspeakers_heard_at_one_lag_share_its_copy() -> None:
    """Seen live: p1 and p2 reach this microphone 0.5 ms apart, so one copy is found where
    two are, and the second copy found is a reflection 32 ms later. p2's lag was measured
    while it played alone, so it keeps it, and does not jump to the reflection."""
    echo = MicEcho(WebRtcCanceller, MAX_LAG)
    for pid, lag in (("p1", -2704), ("p2", -2712)):
        for _ in range(4):
            echo.path(pid).observe(Match(lag, CLEAR * 3), alone=True)
    found = [Match(-2704, CLEAR + 2.2), Match(-2196, CLEAR + 0.9)]
    assert dict(_assign(echo, ["p1", "p2"], found)) == {
        "p1": found[0], "p2": Match(echo.path("p2").evidence.lag or 0, found[0].clarity)
    }

    before = echo.path("p2").delay
    for pid, one in _assign(echo, ["p1", "p2"], found):
        echo.path(pid).observe(one, sound_heard=True)
    after = echo.path("p2").delay
    assert before is not None and after is not None
    assert abs(after - before) < LAG_TOLERANCE


def test_a_lag_measured_among_copies_is_not_shared() -> None:
    """p2's lag was only ever measured while p1 played the same sound: it may be p1's copy
    taken by mistake, so p2 takes the copy left, which may be its own."""
    echo = MicEcho(WebRtcCanceller, MAX_LAG)
    echo.path("p1").observe(Match(-2704, CLEAR * 3), alone=True)
    for _ in range(4):
        echo.path("p1").observe(Match(-2704, CLEAR * 3))
        echo.path("p2").observe(Match(-2712, CLEAR * 3))
    assert echo.path("p1").measured_alone and not echo.path("p2").measured_alone
    found = [Match(-2704, CLEAR + 2.2), Match(-2196, CLEAR + 0.9)]
    assert dict(_assign(echo, ["p1", "p2"], found)) == {"p1": found[0], "p2": found[1]}

    echo.path("p2").observe(found[1])
    assert not echo.path("p2").measured_alone
    echo.path("p2").observe(found[1], alone=True)
    assert echo.path("p2").measured_alone


def _table_under_a_talker(carried_away: bool) -> tuple[AcousticTables, EchoPath | None]:
    """14 s of one talker heard by all three phones (p2 nearest), and from 3 s on, p0's
    loudspeaker playing into p2's microphone 26 dB under that talker, 300 ms late. With
    `carried_away`, p2 is elsewhere: it hears only its own owner, and none of the table."""
    rng = np.random.default_rng(3)
    tables = AcousticTables()
    for pid in ("p0", "p1", "p2"):
        tables.add(pid)
    length = 14 * RATE
    talking = (np.arange(length) // (RATE // 2)) % 4 != 3  # 1.5 s on, 0.5 s off
    talker = rng.standard_normal(length).astype(np.float32) * 0.1 * talking
    played = rng.standard_normal(length).astype(np.float32) * 0.1
    played[: 3 * RATE] = 0
    late = int(0.3 * RATE)
    mics = {pid: np.roll(talker, 40) * gain for pid, gain in (("p0", 0.3), ("p1", 0.5),
                                                                 ("p2", 1.0))}
    if carried_away:
        mics["p2"] = rng.standard_normal(length).astype(np.float32) * 0.1 * talking
    else:
        mics["p2"] += np.concatenate([np.zeros(late, np.float32), played[:-late]]) * 0.05
    for k in range(length // FRAME):
        now = 1000.0 + k * 0.02
        frame = slice(k * FRAME, (k + 1) * FRAME)
        sent = np.repeat(played[frame], 3)
        tables.played("p0", sent if np.any(sent) else None, at=now)
        for pid, heard in mics.items():
            hiss = rng.standard_normal(FRAME).astype(np.float32) * 1e-3
            tables.mic(pid, Chunk16k(heard[frame] + hiss, k * 0.02, now))
    return tables, tables._people["p2"].echo.paths.get("p0")  # type: ignore[union-attr]


def test_a_loudspeaker_the_tables_talk_masks_is_not_taken_for_one_out_of_earshot() -> None:
    """Seen live: while the table talked in turns, p0's loudspeaker was never heard
    clearly at p2's microphone for 9 s, so p2 took it to be out of earshot; when it next
    played, with its echo path not measured yet, its first second went to the VAD."""
    tables, path = _table_under_a_talker(carried_away=False)
    assert tables.groups() == [frozenset({"p0", "p1", "p2"})]
    assert path is not None and not path.measured  # never heard clearly: masked
    assert path.unheard < UNHEARD_WINDOWS
    # A phone carried away shares nothing with the table: the rule still frees it.
    tables, path = _table_under_a_talker(carried_away=True)
    assert tables.groups() == [frozenset({"p0", "p1"})]
    assert path is not None and path.unheard >= UNHEARD_WINDOWS
