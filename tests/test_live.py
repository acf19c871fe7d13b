"""Live translation end to end: aiortc participants, a real server, real Kokoro.

The first test runs every real engine (the tiny SeamlessM4T v2, whose random weights
say gibberish, random-weight WeSpeaker voiceprints, Kokoro). The others put a
`ScriptedTranslator` in the translator's place, to know what each utterance says,
record what reaches it, or make it fail on cue; everything around it is the product.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
from aiohttp.test_utils import TestServer
from scipy.signal import correlate, resample_poly

from ai.utterance import PIPELINE_RATE
from ai.vad import VadSettings
from media.frames import FRAME_SAMPLES, MIX_RATE, SourceFrame
from media.playout import TranslationPlayout
from signaling.live import LiveTranslation
from tests.fixtures.live import ScriptedServerFactory, ScriptedTranslator
from tests.fixtures.speech import Speech, compose
from tests.fixtures.webrtc import PeerFactory, TestPeer
from tests.test_loopback import aligned_correlation, envelope

GUARD = 180.0
"""Only a hang waits this long: every wait below ends on an event."""
LOUD = 0.01
"""RMS of a 20 ms frame that counts as sound, far above Opus's coding noise."""

Message = dict[str, Any]


async def next_message(peer: TestPeer, wanted: Callable[[Message], bool]) -> Message:
    """The next message `wanted` accepts; the others are skipped."""
    async with asyncio.timeout(GUARD):
        while True:
            message = await peer.receive()
            if wanted(message):
                return message


def final_caption(lang: str) -> Callable[[Message], bool]:
    return lambda m: m["type"] == "caption" and m["final"] and m["lang"] == lang


def of_type(kind: str) -> Callable[[Message], bool]:
    return lambda m: m["type"] == kind


def assert_speech_like(audio: np.ndarray) -> None:
    """At least half a second of sound, mostly in the voice band, rising and falling."""
    levels = envelope(audio)
    loud = levels > LOUD
    assert np.sum(loud) >= 25, f"only {np.sum(loud)} loud frames"
    spectrum = np.abs(np.fft.rfft(audio))
    freqs = np.fft.rfftfreq(len(audio), 1 / MIX_RATE)
    assert spectrum[(freqs > 80) & (freqs < 4000)].sum() / spectrum.sum() > 0.5
    assert np.std(levels[loud]) / np.mean(levels[loud]) > 0.2  # syllables, not a steady tone


async def everyone_connected(*peers: TestPeer) -> dict[TestPeer, int]:
    """Waits until media flows to each peer; returns where each recording is now."""
    for peer in peers:
        await peer.recorder.wait_for(FRAME_SAMPLES * 10)
    return {peer: peer.recorder.mark() for peer in peers}


async def alice_about_to_speak_to_bruno(
    server: TestServer, peer_factory: PeerFactory, room: str, speech: Speech,
    bruno_mix: dict[str, Any] | None = None,
) -> tuple[TestPeer, TestPeer, dict[TestPeer, int]]:
    """Alice (eng), whose microphone holds `speech`, and Bruno (spa, with `bruno_mix` set
    before media flows) in `room`, media flowing both ways; Alice has not spoken yet."""
    alice, bruno = [await peer_factory(server) for _ in range(2)]
    await alice.join(room, "Alice", "eng")
    await bruno.join(room, "Bruno", "spa")
    if bruno_mix:
        await bruno.send({"type": "set_mix", **bruno_mix})
    await alice.connect(speech.audio)
    await bruno.connect()
    return alice, bruno, await everyone_connected(alice, bruno)


