"""The room mixer and its parts: sums, limiter, minus-self, shared encodes, buffers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import av
import numpy as np
import pytest

from media.frames import FRAME_SAMPLES, MIX_RATE, Pcm, SourceFrame
from media.inbound import InboundAudio
from media.jitter import JitterBuffer
from media.limiter import CEILING, Limiter
from media.mix_policy import DEFAULT_ORIGINAL, MixSettings, translated_mix
from media.mixer import Listener, RoomMixer
from media.opus import OpusEncoder, silence_packet
from media.outbound import ListenerTrack
from media.playout import TranslationPlayout
from media.resample import Decimator


class FrameSource:
    """Plays given frames, one per tick, then is silent (input for the mixer)."""

    def __init__(self, frames: Sequence[SourceFrame | None]) -> None:
        self._frames = list(frames)

    def pull(self) -> SourceFrame | None:
        return self._frames.pop(0) if self._frames else None


class RecordingEncoder(OpusEncoder):
    """The real encoder, also keeping what it was given (to check the mix itself)."""

    calls: list[Pcm]

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def encode(self, pcm: Pcm) -> bytes:
        self.calls.append(pcm.copy())
        return super().encode(pcm)


def tone(freq: float, level: float, ticks: int = 1) -> Pcm:
    t = np.arange(FRAME_SAMPLES * ticks) / MIX_RATE
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def voice(origin: str, lang: str, pcm: Pcm) -> SourceFrame:
    return SourceFrame(pcm, origin, "voice", lang)


def drain(listener: Listener) -> list[av.Packet]:
    packets = []
    queue = listener.track._queue
    while not queue.empty():
        packet = queue.get_nowait()
        assert packet is not None
        packets.append(packet)
    return packets


def decode(packets: Sequence[av.Packet]) -> np.ndarray:
    decoder = av.CodecContext.create("opus", "r")
    decoder.sample_rate = MIX_RATE
    out = []
    for packet in packets:
        for frame in decoder.decode(av.Packet(bytes(packet))):
            out.append(frame.to_ndarray()[0])
    return np.concatenate(out)


@pytest.fixture
def encoders() -> list[RecordingEncoder]:
    return []


@pytest.fixture
def mixer(encoders: list[RecordingEncoder]) -> RoomMixer:
    def make() -> RecordingEncoder:
        encoder = RecordingEncoder()
        encoders.append(encoder)
        return encoder

    return RoomMixer(encoder_factory=make)


def room(mixer: RoomMixer, *people: tuple[str, str]) -> dict[str, Listener]:
    return {pid: mixer.add_listener(Listener(pid, lang)) for pid, lang in people}


async def run(
    mixer: RoomMixer, people: dict[str, Listener], ticks: int
) -> dict[str, list[av.Packet]]:
    """Every packet each listener got over `ticks` ticks (drained each tick, as a sender would)."""
    got: dict[str, list[av.Packet]] = {pid: [] for pid in people}
    for _ in range(ticks):
        await mixer.tick()
        for pid, listener in people.items():
            got[pid] += drain(listener)
    return got


def two_english_voices(mixer: RoomMixer) -> tuple[np.ndarray, np.ndarray]:
    """Sources "a" and "b" each speak one frame of a tone; returns the two frames."""
    a, b = tone(440, 0.2), tone(660, 0.3)
    mixer.add_source("a", FrameSource([voice("a", "eng", a)]))
    mixer.add_source("b", FrameSource([voice("b", "eng", b)]))
    return a, b


async def test_same_language_voices_are_summed_sample_accurately_in_one_tick(
    mixer: RoomMixer, encoders: list[RecordingEncoder]
) -> None:
    a, b = two_english_voices(mixer)
    room(mixer, ("c", "eng"))
    await mixer.tick()
    (encoder,) = encoders
    np.testing.assert_allclose(encoder.calls[0], a + b, atol=1e-6)


async def test_listener_never_hears_self_and_only_their_language(
    mixer: RoomMixer, encoders: list[RecordingEncoder]
) -> None:
    speech = tone(300, 0.4, ticks=10)
    frames = [
        voice("a", "eng", speech[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(10)
    ]
    mixer.add_source("a", FrameSource(frames))
    people = room(mixer, ("a", "eng"), ("b", "spa"), ("c", "eng"))
    heard = {pid: decode(packets) for pid, packets in (await run(mixer, people, 10)).items()}
    assert np.max(np.abs(heard["a"])) < 1e-3  # Opus silence decodes to near-zero
    assert np.max(np.abs(heard["b"])) < 1e-3
    assert np.sqrt(np.mean(heard["c"] ** 2)) > 0.2  # the 0.4 sine (RMS 0.28) came through
    assert len(encoders) == 1


async def test_silent_listeners_of_one_language_share_one_encode(
    mixer: RoomMixer, encoders: list[RecordingEncoder]
) -> None:
    speech = tone(200, 0.3, ticks=5)
    mixer.add_source(
        "s",
        FrameSource(
            [voice("s", "eng", speech[i * FRAME_SAMPLES :][:FRAME_SAMPLES]) for i in range(5)]
        ),
    )
    people = room(mixer, ("s", "eng"), *((f"l{i}", "eng") for i in range(20)))
    got = await run(mixer, people, 5)
    assert len(encoders) == 1
    assert len(encoders[0].calls) == 5  # one encode per tick for 20 listeners
    assert mixer.stats.encode_streams == 1 and mixer.stats.listeners == 21
    payloads = {pid: [bytes(p) for p in packets] for pid, packets in got.items()}
    shared = payloads["l0"]
    assert all(payloads[f"l{i}"] == shared for i in range(20))
    assert payloads["s"] != shared  # the speaker gets silence, not their own voice


async def test_taps_see_each_listeners_encoded_mix_and_silence(
    mixer: RoomMixer, encoders: list[RecordingEncoder]
) -> None:
    speech = tone(300, 0.4, ticks=2)
    mixer.add_source("a", FrameSource(
        [voice("a", "eng", speech[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES]) for i in range(2)]
    ))
    people = room(mixer, ("a", "eng"), ("b", "eng"), ("c", "spa"))
    seen: list[tuple[str, Pcm | None]] = []
    mixer.add_tap(lambda pid, pcm, due: seen.append((pid, pcm)))
    await run(mixer, people, 3)
    by_tick = [dict(seen[i : i + 3]) for i in range(0, 9, 3)]
    assert by_tick[0]["a"] is None and by_tick[0]["c"] is None  # silence: nothing sent
    first = by_tick[0]["b"]
    assert first is not None
    np.testing.assert_array_equal(first, encoders[0].calls[0])  # exactly what was encoded
    assert by_tick[2] == {"a": None, "b": None, "c": None}


async def test_a_failing_tap_is_removed_and_mixing_goes_on(mixer: RoomMixer) -> None:
    people = room(mixer, ("a", "eng"))
    calls = []

    def broken(pid: str, pcm: Pcm | None, due: float) -> None:
        calls.append(pid)
        raise RuntimeError("boom")

    mixer.add_tap(broken)
    got = await run(mixer, people, 2)
    assert calls == ["a"] and len(got["a"]) == 2


async def test_a_speaking_listener_gets_their_own_minus_self_mix(
    mixer: RoomMixer, encoders: list[RecordingEncoder]
) -> None:
    a, b = two_english_voices(mixer)
    room(mixer, ("a", "eng"), ("b", "eng"), ("c", "eng"), ("d", "eng"))
    await mixer.tick()
    mixes = sorted((encoder.calls[0] for encoder in encoders), key=lambda pcm: float(np.std(pcm)))
    assert len(mixes) == 3  # a hears b, b hears a, c and d share a + b
    np.testing.assert_allclose(mixes[0], a, atol=1e-6)
    np.testing.assert_allclose(mixes[1], b, atol=1e-6)
    np.testing.assert_allclose(mixes[2], a + b, atol=1e-6)


async def test_loud_voices_are_limited_not_clipped(
    mixer: RoomMixer, encoders: list[RecordingEncoder]
) -> None:
    loud = tone(300, 0.9, ticks=3)
    for key in ("a", "b", "c"):
        chunks = [voice(key, "eng", loud[i * FRAME_SAMPLES :][:FRAME_SAMPLES]) for i in range(3)]
        mixer.add_source(key, FrameSource(chunks))
    room(mixer, ("d", "eng"))
    for _ in range(3):
        await mixer.tick()
    for mix in encoders[0].calls:
        assert np.max(np.abs(mix)) <= CEILING + 1e-6
        assert np.max(np.abs(mix)) > 0.5 * CEILING


def test_limiter_passes_quiet_audio_and_recovers_without_steps() -> None:
    limiter = Limiter()
    quiet = tone(440, 0.5)
    assert limiter(quiet) is quiet
    limited = limiter(tone(440, 3.0))
    assert np.max(np.abs(limited)) <= CEILING + 1e-6
    gains = []
    for _ in range(30):
        out = limiter(quiet)
        assert np.max(np.abs(out)) <= 0.5 + 1e-6
        gains.append(limiter.gain)
    assert np.all(np.diff(gains) >= 0)
    assert gains[-1] == 1.0
    assert np.max(np.diff(gains)) <= limiter.release + 1e-9


def listener_at(
    lang: str, table: Sequence[str] = (), original: float = DEFAULT_ORIGINAL
) -> Listener:
    return Listener("me", lang, MixSettings(original=original, table=frozenset(table)))


def translation(origin: str, lang: str) -> SourceFrame:
    return SourceFrame(tone(220, 0.4), origin, "translation", lang)


def test_translated_mix_never_plays_yourself_and_only_translations_into_your_language() -> None:
    me = listener_at("spa")
    assert translated_mix(me, voice("me", "eng", tone(440, 0.4)), []) == 0.0
    assert translated_mix(me, translation("me", "spa"), []) == 0.0
    assert translated_mix(me, translation("a", "spa"), []) == 1.0
    assert translated_mix(me, translation("a", "fra"), []) == 0.0
    assert translated_mix(me, voice("a", "spa", tone(440, 0.4)), []) == 1.0


def test_translated_mix_ducks_other_languages_under_a_translation_to_your_balance() -> None:
    me = listener_at("spa", original=0.25)
    english = voice("a", "eng", tone(440, 0.4))
    assert translated_mix(me, english, [english]) == pytest.approx(0.5)  # sqrt: none playing
    assert translated_mix(me, english, [english, translation("a", "spa")]) == 0.25
    assert translated_mix(me, english, [english, translation("a", "fra")]) == pytest.approx(0.5)
    assert translated_mix(listener_at("spa"), english, [translation("b", "spa")]) == (
        DEFAULT_ORIGINAL
    )


def test_translated_mix_leaves_out_table_mates_voices_but_not_their_translations() -> None:
    me = listener_at("spa", table=["a"])
    for lang in ("eng", "spa"):
        assert translated_mix(me, voice("a", lang, tone(440, 0.4)), []) == 0.0
    assert translated_mix(me, translation("a", "spa"), []) == 1.0
    assert translated_mix(me, voice("remote", "spa", tone(440, 0.4)), []) == 1.0
    assert translated_mix(me, voice("remote", "eng", tone(440, 0.4)), []) > 0.0


async def test_translated_mix_in_a_mixer_one_encode_per_distinct_mix(
    mixer: RoomMixer, encoders: list[RecordingEncoder]
) -> None:
    original, spoken = tone(440, 0.4), tone(220, 0.4)
    mixer.add_source("a", FrameSource([voice("a", "eng", original)] * 2))
    mixer.add_source(
        "translation:spa", FrameSource([SourceFrame(spoken, "a", "translation", "spa")] * 2)
    )
    mixer.policy = translated_mix
    mixer.add_listener(Listener("a", "eng"))
    at_table = [Listener(pid, "spa", MixSettings(table=frozenset({"a"}))) for pid in ("b", "c")]
    for listener in [*at_table, Listener("remote", "spa")]:
        mixer.add_listener(listener)
    await mixer.tick()
    # a hears nothing; b and c share one mix and one encode; the remote listener has their own.
    table_mix, remote_mix = encoders
    np.testing.assert_allclose(table_mix.calls[0], spoken, atol=1e-6)
    np.testing.assert_allclose(
        remote_mix.calls[0], spoken + DEFAULT_ORIGINAL * original, atol=1e-6
    )
    mixer.remove_source("translation:spa")
    assert "translation:spa" not in mixer.sources


async def test_tracks_get_monotonic_timestamps_from_their_first_tick(mixer: RoomMixer) -> None:
    first = mixer.add_listener(Listener("a", "eng"))
    await mixer.tick()
    late = mixer.add_listener(Listener("b", "eng"))
    await mixer.tick()
    await mixer.tick()
    assert [p.pts for p in drain(first)] == [0, 960, 1920]
    assert [p.pts for p in drain(late)] == [0, 960]


async def test_a_track_nobody_reads_keeps_only_the_newest_packets(mixer: RoomMixer) -> None:
    listener = mixer.add_listener(Listener("a", "eng"))
    for _ in range(8):
        await mixer.tick()
    assert [p.pts for p in drain(listener)] == [2880, 3840, 4800, 5760, 6720]
    assert listener.track.dropped == 3


async def test_encoder_persists_over_a_short_pause(
    mixer: RoomMixer, encoders: list[RecordingEncoder]
) -> None:
    frames: list[SourceFrame | None] = [voice("a", "eng", tone(300, 0.3)), None, None]
    frames.append(voice("a", "eng", tone(300, 0.3)))
    mixer.add_source("a", FrameSource(frames))
    room(mixer, ("b", "eng"))
    for _ in range(4):
        await mixer.tick()
    assert len(encoders) == 1 and len(encoders[0].calls) == 2


async def test_removed_listener_track_ends(mixer: RoomMixer) -> None:
    listener = mixer.add_listener(Listener("a", "eng"))
    mixer.remove_listener("a")
    assert listener.track.readyState == "ended"
    with pytest.raises(ValueError):
        mixer.add_source("x", FrameSource([]))
        mixer.add_source("x", FrameSource([]))


async def test_running_mixer_feeds_tracks_until_stopped(mixer: RoomMixer) -> None:
    listener = mixer.add_listener(Listener("a", "eng"))
    mixer.start()
    packets = [await listener.track.recv() for _ in range(3)]
    await mixer.stop()
    assert [p.pts for p in packets] == [0, 960, 1920]
    assert mixer.listeners == []
    assert listener.track.readyState == "ended"


def test_jitter_buffer_prefills_rechunks_and_drops_oldest() -> None:
    buffer = JitterBuffer(prefill=2, capacity=3, trim_window=1000)
    buffer.push(np.full(FRAME_SAMPLES // 2, 0.1, np.float32))
    assert buffer.pop() is None  # half a frame: nothing yet
    buffer.push(np.full(FRAME_SAMPLES // 2 + FRAME_SAMPLES, 0.2, np.float32))
    assert buffer.depth == 2
    first = buffer.pop()
    assert first is not None and first[0] == np.float32(0.1) and first[-1] == np.float32(0.2)
    for level in (0.3, 0.4, 0.5):
        buffer.push(np.full(FRAME_SAMPLES, level, np.float32))
    assert buffer.dropped == 1  # the 0.2 frame made room
    assert [float(f[0]) for f in (buffer.pop(), buffer.pop(), buffer.pop()) if f is not None] == [
        pytest.approx(0.3),
        pytest.approx(0.4),
        pytest.approx(0.5),
    ]
    assert buffer.pop() is None and buffer.underruns == 1


def test_jitter_buffer_trims_standing_latency() -> None:
    buffer = JitterBuffer(prefill=2, capacity=8, trim_window=5)
    for _ in range(5):
        buffer.push(np.zeros(FRAME_SAMPLES, np.float32))
    for _ in range(5):  # one arrives per pop: the depth stands at 5
        buffer.push(np.zeros(FRAME_SAMPLES, np.float32))
        buffer.pop()
    assert buffer.trimmed == 1 and buffer.depth == 4


def test_decimator_keeps_speech_band_and_rejects_aliases() -> None:
    decimator = Decimator()
    t = np.arange(MIX_RATE) / MIX_RATE
    low = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    out = np.concatenate([decimator(low[i : i + 700]) for i in range(0, MIX_RATE, 700)])
    assert len(out) == 16_000
    assert np.sqrt(np.mean(out[200:] ** 2)) == pytest.approx(np.sqrt(0.5), rel=0.01)
    high = np.sin(2 * np.pi * 12_000 * t).astype(np.float32)
    assert np.max(np.abs(Decimator()(high)[100:])) < 1e-3


async def test_inbound_audio_gates_levels_and_feeds_bounded_16k_queues() -> None:
    inbound = InboundAudio("a", "eng")
    queue = inbound.subscribe_16k(maxsize=3)
    quiet = np.zeros(FRAME_SAMPLES, np.float32)
    loud = tone(300, 0.5)
    for i, pcm in enumerate([loud, loud, *[quiet] * 20]):
        inbound.receive(pcm, i * 0.02, 100.0 + i)
    assert queue.qsize() == 3 and inbound.dropped_16k == 19
    newest = [queue.get_nowait() for _ in range(3)]
    assert [c.time for c in newest] == pytest.approx([0.38, 0.40, 0.42])
    assert all(len(c.samples) == FRAME_SAMPLES // 3 for c in newest)
    assert inbound.take_level() > 0.8 and inbound.take_level() == 0.0
    pulled = [inbound.pull() for _ in range(22)]
    voiced = [f for f in pulled if f is not None]
    # The capacity dropped the oldest frames; what plays ends with the gate's hold.
    assert all(f.origin == "a" and f.kind == "voice" and f.lang == "eng" for f in voiced)
    assert pulled[-1] is None
    inbound.unsubscribe(queue)
    inbound.receive(loud, 1.0, 200.0)
    assert queue.empty()


async def test_16k_queue_is_a_real_asyncio_queue_for_consumers() -> None:
    inbound = InboundAudio("a", "eng")
    queue = inbound.subscribe_16k()
    waiter = asyncio.create_task(queue.get())
    inbound.receive(tone(300, 0.5), 0.0, 1.0)
    chunk = await waiter
    assert chunk.samples.dtype == np.float32 and chunk.received == 1.0


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


async def test_a_room_with_nobody_to_hear_sleeps_at_once(mixer: RoomMixer) -> None:
    mixer.start()
    await eventually(lambda: mixer.sleeping)
    assert mixer.stats.ticks == 0
    listener = mixer.add_listener(Listener("a", "eng"))
    await listener.track.recv()  # a listener wakes it
    assert mixer.stats.ticks >= 1
    await mixer.stop()


async def test_a_silent_room_stops_ticking_until_someone_speaks(mixer: RoomMixer) -> None:
    microphone = InboundAudio("a", "eng")
    mixer.add_source("a", microphone)
    listener = mixer.add_listener(Listener("b", "eng"))
    mixer.start()
    await eventually(lambda: mixer.sleeping)
    ticks = mixer.stats.ticks
    assert ticks >= 150  # three quiet seconds first
    for _ in range(20):  # a silent microphone does not wake it
        microphone.receive(np.zeros(FRAME_SAMPLES, np.float32), 0.0, 0.0)
    await asyncio.sleep(0.1)
    assert mixer.sleeping and mixer.stats.ticks == ticks
    drain(listener)

    for _ in range(3):
        microphone.receive(tone(440, 0.3), 0.0, 0.0)
    silence = silence_packet()
    async with asyncio.timeout(10):
        while bytes(await listener.track.recv()) == silence:
            pass
    assert mixer.stats.sleeps == 1
    # The stale silence was not kept in front of the speech: it plays with the usual delay.
    assert microphone.jitter.resynced == 1 and microphone.jitter.depth <= 2
    await mixer.stop()


class StampedTrack(ListenerTrack):
    """A listener's track that keeps every packet's media time (in samples at 48 kHz)."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[int] = []

    def push(self, payload: bytes, pts: int) -> None:
        self.stamps.append(pts)
        super().push(payload, pts)


