"""The cascade engine live: aiortc participants, a real server, real speech end to end.

A Spanish speaker (real Kokoro ef_dora speech) talks into a room. Whisper-base
(real weights) hears and identifies it and writes the English itself (its
`translate` task); Kokoro speaks that English; whisper-base, as the listener's ear,
transcribes what arrived. The French listener's captions come from a tiny random
NLLB: they check the mechanics only (French captions arrive, in order, without
error), never their words, which are gibberish. A phone whose microphone hears its own
loudspeaker sends the English back, and whisper-base's transcript of it is recognised
as played audio and dropped, never translated again.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ai.translator import CascadeTranslator
from ai.tts import KokoroTTS
from ai.utterance import Audio
from media.frames import MIX_RATE
from media.ice import offer_host_addresses
from signaling.live import LiveTranslation
from signaling.translation import LoadedEngines, mount_translation
from signaling.web import ServerSettings, create_app
from tests.fixtures.cascade import ENGLISH_CONTENT, content_words
from tests.fixtures.kokoro import WhisperOracle
from tests.fixtures.live import ScriptedServerFactory, ScriptedTranslator
from tests.fixtures.webrtc import PeerFactory, Recorder, microphone_frame
from tests.test_live import GUARD, TranslationTap, everyone_connected, next_message, of_type

Message = dict[str, Any]


@pytest.fixture
async def cascade_server(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    cascade_translator: CascadeTranslator,
    kokoro_tts: KokoroTTS,
) -> AsyncIterator[Callable[[], Awaitable[tuple[TestServer, LiveTranslation]]]]:
    """`await make()`: a started loopback server whose rooms translate with the cascade
    engine, speakers named after their connection (no voiceprints)."""

    async def make() -> tuple[TestServer, LiveTranslation]:
        app = create_app(ServerSettings(ice_addresses=["127.0.0.1"]))
        live = mount_translation(
            app, LoadedEngines(cascade_translator, kokoro_tts, None),
            owns_engines=False, warm=False,
        )
        return await aiohttp_server(app), live

    yield make
    offer_host_addresses(None)


def padded(sentence: Audio) -> np.ndarray:
    """Half a second of silence before, one after: a sentence as a microphone sends it."""
    silence = np.zeros(MIX_RATE // 2, np.float32)
    return np.concatenate([silence, sentence, silence, silence])


def covers(heard: set[str], content: set[str]) -> bool:
    """All content words but at most one (whisper-base writes "3 pm" or "afternoon")."""
    return len(content & heard) >= len(content) - 1


async def test_spanish_speech_is_captioned_and_spoken_in_english_and_captioned_in_french(
    cascade_server: Callable[[], Awaitable[tuple[TestServer, LiveTranslation]]],
    peer_factory: PeerFactory, spanish_speech_48k: list[Audio], whisper: WhisperOracle,
) -> None:
    server, live = await cascade_server()
    sofia, erin, fanny = [await peer_factory(server) for _ in range(3)]
    await sofia.join("cascade", "Sofía", "spa")
    await erin.join("cascade", "Erin", "eng")
    await fanny.join("cascade", "Fanny", "fra")
    await erin.send({"type": "set_mix", "original": 0})  # the translation alone, for the ear
    await sofia.connect()
    await erin.connect()
    await fanny.connect()
    starts = await everyone_connected(sofia, erin, fanny)

    # One sentence at a time, the next once Erin has heard the whole translation, so that
    # however slow the shared CPU is, the playout's backlog rule never drops one.
    marks = []
    for sentence in spanish_speech_48k:
        tap = TranslationTap(live, "cascade", ("eng",))
        marks.append(erin.recorder.mark())
        sofia.mic.say(padded(sentence))
        await tap.played_out()
    marks.append(erin.recorder.mark())

    english: list[Message] = []
    try:
        async with asyncio.timeout(GUARD):
            while not all(covers(captioned(english), content) for content in ENGLISH_CONTENT):
                message = await next_message(
                    erin, lambda m: m["type"] == "caption" and m["final"]
                )
                assert "error" not in message and "dropped" not in message, message
                assert message["lang"] == "eng" and message["source_lang"] == "spa"
                english.append(message)
    except TimeoutError:
        missing = [sorted(content - captioned(english)) for content in ENGLISH_CONTENT]
        pytest.fail(f"no English caption brought the words {missing} (one per sentence may "
                    f"lack); captions: {[m['text'] for m in english]}")
    transcript = " ".join(m["source_text"] for m in english)
    assert {"tren", "estacion", "proyecto"} <= content_words(transcript), transcript

    french = [await next_message(fanny, lambda m: m["type"] == "caption" and m["final"])
              for _ in english]
    # Tiny random NLLB: French captions arrive for the same utterances, without error;
    # their words are gibberish and are not checked.
    assert [m["utterance"] for m in french] == [m["utterance"] for m in english]
    assert all(m["lang"] == "fra" and m["source_lang"] == "spa" and "error" not in m
               and m["text"] for m in french)

    heard = erin.recorder.audio()
    for begin, end, content in zip(marks, marks[1:], ENGLISH_CONTENT, strict=False):
        said = whisper.transcribe(heard[begin:end], "eng", MIX_RATE)
        assert covers(content_words(said), content), said
    assert np.max(np.abs(sofia.recorder.audio(starts[sofia]))) < 1e-3  # never herself


def captioned(messages: list[Message]) -> set[str]:
    return set().union(*(content_words(m["text"]) for m in messages))


class EchoingRecorder(Recorder):
    """Records what the phone receives and hands each frame on to its microphone."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: asyncio.Queue[np.ndarray] = asyncio.Queue()

    def take(self, pcm: np.ndarray) -> None:
        super().take(pcm)
        self.heard.put_nowait(pcm)


