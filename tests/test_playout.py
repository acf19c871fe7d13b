import numpy as np
import pytest

from media.frames import FRAME_SAMPLES, MIX_RATE, SourceFrame
from media.playout import TranslationPlayout


def tone(seconds: float, freq: float = 220.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * MIX_RATE)) / MIX_RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def level(samples: int, value: float) -> np.ndarray:
    return np.full(samples, value, dtype=np.float32)


def drain(playout: TranslationPlayout, limit: int = 10_000) -> list[SourceFrame]:
    frames: list[SourceFrame] = []
    for _ in range(limit):
        frame = playout.pull()
        if frame is None:
            if len(playout) == 0:
                return frames
            continue
        frames.append(frame)
    raise AssertionError("playout never emptied")


def padded(audio: np.ndarray) -> np.ndarray:
    return np.concatenate((audio, np.zeros(-len(audio) % FRAME_SAMPLES, dtype=np.float32)))


def test_utterances_play_in_key_order_one_at_a_time_whatever_the_feed_order() -> None:
    playout = TranslationPlayout("spa")
    playout.reserve("later", "bob", order_key=2.0)
    playout.reserve("earlier", "alice", order_key=1.0)
    bob, alice = level(1500, 0.2), level(2000, 0.1)
    playout.feed("later", bob)
    playout.finish("later")
    assert playout.pull() is None  # the earlier one keeps its turn
    playout.feed("earlier", alice)
    playout.finish("earlier")

    frames = drain(playout)
    assert [f.origin for f in frames] == ["alice"] * 3 + ["bob"] * 2
    assert all(f.kind == "translation" and f.lang == "spa" for f in frames)
    # Each speaker's audio whole and unsummed, the second starting on a fresh frame.
    played = np.concatenate([f.pcm for f in frames])
    np.testing.assert_array_equal(played, np.concatenate((padded(alice), padded(bob))))


def test_pull_never_blocks_and_always_gives_exactly_one_frame() -> None:
    playout = TranslationPlayout("fra")
    assert playout.pull() is None
    playout.reserve("u", "alice", 0.0)
    playout.feed("u", level(500, 0.3))
    assert playout.pull() is None  # less than a frame, and more may come
    playout.finish("u")
    frame = playout.pull()
    assert frame is not None
    assert frame.pcm.shape == (FRAME_SAMPLES,) and frame.pcm.dtype == np.float32
    np.testing.assert_array_equal(frame.pcm[:500], np.float32(0.3))
    np.testing.assert_array_equal(frame.pcm[500:], 0.0)
    assert playout.pull() is None and len(playout) == 0


def test_an_empty_head_holds_its_turn_for_a_bounded_time_then_plays_late_and_whole() -> None:
    playout = TranslationPlayout("deu", wait_for_late=1.5)
    playout.reserve("slow", "alice", 1.0)
    playout.reserve("fast", "bob", 2.0)
    playout.feed("fast", level(MIX_RATE, 0.2))
    playout.finish("fast")

    silent = 0
    while (frame := playout.pull()) is None:
        silent += 1
    assert silent * FRAME_SAMPLES == 1.5 * MIX_RATE
    assert frame.origin == "bob"

    playout.feed("slow", level(4 * FRAME_SAMPLES, 0.1))
    playout.finish("slow")
    rest = drain(playout)
    assert [f.origin for f in rest] == ["bob"] * 49 + ["alice"] * 4


def test_a_finished_empty_utterance_gives_up_its_turn_at_once() -> None:
    playout = TranslationPlayout("ita")
    playout.reserve("nothing", "alice", 1.0)
    playout.reserve("something", "bob", 2.0)
    playout.feed("something", level(FRAME_SAMPLES, 0.2))
    playout.finish("nothing")
    frame = playout.pull()
    assert frame is not None and frame.origin == "bob"


def test_on_started_fires_once_per_utterance_at_its_first_frame() -> None:
    started: list[str] = []
    playout = TranslationPlayout("spa", on_started=started.append)
    playout.reserve("a", "alice", 1.0)
    playout.reserve("b", "bob", 2.0)
    playout.feed("a", level(2 * FRAME_SAMPLES, 0.1))
    playout.feed("b", level(2 * FRAME_SAMPLES, 0.1))
    assert started == []
    playout.finish("a")
    playout.finish("b")
    playout.pull()
    assert started == ["a"]
    drain(playout)
    assert started == ["a", "b"]


def test_on_ended_fires_once_an_utterance_heard_has_left_the_floor() -> None:
    ended: list[str] = []
    playout = TranslationPlayout("spa", on_ended=ended.append)
    for uid, key in (("whole", 1.0), ("cut", 2.0), ("unheard", 3.0)):
        playout.reserve(uid, "alice", key)
    playout.feed("whole", level(2 * FRAME_SAMPLES, 0.1))
    playout.finish("whole")
    playout.feed("cut", level(5 * FRAME_SAMPLES, 0.1))
    playout.pull()
    assert ended == []  # still being heard
    playout.pull()
    assert ended == ["whole"]
    playout.pull()  # "cut" starts, then is cancelled: its fade-out is its last frame
    playout.cancel("cut")
    playout.pull()
    assert ended == ["whole", "cut"]
    playout.cancel("unheard")
    assert ended == ["whole", "cut"]  # never heard, so never ended