async def test_taps_get_each_ticks_due_time_which_its_media_time_follows(
    mixer: RoomMixer,
) -> None:
    """A phone plays each packet at its media time, so the echo reference a tap keeps
    must sit at the tick's due time, one grid with the media time, even when a tick ran
    late (a blocked loop) and after the room slept."""
    microphone = InboundAudio("a", "eng")
    mixer.add_source("a", microphone)
    track = StampedTrack()
    mixer.add_listener(Listener("b", "eng", track=track))
    dues: list[float] = []

    def tap(pid: str, pcm: Pcm | None, due: float) -> None:
        dues.append(due)
        if len(dues) == 10:
            time.sleep(0.08)  # the loop is blocked: the next ticks run late, in a burst

    mixer.add_tap(tap)
    mixer.start()
    await eventually(lambda: mixer.sleeping)
    slept_after = len(dues)
    await asyncio.sleep(0.2)
    for _ in range(3):
        microphone.receive(tone(440, 0.3), 0.0, 0.0)
    await eventually(lambda: len(dues) > slept_after + 5)
    await mixer.stop()

    media_times = np.array(track.stamps[: len(dues)]) / MIX_RATE
    np.testing.assert_allclose(np.array(dues) - dues[0], media_times, atol=1e-6)
    assert media_times[slept_after] - media_times[slept_after - 1] >= 0.2  # it slept


async def test_a_reserved_translation_keeps_the_room_awake(mixer: RoomMixer) -> None:
    playout = TranslationPlayout("eng")
    mixer.add_source("translation:eng", playout)
    mixer.add_listener(Listener("b", "eng"))
    playout.reserve("u1", "a", 0.0)
    assert playout.pending
    for _ in range(200):
        await mixer.tick()
    assert not mixer._may_sleep()
    playout.cancel("u1")
    assert not playout.pending and mixer._may_sleep()


def test_jitter_buffer_keeps_only_fresh_frames_after_nobody_popped() -> None:
    buffer = JitterBuffer(prefill=2, capacity=6, trim_window=1000)
    for level in range(10):
        buffer.push(np.full(FRAME_SAMPLES, level / 10, np.float32))
    frame = buffer.pop()
    assert frame is not None and frame[0] == np.float32(0.8)
    assert buffer.resynced == 1 and buffer.depth == 1