async def test_english_speech_is_heard_translated_in_spanish_and_original_in_english(
    live_server: TestServer, peer_factory: PeerFactory, english_speech: Speech
) -> None:
    alice, bruno, carol = [await peer_factory(live_server) for _ in range(3)]
    await alice.join("live", "Alice", "eng")
    await bruno.join("live", "Bruno", "spa")
    await carol.join("live", "Carol", "eng")
    await bruno.send({"type": "set_mix", "original": 0})  # translation only, to hear it alone
    await alice.connect(english_speech.audio)
    await bruno.connect()
    await carol.connect()
    starts = await everyone_connected(alice, bruno, carol)
    alice.mic.play()

    caption = await next_message(bruno, final_caption("spa"))
    assert caption["speaker"]["name"] == "Alice"
    assert caption["speaker"]["participant"] == alice.id
    assert caption["source_lang"] == "eng" and caption["text"] and "error" not in caption
    assert all(caption["t"][stage] is not None for stage in ("vad_hangover_ms", "translate_ms"))
    latency = await next_message(bruno, of_type("latency"))
    assert latency["utterance"] == caption["utterance"] and latency["total_ms"] > 0

    await bruno.recorder.wait_for(MIX_RATE * 3 // 2)
    heard = bruno.recorder.audio(starts[bruno])
    speech_end = int(english_speech.voiced[-1][1] * MIX_RATE)
    assert np.max(np.abs(heard[:speech_end])) < 1e-3  # original at 0: silent while Alice talks
    assert_speech_like(heard[speech_end:])

    await carol.recorder.wait_for(
        starts[carol] + len(english_speech.audio) + MIX_RATE - carol.recorder.samples
    )
    assert aligned_correlation(english_speech.audio, carol.recorder.audio(starts[carol])) > 0.7
    assert np.max(np.abs(alice.recorder.audio(starts[alice]))) < 1e-3

    await alice.close()  # the voices heard only on her device go with her
    await next_message(bruno, lambda m: m["type"] == "speakers" and m["speakers"] == [])


async def test_two_speakers_at_once_reach_each_listener_in_order_never_overlapping(
    scripted_server: ScriptedServerFactory, peer_factory: PeerFactory
) -> None:
    translator = ScriptedTranslator(lines=("Hola a todos, buenos días.", "Gracias por venir."))
    server, live = await scripted_server(translator)
    alice, dan, bruno, fanny = [await peer_factory(server) for _ in range(4)]
    short = compose([0.3, "Good morning everyone.", 1.5], rate=MIX_RATE)
    long = compose([0.3, "Thank you all for coming to the meeting today.", 1.5], rate=MIX_RATE)
    await alice.join("duo", "Alice", "eng")
    await dan.join("duo", "Dan", "eng")
    await bruno.join("duo", "Bruno", "spa")
    await fanny.join("duo", "Fanny", "fra")
    for listener in (bruno, fanny):
        await listener.send({"type": "set_mix", "original": 0})
    await alice.connect(short.audio)
    await dan.connect(long.audio)
    await bruno.connect()
    await fanny.connect()
    tap = TranslationTap(live, "duo", ("spa", "fra"))
    starts = await everyone_connected(alice, dan, bruno, fanny)
    alice.mic.play()
    dan.mic.play()

    for listener, lang in ((bruno, "spa"), (fanny, "fra")):
        speakers: dict[str, str] = {}
        started: list[str] = []
        async with asyncio.timeout(GUARD):
            while len(started) < 2 or len(speakers) < 2:
                message = await listener.receive()
                if final_caption(lang)(message):
                    assert "error" not in message
                    speakers[message["utterance"]] = message["speaker"]["participant"]
                elif message["type"] == "latency":
                    started.append(message["utterance"])
        # Alice's sentence is shorter, so it ended first and is heard first.
        assert [speakers[uid] for uid in started] == [alice.id, dan.id]

    await tap.played_out()
    for listener, lang in ((bruno, "spa"), (fanny, "fra")):
        origins = tap.origins[lang]
        switch = origins.index(dan.id)
        assert set(origins[:switch]) == {alice.id} and set(origins[switch:]) == {dan.id}
        assert min(switch, len(origins) - switch) >= 25  # each at least half a second
        levels = envelope(listener.recorder.audio(starts[listener]))
        assert np.sum(levels > LOUD) >= 0.5 * len(origins)  # and the listener heard them


class TranslationTap:
    """Per language, the speaker (origin) of each translated frame the room's mixer pulls."""

    def __init__(self, live: LiveTranslation, room: str, langs: tuple[str, ...]) -> None:
        self.origins: dict[str, list[str]] = {lang: [] for lang in langs}
        self._played_out = {lang: asyncio.Event() for lang in langs}
        for lang in langs:
            playout = live.playout(live.rooms[room], lang)
            playout.pull = self._tapped(playout, lang)  # type: ignore[method-assign]

    def _tapped(self, playout: TranslationPlayout, lang: str) -> Callable[[], SourceFrame | None]:
        pull = playout.pull

        def tapped() -> SourceFrame | None:
            frame = pull()
            if frame is not None:
                self.origins[lang].append(frame.origin)
            elif self.origins[lang] and not len(playout):
                self._played_out[lang].set()
            return frame

        return tapped

    async def played_out(self) -> None:
        """Until every language has played out what it was given."""
        async with asyncio.timeout(GUARD):
            for event in self._played_out.values():
                await event.wait()


async def test_segments_reaching_the_translator_match_the_speech_and_its_audio(
    scripted_server: ScriptedServerFactory, peer_factory: PeerFactory
) -> None:
    """The media -> VAD contract: every sentence arrives once, whole, where it was spoken."""
    speech = compose(
        [0.6, "The meeting starts now.", 1.2, "First, the budget for next year.", 1.0,
         "Any questions so far?", 1.2],
        rate=MIX_RATE,
    )
    translator = ScriptedTranslator()
    server, _ = await scripted_server(translator)
    alice = await peer_factory(server)
    await alice.join("contract", "Alice", "eng")
    await alice.connect(speech.audio)
    await everyone_connected(alice)
    alice.mic.play()
    await translator.wait_for(len(speech.voiced))
    await alice.recorder.wait_for(len(speech.audio) - alice.recorder.samples + MIX_RATE)
    assert len(translator.segments) == len(speech.voiced)

    source = resample_poly(speech.audio, PIPELINE_RATE, MIX_RATE).astype(np.float32)
    vad = VadSettings()
    for segment, (voiced_start, voiced_end) in zip(translator.segments, speech.voiced, strict=True):
        lag = int(np.argmax(correlate(source, segment, mode="valid", method="fft")))
        aligned = source[lag : lag + len(segment)]
        assert np.corrcoef(aligned, segment)[0, 1] > 0.9
        start = lag / PIPELINE_RATE
        end = start + len(segment) / PIPELINE_RATE
        assert abs(start + vad.pre_roll - voiced_start) <= 0.1
        assert abs(end - vad.post_roll - voiced_end) <= 0.1


async def test_a_translator_failure_marks_that_caption_and_the_room_goes_on(
    scripted_server: ScriptedServerFactory, peer_factory: PeerFactory
) -> None:
    translator = ScriptedTranslator(lines=("Seguimos con la reunión.",), fail_on=frozenset({0}))
    server, _ = await scripted_server(translator)
    speech = compose([0.5, "This one fails.", 1.2, "This one is translated.", 1.0], rate=MIX_RATE)
    alice, bruno, starts = await alice_about_to_speak_to_bruno(
        server, peer_factory, "flaky", speech, bruno_mix={"original": 0}
    )
    alice.mic.play()

    for peer in (alice, bruno):  # the speaker sees their own failed caption too
        failed = await next_message(peer, lambda m: m["type"] == "caption" and "error" in m)
        assert failed["speaker"]["participant"] == alice.id
        assert "scripted failure" in failed["error"]
    caption = await next_message(bruno, final_caption("spa"))
    assert caption["utterance"] != failed["utterance"] and "error" not in caption
    assert caption["text"] == "Seguimos con la reunión."
    latency = await next_message(bruno, of_type("latency"))
    assert latency["utterance"] == caption["utterance"]
    await bruno.recorder.wait_for(MIX_RATE)
    assert_speech_like(bruno.recorder.audio(starts[bruno]))

    async with aiohttp.ClientSession() as session:
        metrics = await (await session.get(server.make_url("/metrics"))).text()
    assert 'babblefish_utterances_total{outcome="failed"} 1.0' in metrics
    assert 'babblefish_utterances_total{outcome="translated"} 1.0' in metrics


async def test_a_translation_a_listeners_microphone_hears_back_is_not_translated_again(
    scripted_server: ScriptedServerFactory, peer_factory: PeerFactory
) -> None:
    """Bruno's phone plays Alice's translation aloud and its echo canceller lets it
    through: his microphone sends it back. The recogniser hears the Spanish translation
    (scripted, as a real one would hear it), and the room drops it instead of sending
    Alice her own words back. Then Bruno speaks for himself, and that is translated."""
    translation = "Hola a todos."
    translator = ScriptedTranslator(
        lines=(translation, "Thank you.", "Thank you all."),
        transcripts=("Good morning everyone.", translation, "Gracias a todos."),
    )
    server, _ = await scripted_server(translator)
    speech = compose([0.3, "Good morning everyone.", 1.2], rate=MIX_RATE)
    alice, bruno, _ = await alice_about_to_speak_to_bruno(
        server, peer_factory, "echo", speech, bruno_mix={"original": 0}
    )
    alice.mic.play()
    await next_message(bruno, of_type("latency"))  # the translation is playing on his phone
    playing = bruno.recorder.mark()
    await bruno.recorder.wait_for(MIX_RATE)
    bruno.mic.say(bruno.recorder.audio(playing))
    await translator.wait_for(2)  # heard back, cut by the VAD and transcribed
    while not bruno.mic.finished:  # noqa: ASYNC110 (the track exposes no event)
        await asyncio.sleep(0.05)
    bruno.mic.say(compose([0.3, "Thank you all.", 1.0], rate=MIX_RATE).audio)

    caption = await next_message(
        alice, lambda m: m["type"] == "caption" and m["speaker"]["participant"] == bruno.id
    )
    assert caption["text"] in {"Gracias a todos.", "Thank you all."}
    await translator.wait_for(3)
    async with aiohttp.ClientSession() as session:
        metrics = await (await session.get(server.make_url("/metrics"))).text()
    assert 'babblefish_dropped_utterances_total{reason="heard_back"} 1.0' in metrics
    assert 'babblefish_utterances_total{outcome="heard_back"} 1.0' in metrics


async def test_a_speaker_who_leaves_mid_utterance_leaves_nothing_behind(
    scripted_server: ScriptedServerFactory, peer_factory: PeerFactory
) -> None:
    translator = ScriptedTranslator(hold=asyncio.Event())
    server, live = await scripted_server(translator)
    speech = compose([0.3, "I have to go now.", 1.0], rate=MIX_RATE)
    alice, bruno, _ = await alice_about_to_speak_to_bruno(server, peer_factory, "exit", speech)
    alice.mic.play()
    await translator.wait_for(1)  # her utterance is in the translator now
    room = live.rooms["exit"]
    assert room.pipeline.in_flight == 1 and room.awaiting

    await alice.close()
    def only_bruno_left(message: Message) -> bool:
        roster = message.get("participants", [])
        return message["type"] == "participants" and [p["id"] for p in roster] == [bruno.id]

    await next_message(bruno, only_bruno_left)
    translator.hold.set()  # the model answers after she left
    await asyncio.gather(*room.chores)
    assert room.pipeline.in_flight == 0 and not room.awaiting
    assert list(room.feeders) == [bruno.id]
    assert not any(len(playout) for playout in room.playouts.values())
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert f"vad-{alice.id}" not in names and not any(n.startswith("pipeline ") for n in names)
    await bruno.send({"type": "no_such_message"})
    while (message := await bruno.receive())["type"] != "error":
        assert message["type"] != "caption", "a result of hers reached Bruno after she left"


async def test_the_original_voice_follows_the_language_detected_not_the_one_declared(
    scripted_server: ScriptedServerFactory, peer_factory: PeerFactory
) -> None:
    """Alice listens in Spanish (so she is at first taken to speak it) but speaks English.
    Once an utterance of hers is detected as English, the room says so, English listeners
    hear her own voice, and Spanish listeners hear only her translation."""
    translator = ScriptedTranslator(lines=("Buenos días a todos.",), detected="eng")
    server, live = await scripted_server(translator)
    alice, bruno, carol = [await peer_factory(server) for _ in range(3)]
    first = compose([0.3, "Good morning everyone, thank you for coming.", 1.0], rate=MIX_RATE)
    second = compose(
        [0.3, "The quick brown fox jumps over the lazy dog near the river bank.", 1.0],
        rate=MIX_RATE,
    )
    joined = await alice.join("switch", "Alice", "spa")
    mine = next(p for p in joined["participants"] if p["id"] == alice.id)
    assert (mine["speaks"], mine["speaks_from"]) == ("spa", "assumed")
    await bruno.join("switch", "Bruno", "spa")
    await carol.join("switch", "Carol", "eng")
    for listener in (bruno, carol):  # only same-language voices and translations
        await listener.send({"type": "set_mix", "original": 0})
    await alice.connect(first.audio)
    await bruno.connect()
    await carol.connect()
    tap = TranslationTap(live, "switch", ("spa",))
    await everyone_connected(alice, bruno, carol)
    alice.mic.play()

    def alice_detected(message: Message) -> bool:
        entries = message.get("participants", []) if message["type"] == "participants" else []
        return any(p["id"] == alice.id and p["speaks_from"] == "detected" for p in entries)

    roster = await next_message(carol, alice_detected)
    entry = next(p for p in roster["participants"] if p["id"] == alice.id)
    assert (entry["lang"], entry["speaks"]) == ("spa", "eng")
    caption = await next_message(carol, final_caption("eng"))
    assert caption["source_lang"] == "eng" and caption["text"] == "segment 0"  # no translation
    await tap.played_out()  # Bruno's Spanish translation of it is over

    starts = {peer: peer.recorder.mark() for peer in (bruno, carol)}
    alice.mic.say(second.audio)
    await carol.recorder.wait_for(
        starts[carol] + len(second.audio) + 2 * MIX_RATE - carol.recorder.samples
    )
    # Most of her voice (a loaded machine's mixer may skip a late tick or two), in time;
    # without the feature Carol hears none of it.
    heard_by_carol = carol.recorder.audio(starts[carol])
    spoken_frames = int(np.sum(envelope(second.audio) > LOUD))
    heard_frames = int(np.sum(envelope(heard_by_carol) > LOUD))
    assert heard_frames >= 0.5 * spoken_frames, (heard_frames, spoken_frames)
    assert aligned_correlation(second.audio, heard_by_carol) > 0.4
    # From where she starts (the last of her first translation's decoder tail is before)
    # until her translation can begin: nothing of her English voice.
    voiced_start, voiced_end = (int(t * MIX_RATE) for t in second.voiced[0])
    heard_by_bruno = bruno.recorder.audio(starts[bruno])[voiced_start:voiced_end]
    loud = np.nonzero(np.abs(heard_by_bruno) > 1e-3)[0]
    assert not len(loud), f"Bruno heard sound at {loud[:5] / MIX_RATE} s into her sentence"
    caption = await next_message(bruno, final_caption("spa"))
    assert caption["text"] == "Buenos días a todos." and caption["source_lang"] == "eng"
    assert translator.sources[1] == (None, "eng")  # detection now favours English

    await alice.send({"type": "set_spoken_lang", "lang": "spa"})  # "I speak: Spanish"
    roster = await next_message(
        carol, lambda m: m["type"] == "participants" and any(
            p["id"] == alice.id and p["speaks_from"] == "pinned" for p in m["participants"]
        ),
    )
    assert next(p for p in roster["participants"] if p["id"] == alice.id)["speaks"] == "spa"


async def test_who_joins_while_an_utterance_is_translated_gets_no_caption_of_it(
    scripted_server: ScriptedServerFactory, peer_factory: PeerFactory
) -> None:
    """Captions of an utterance go to the languages it was dispatched to: a listener who
    arrives later would otherwise keep its partial caption ("translating…") for good."""
    translator = ScriptedTranslator(lines=("Hola a todos.",), hold=asyncio.Event())
    server, _ = await scripted_server(translator)
    speech = compose([0.3, "Good morning everyone.", 1.0], rate=MIX_RATE)
    alice, bruno, _ = await alice_about_to_speak_to_bruno(server, peer_factory, "late", speech)
    alice.mic.play()
    await translator.wait_for(1)  # dispatched to English and Spanish, held in the translator

    carol = await peer_factory(server)
    await carol.join("late", "Carol", "fra")
    assert translator.hold is not None
    translator.hold.set()
    partial = await next_message(bruno, lambda m: m["type"] == "caption" and not m["final"])
    final = await next_message(bruno, final_caption("spa"))
    assert partial["utterance"] == final["utterance"] and final["text"] == "Hola a todos."
    await carol.send({"type": "no_such_message"})  # answered after anything sent before it
    while (message := await carol.receive())["type"] != "error":
        assert message["type"] != "caption", message


async def test_set_mix_and_rename_speaker_are_validated(
    live_server: TestServer, peer_factory: PeerFactory
) -> None:
    peer = await peer_factory(live_server)
    await peer.join("mix", "Dan", "eng")
    await peer.send({"type": "set_mix", "original": 2})
    error = await peer.expect("error")
    assert error["code"] == "bad_field"
    await peer.send({"type": "set_mix", "original": 0.5})
    await peer.send({"type": "rename_speaker", "speaker": "s9", "name": "Eve"})
    error = await peer.expect("error")
    assert error["code"] in ("unknown_speaker", "bad_field")