def test_silence_inside_an_utterance_whose_next_piece_is_late_is_counted() -> None:
    underruns: list[None] = []
    playout = TranslationPlayout("spa", on_underrun=lambda: underruns.append(None))
    playout.reserve("u1", "alice", order_key=1.0)
    assert playout.pull() is None  # not started: waiting for a first piece is no underrun
    playout.feed("u1", level(3 * FRAME_SAMPLES, 0.1))
    heard = [playout.pull() for _ in range(5)]  # three frames of audio, then two empty ticks
    assert [f is not None for f in heard] == [True, True, True, False, False]
    assert playout.underruns == len(underruns) == 2
    playout.feed("u1", level(FRAME_SAMPLES, 0.1))
    playout.finish("u1")
    assert playout.pull() is not None
    assert playout.pull() is None
    assert playout.underruns == 2  # a finished utterance that played out is not starved


def test_a_sentence_being_heard_keeps_the_floor_while_its_next_piece_is_late() -> None:
    playout = TranslationPlayout("spa", wait_for_late=1.5, resume_within=4.0)
    playout.reserve("alice's", "alice", 1.0)
    playout.reserve("bob's", "bob", 2.0)
    playout.feed("alice's", level(2 * FRAME_SAMPLES, 0.1))  # her first piece
    playout.feed("bob's", level(3 * FRAME_SAMPLES, 0.2))
    playout.finish("bob's")
    assert [f.origin for f in (playout.pull(), playout.pull()) if f] == ["alice", "alice"]

    silent = 0
    while (frame := playout.pull()) is None and silent < 500:
        silent += 1
        if silent * FRAME_SAMPLES == 3 * MIX_RATE:  # her next piece, 3 s late
            playout.feed("alice's", level(FRAME_SAMPLES, 0.1))
            playout.finish("alice's")
    assert silent * FRAME_SAMPLES == 3 * MIX_RATE
    assert frame is not None and frame.origin == "alice"
    assert [f.origin for f in drain(playout)] == ["bob"] * 3


def test_a_sentence_whose_next_piece_never_comes_gives_up_the_floor_after_a_bound() -> None:
    playout = TranslationPlayout("spa", wait_for_late=1.5, resume_within=4.0)
    playout.reserve("alice's", "alice", 1.0)
    playout.reserve("bob's", "bob", 2.0)
    playout.feed("alice's", level(FRAME_SAMPLES, 0.1))
    playout.feed("bob's", level(FRAME_SAMPLES, 0.2))
    playout.finish("bob's")
    assert (first := playout.pull()) is not None and first.origin == "alice"
    silent = 0
    while (frame := playout.pull()) is None:
        silent += 1
    assert silent * FRAME_SAMPLES == 4 * MIX_RATE
    assert frame.origin == "bob"


def test_below_two_seconds_of_backlog_audio_plays_unchanged() -> None:
    playout = TranslationPlayout("spa")
    audio = tone(1.9)
    playout.reserve("u", "alice", 0.0)
    playout.feed("u", audio)
    playout.finish("u")
    frames = drain(playout)
    assert playout.speed == 1.0
    np.testing.assert_array_equal(np.concatenate([f.pcm for f in frames]), padded(audio))


def test_a_backlog_speeds_playback_up_to_at_most_1_25x_keeping_pitch_without_clicks() -> None:
    playout = TranslationPlayout("spa")
    audio = tone(5.0, freq=220.0, amp=0.5)
    playout.reserve("u", "alice", 0.0)
    playout.feed("u", audio)
    playout.finish("u")

    speeds, frames = [], []
    while (frame := playout.pull()) is not None:
        speeds.append(playout.speed)
        frames.append(frame.pcm)
    assert speeds[0] == pytest.approx(1.25)
    assert max(speeds) <= 1.25 and speeds[-1] == 1.0
    # 5 s of audio, consumed no faster than 1.25x, and faster than real time.
    assert len(audio) / (1.25 * FRAME_SAMPLES) <= len(frames) < 0.95 * len(audio) / FRAME_SAMPLES

    played = np.concatenate(frames[:-1])  # the last frame ends in padding
    spectrum = np.abs(np.fft.rfft(played * np.hanning(len(played))))
    peak_hz = np.argmax(spectrum) * MIX_RATE / len(played)
    assert peak_hz == pytest.approx(220.0, abs=2.0)
    steepest_slope = 2 * np.pi * 220.0 * 0.5 / MIX_RATE
    assert np.max(np.abs(np.diff(played))) < 1.2 * steepest_slope