class LeakyMicrophone(MediaStreamTrack):
    """A phone on speaker whose echo canceller lets its own playback through, 6 dB down:
    the microphone sends back what the phone received as it plays."""

    kind = "audio"

    def __init__(self, heard: asyncio.Queue[np.ndarray]) -> None:
        super().__init__()
        self._heard = heard
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pcm = await self._heard.get()
        frame = microphone_frame(pcm * 0.5, self._pts)
        self._pts += len(pcm)
        return frame


async def test_an_english_translation_a_microphone_leaks_back_is_not_translated_again(
    cascade_server: Callable[[], Awaitable[tuple[TestServer, LiveTranslation]]],
    peer_factory: PeerFactory, spanish_speech_48k: list[Audio],
) -> None:
    """Erin's microphone hears her loudspeaker: the English translation goes back to the
    server as it plays. Whisper-base hears it (in pieces, cut at the playback's pauses)
    as English close to the text it wrote, and the room drops each piece: Sofía never
    gets her own sentence back, credited to Erin."""
    server, live = await cascade_server()
    sofia, erin = [await peer_factory(server) for _ in range(2)]
    await sofia.join("loop", "Sofía", "spa")
    await erin.join("loop", "Erin", "eng")
    await erin.send({"type": "set_mix", "original": 0})
    erin.recorder = EchoingRecorder()
    erin.mic = LeakyMicrophone(erin.recorder.heard)
    await sofia.connect()
    await erin.connect()
    await everyone_connected(sofia, erin)

    tap = TranslationTap(live, "loop", ("eng",))
    sofia.mic.say(padded(spanish_speech_48k[0]))
    await tap.played_out()
    await erin.recorder.wait_for(MIX_RATE)  # its echo has ended, and a VAD hangover more
    room = live.rooms["loop"]
    async with aiohttp.ClientSession() as http, asyncio.timeout(GUARD):
        while True:
            async with http.get(server.make_url("/metrics")) as response:
                outcomes = utterance_outcomes(await response.text())
            if room.pipeline.in_flight == 0 and outcomes.get("segmented", 0) == sum(
                count for outcome, count in outcomes.items() if outcome != "segmented"
            ):
                break
            await asyncio.sleep(0.2)

    assert outcomes.get("heard_back", 0) >= 1, outcomes  # the echo did reach the recogniser
    sent_to_sofia = [json.loads(frame.data) for frame in drain(sofia.inbox)
                     if frame.type == aiohttp.WSMsgType.TEXT]
    captions = [m for m in sent_to_sofia if m["type"] == "caption"]
    assert captions and {m["speaker"]["participant"] for m in captions} == {sofia.id}


def utterance_outcomes(metrics: str) -> dict[str, float]:
    found = re.findall(r'babblefish_utterances_total\{outcome="(\w+)"\} ([0-9.]+)', metrics)
    return {outcome: float(count) for outcome, count in found}


def drain(queue: asyncio.Queue[aiohttp.WSMessage]) -> list[aiohttp.WSMessage]:
    taken = []
    while not queue.empty():
        taken.append(queue.get_nowait())
    return taken


async def test_spoken_language_is_detected_favouring_the_declared_one_unless_pinned(
    scripted_server: ScriptedServerFactory, peer_factory: PeerFactory,
    spanish_speech_48k: list[Audio],
) -> None:
    """`set_spoken_lang`: auto (the default) leaves the language to detect, with the
    listening language as the prior; a code pins it; anything else is refused."""
    translator = ScriptedTranslator(lines=("Hello.",))
    server, _ = await scripted_server(translator)
    sofia, erin = [await peer_factory(server) for _ in range(2)]
    await sofia.join("pin", "Sofía", "spa")
    await erin.join("pin", "Erin", "eng")
    await sofia.connect(padded(spanish_speech_48k[1]))
    await erin.connect()
    await everyone_connected(sofia, erin)

    await sofia.send({"type": "set_spoken_lang", "lang": "klingon"})
    error = await next_message(sofia, of_type("error"))
    assert error["code"] == "unknown_lang" and "klingon" in error["message"]

    sofia.mic.play()
    first = await next_message(erin, lambda m: m["type"] == "caption" and m["final"])
    await sofia.send({"type": "set_spoken_lang", "lang": "ita"})
    sofia.mic.play()  # the same sentence again, now pinned as Italian
    await translator.wait_for(2)
    second = await next_message(erin, lambda m: m["type"] == "caption" and m["final"])
    assert (first["source_lang"], second["source_lang"]) == ("spa", "ita")
    assert translator.sources == [(None, "spa"), ("ita", "ita")]


async def test_languages_report_what_the_cascade_hears_writes_and_speaks(
    cascade_server: Callable[[], Awaitable[tuple[TestServer, LiveTranslation]]],
) -> None:
    server, _ = await cascade_server()
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/languages")) as response:
            found = {info["code"]: info for info in (await response.json())["languages"]}
    assert found["spa"]["speech_in"] and found["spa"]["speech_out"] == "kokoro"
    assert not found["yue"]["speech_in"]  # whisper-base has no Cantonese
    # Afrikaans: heard and written, but no engine speaks it here: captions only.
    assert found["afr"]["speech_in"] and found["afr"]["text_out"]
    assert found["afr"]["speech_out"] is None
    assert found["deu"]["speech_out"] is None  # Seamless's vocoder would; the cascade has none