def test_past_six_seconds_of_waiting_the_oldest_utterances_are_dropped_and_reported() -> None:
    dropped: list[str] = []
    playout = TranslationPlayout("spa", on_dropped=dropped.append)
    for key, (utterance_id, origin) in enumerate([("u1", "a"), ("u2", "b"), ("u3", "c")]):
        playout.reserve(utterance_id, origin, float(key))
        playout.feed(utterance_id, tone(3.5))
        playout.finish(utterance_id)

    frame = playout.pull()
    assert frame is not None and frame.origin == "b"
    assert dropped == ["u1"] and playout.dropped == 1

    playout.reserve("u4", "d", 3.0)
    playout.feed("u4", tone(3.0))  # while u2 is being heard
    playout.finish("u4")
    frame = playout.pull()
    assert frame is not None and frame.origin == "b"
    assert dropped == ["u1", "u3"] and playout.dropped == 2
    assert [f.origin for f in drain(playout)][-1] == "d"


def test_no_translation_waits_longer_than_drop_past_however_much_audio_arrives() -> None:
    frames_per_second = MIX_RATE // FRAME_SAMPLES
    pulls = 0
    fed_at: dict[str, int] = {}
    started_at: dict[str, int] = {}
    dropped: list[str] = []

    def started(uid: str) -> None:
        started_at[uid] = pulls

    playout = TranslationPlayout(
        "spa",
        on_started=started,
        on_dropped=dropped.append,
        drop_past=3.0,
    )
    # A second of translation arrives every 0.2 s of playback: five times too much.
    for key in range(40):
        uid = f"u{key}"
        playout.reserve(uid, "a", float(key))
        playout.feed(uid, tone(1.0))
        playout.finish(uid)
        fed_at[uid] = pulls
        for _ in range(10):
            playout.pull()
            pulls += 1
    while len(playout):
        playout.pull()
        pulls += 1

    assert dropped, "the backlog was never bounded"
    assert set(started_at) | set(dropped) == set(fed_at)
    assert "u39" in started_at and "u39" not in dropped  # the newest is heard
    waits = {uid: started_at[uid] - fed_at[uid] for uid in started_at}
    assert max(waits.values()) <= 3.0 * frames_per_second, waits


def test_discard_origin_forgets_a_leaver_and_fades_out_what_was_being_heard() -> None:
    playout = TranslationPlayout("spa")
    playout.reserve("a1", "alice", 1.0)
    playout.reserve("b1", "bob", 2.0)
    playout.reserve("a2", "alice", 3.0)
    playout.feed("a1", level(MIX_RATE, 0.5))
    playout.feed("b1", level(2 * FRAME_SAMPLES, 0.2))
    playout.feed("a2", level(2 * FRAME_SAMPLES, 0.3))
    for _ in range(3):
        playout.pull()

    playout.discard_origin("alice")
    playout.feed("a2", level(FRAME_SAMPLES, 0.3))  # late TTS output for a leaver is ignored
    fade = playout.pull()
    assert fade is not None and fade.origin == "alice"
    assert fade.pcm[0] == pytest.approx(0.5) and fade.pcm[-1] == pytest.approx(0.0)
    assert np.all(np.diff(fade.pcm) <= 0)
    playout.finish("b1")
    assert [f.origin for f in drain(playout)] == ["bob", "bob"]


def test_cancel_forgets_a_waiting_utterance() -> None:
    playout = TranslationPlayout("spa")
    playout.reserve("gone", "alice", 1.0)
    playout.reserve("kept", "bob", 2.0)
    playout.feed("kept", level(FRAME_SAMPLES, 0.2))
    playout.finish("kept")
    playout.cancel("gone")
    assert [f.origin for f in drain(playout)] == ["bob"]


def test_bad_input_is_refused_clearly() -> None:
    playout = TranslationPlayout("spa")
    playout.reserve("u", "alice", 1.0)
    with pytest.raises(ValueError, match="already reserved"):
        playout.reserve("u", "alice", 2.0)
    with pytest.raises(ValueError, match="mono"):
        playout.feed("u", np.zeros((2, 960), dtype=np.float32))
    playout.feed("never-reserved", level(FRAME_SAMPLES, 0.1))
    assert len(playout) == 1


def test_two_long_translations_that_arrive_together_are_both_heard() -> None:
    playout = TranslationPlayout("spa")
    for key, origin in enumerate(["a", "b"]):
        playout.reserve(origin, origin, float(key))
        playout.feed(origin, tone(5.0))
        playout.finish(origin)
    origins = [frame.origin for frame in drain(playout)]
    assert playout.dropped == 0
    switch = origins.index("b")
    assert set(origins[:switch]) == {"a"} and set(origins[switch:]) == {"b"}


def test_a_lone_long_translation_is_sped_up_not_dropped() -> None:
    dropped: list[str] = []
    playout = TranslationPlayout("spa", on_dropped=dropped.append)
    playout.reserve("long", "a", 0.0)
    playout.feed("long", tone(9.0))
    playout.finish("long")
    frames = drain(playout)
    assert dropped == [] and playout.dropped == 0
    assert len(frames) < 9.0 * MIX_RATE / FRAME_SAMPLES  # sped up
    assert len(frames) >= 9.0 * MIX_RATE / (1.25 * FRAME_SAMPLES)
