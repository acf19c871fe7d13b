"""The REST face over aiohttp's test client: tiny SeamlessM4T, real Kokoro, real VAD."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient

from ai.engines import Engines
from ai.pipeline import PipelineEngines
from ai.rest import MAX_BATCH_TEXTS, MAX_JSON_BYTES, add_rest_routes
from ai.translator import SeamlessTranslator
from ai.tts import KokoroTTS
from ai.utterance import Utterance
from tests.fixtures.speech import Speech, compose

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture(scope="module")
def two_sentences() -> Speech:
    return compose(
        [0.6, "Good morning everyone.", 1.2, "Where is the train station?", 0.6], rate=16_000
    )


@pytest.fixture(scope="module")
def two_sentences_wav(two_sentences: Speech, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return two_sentences.write_wav(tmp_path_factory.mktemp("rest") / "two.wav").read_bytes()


@pytest.fixture
def engines(seamless_translator: SeamlessTranslator, kokoro_tts: KokoroTTS) -> Engines:
    return Engines(
        seamless_translator,
        kokoro_tts,
        written=seamless_translator.text_languages,
        seamless_spoken=seamless_translator.speech_languages,
    )


def blocks_around(engines: Engines, speech_slots: int = 8) -> PipelineEngines:
    """The live rooms' blocks around the same engines, as `mount_translation` builds them."""
    return PipelineEngines(
        engines.translator, engines.synthesizer,
        speech_slots=speech_slots, seamless_spoken=engines.seamless_spoken,
    )


@pytest.fixture
async def blocks(engines: Engines) -> AsyncIterator[PipelineEngines]:
    blocks = blocks_around(engines)
    yield blocks
    await blocks.close()


@pytest.fixture
async def client(aiohttp_client: MakeClient, engines: Engines, blocks: PipelineEngines) -> Client:
    app = web.Application()
    add_rest_routes(app, engines, blocks, max_upload_bytes=2 * 2**20)
    return await aiohttp_client(app)


def form(data: bytes, filename: str = "speech.wav", **fields: str) -> FormData:
    body = FormData()
    body.add_field("file", data, filename=filename, content_type="application/octet-stream")
    for name, value in fields.items():
        body.add_field(name, value)
    return body


async def error_of(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body["error"]) == {"code", "message"} and body["error"]["message"]
    return str(body["error"]["code"])


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
        return pcm.astype(np.float32) / 32768, wav.getframerate()


def encode_with_pyav(speech: Speech, container: str, codec: str, rate: int) -> bytes:
    """The speech in another container and codec, as a phone or browser might upload it."""
    out = io.BytesIO()
    with av.open(out, "w", format=container) as file:
        stream = file.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(
            (speech.audio * 32767).astype("<i2")[None, :], format="s16", layout="mono"
        )
        frame.sample_rate = speech.rate
        for piece in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(piece):
                file.mux(packet)
        for packet in stream.encode(None):
            file.mux(packet)
    return out.getvalue()


# /translate and /translate/batch


async def test_translate(client: Client, seamless_translator: SeamlessTranslator) -> None:
    response = await client.post(
        "/translate", json={"text": "Good morning", "source_lang": "eng", "target_lang": "spa"}
    )
    assert response.status == 200
    body = await response.json()
    [direct] = await seamless_translator.translate_text(["Good morning"], "eng", "spa")
    assert body == {"translation": direct, "source_lang": "eng", "target_lang": "spa"}


async def test_translate_batch_keeps_order(
    client: Client, seamless_translator: SeamlessTranslator
) -> None:
    texts = [f"Sentence number {n} is here." for n in range(20)]  # more than one model call
    response = await client.post(
        "/translate/batch", json={"texts": texts, "source_lang": "eng", "target_lang": "fra"}
    )
    assert response.status == 200
    translations = (await response.json())["translations"]
    assert len(translations) == 20
    for index in (0, 17):
        assert [translations[index]] == await seamless_translator.translate_text(
            [texts[index]], "eng", "fra"
        )


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/translate", {"source_lang": "eng", "target_lang": "spa"}, "invalid_request"),
        ("/translate", {"text": "  ", "source_lang": "eng", "target_lang": "spa"},
         "invalid_request"),
        ("/translate", {"text": "hi", "source_lang": "eng"}, "invalid_request"),
        ("/translate", {"text": "hi", "source_lang": "eng", "target_lang": "xx"},
         "unknown_language"),
        ("/translate", {"text": "hi", "source_lang": "ast", "target_lang": "spa"},
         "unknown_language"),
        ("/translate", {"text": "x" * 2001, "source_lang": "eng", "target_lang": "spa"},
         "invalid_input"),
        ("/translate", ["not", "an", "object"], "invalid_request"),
        ("/translate/batch", {"texts": "one", "source_lang": "eng", "target_lang": "spa"},
         "invalid_request"),
        ("/translate/batch", {"texts": [], "source_lang": "eng", "target_lang": "spa"},
         "invalid_request"),
        ("/translate/batch", {"texts": ["a", 3], "source_lang": "eng", "target_lang": "spa"},
         "invalid_request"),
        ("/translate/batch",
         {"texts": ["a"] * (MAX_BATCH_TEXTS + 1), "source_lang": "eng", "target_lang": "spa"},
         "invalid_request"),
        ("/speak", {"text": "hello", "lang": "klingon"}, "unknown_language"),
        ("/speak", {"text": "hello", "lang": "afr"}, "unknown_language"),
        ("/speak", {"text": "", "lang": "eng"}, "invalid_request"),
        ("/speak", {"text": "a" * 1001, "lang": "eng"}, "invalid_request"),
        ("/speak", {"text": "hello", "lang": "eng", "voice": "nobody"}, "invalid_request"),
        ("/speak", {"text": "cześć", "lang": "pol", "voice": "af_heart"}, "invalid_request"),
    ],
)
async def test_bad_json_fields_are_422(client: Client, path: str, body: Any, code: str) -> None:
    assert await error_of(await client.post(path, json=body), 422) == code


async def test_body_that_is_not_json_is_422(client: Client) -> None:
    response = await client.post("/translate", data=b"{not json", headers={
        "Content-Type": "application/json"})
    assert await error_of(response, 422) == "invalid_request"


async def test_json_over_the_limit_is_413_even_when_streamed(client: Client) -> None:
    async def endless() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for _ in range(MAX_JSON_BYTES // 2**16 + 2):
            yield b"a" * 2**16

    assert await error_of(await client.post("/translate", data=endless()), 413) == "too_large"


async def test_busy_translator_is_503(
    aiohttp_client: MakeClient, engines: Engines, seamless_translator: SeamlessTranslator
) -> None:
    full = SeamlessTranslator(seamless_translator.engine, max_waiting=0)
    app = web.Application()
    busy = Engines(full, engines.synthesizer, written=engines.written)
    blocks = blocks_around(busy)
    add_rest_routes(app, busy, blocks)
    client = await aiohttp_client(app)
    try:
        response = await client.post(
            "/translate", json={"text": "hi", "source_lang": "eng", "target_lang": "spa"}
        )
        assert await error_of(response, 503) == "busy"
    finally:
        await blocks.close()
        full.close()


# /transcribe and /transcribe-translate


async def test_transcribe_gives_one_segment_per_sentence(
    client: Client, two_sentences: Speech, two_sentences_wav: bytes,
    seamless_translator: SeamlessTranslator,
) -> None:
    response = await client.post("/transcribe", data=form(two_sentences_wav, language="eng"))
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["language"] == "eng"
    segments = body["segments"]
    assert len(segments) == len(two_sentences.voiced)
    for segment, (start, end) in zip(segments, two_sentences.voiced, strict=True):
        # VAD keeps a little audio either side of the voice.
        assert start - 0.45 <= segment["start"] <= start + 0.1
        assert end - 0.1 <= segment["end"] <= end + 0.45
        assert segment["text"]
    assert body["text"] == " ".join(segment["text"] for segment in segments)


async def test_transcribe_detects_an_undeclared_language(
    client: Client, two_sentences_wav: bytes, seamless_translator: SeamlessTranslator
) -> None:
    response = await client.post("/transcribe", data=form(two_sentences_wav))
    assert response.status == 200
    body = await response.json()
    assert body["language"] in seamless_translator.detect_candidates
    assert len(body["segments"]) == 2


@pytest.mark.parametrize(
    ("container", "codec", "rate"), [("ogg", "libopus", 48_000), ("mp3", "libmp3lame", 44_100),
                                     ("flac", "flac", 22_050)],
)
async def test_any_format_pyav_reads_is_accepted(
    client: Client, two_sentences: Speech, container: str, codec: str, rate: int
) -> None:
    data = encode_with_pyav(two_sentences, container, codec, rate)
    response = await client.post(
        "/transcribe", data=form(data, f"speech.{container}", language="eng")
    )
    assert response.status == 200, await response.text()
    assert len((await response.json())["segments"]) == 2


async def test_silence_transcribes_to_nothing(client: Client, tmp_path: Path) -> None:
    quiet = compose([2.0], rate=16_000).write_wav(tmp_path / "quiet.wav").read_bytes()
    response = await client.post("/transcribe", data=form(quiet, language="spa"))
    assert await response.json() == {"text": "", "language": "spa", "segments": []}


async def test_transcribe_translate(client: Client, two_sentences_wav: bytes) -> None:
    response = await client.post(
        "/transcribe-translate", data=form(two_sentences_wav, target_lang="deu", language="eng")
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert set(body) == {"transcription", "detected_language", "translation", "target_lang"}
    assert body["detected_language"] == "eng" and body["target_lang"] == "deu"
    assert body["transcription"] and body["translation"]


async def test_transcribe_translate_detects_the_source(
    client: Client, two_sentences_wav: bytes, seamless_translator: SeamlessTranslator
) -> None:
    response = await client.post("/transcribe-translate", data=form(two_sentences_wav,
                                                                    target_lang="spa"))
    body = await response.json()
    assert body["detected_language"] in {"spa", *seamless_translator.detect_candidates}


@pytest.mark.parametrize("path", ["/transcribe", "/transcribe-translate"])
async def test_undecodable_file_is_415(client: Client, path: str) -> None:
    response = await client.post(path, data=form(b"RIFF but not really audio" * 40,
                                                 target_lang="spa"))
    assert await error_of(response, 415) == "unsupported_media"


async def test_non_multipart_upload_is_415(client: Client, two_sentences_wav: bytes) -> None:
    response = await client.post("/transcribe", data=two_sentences_wav,
                                 headers={"Content-Type": "audio/wav"})
    assert await error_of(response, 415) == "unsupported_media"


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/transcribe", {"language": "xx"}),
        ("/transcribe", {"language": "ast"}),  # heard, but never written
        ("/transcribe-translate", {}),
        ("/transcribe-translate", {"target_lang": "zzz"}),
        ("/transcribe-translate", {"target_lang": "spa", "language": "xx"}),
    ],
)
async def test_bad_form_fields_are_422(
    client: Client, two_sentences_wav: bytes, path: str, fields: dict[str, str]
) -> None:
    response = await client.post(path, data=form(two_sentences_wav, **fields))
    assert response.status == 422


async def test_missing_file_is_422(client: Client) -> None:
    body = FormData()
    body.add_field("language", "eng")
    body.add_field("other", b"x", filename="x.bin")
    response = await client.post("/transcribe", data=body)
    assert await error_of(response, 422) == "invalid_request"


async def test_upload_over_the_limit_is_413(client: Client) -> None:
    big = b"\0" * (2 * 2**20 + 1)
    response = await client.post("/transcribe", data=form(big, language="eng"))
    assert await error_of(response, 413) == "too_large"


async def test_streamed_upload_over_the_limit_is_413(client: Client) -> None:
    """No Content-Length to trust: the limit holds while reading."""
    async def parts() -> AsyncIterator[bytes]:
        yield (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
               b"Content-Type: audio/wav\r\n\r\n")
        for _ in range(40):
            yield b"\0" * 2**16
        yield b"\r\n--b--\r\n"

    response = await client.post(
        "/transcribe", data=parts(), headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert await error_of(response, 413) == "too_large"


@pytest.mark.parametrize(
    ("path", "fields"), [("/transcribe", {}), ("/transcribe-translate", {"target_lang": "spa"})]
)
async def test_uploads_go_through_the_rooms_batcher(
    client: Client, blocks: PipelineEngines, two_sentences_wav: bytes,
    path: str, fields: dict[str, str],
) -> None:
    """Once the rooms' batcher is closed (shutdown), an upload no longer reaches the model."""
    await blocks.translate.close()
    response = await client.post(path, data=form(two_sentences_wav, language="eng", **fields))
    assert await error_of(response, 503) == "shutting_down"


async def test_a_full_batcher_is_503_busy(
    aiohttp_client: MakeClient, engines: Engines, two_sentences_wav: bytes
) -> None:
    blocks = PipelineEngines(engines.translator, engines.synthesizer, max_pending=1)
    app = web.Application()
    add_rest_routes(app, engines, blocks)
    client = await aiohttp_client(app)
    try:
        response = await client.post("/transcribe", data=form(two_sentences_wav, language="eng"))
        assert await error_of(response, 503) == "busy"
    finally:
        await blocks.close()


# /speak


async def test_speak_with_kokoro(client: Client) -> None:
    response = await client.post("/speak", json={"text": "Hello there, friend.", "lang": "eng"})
    assert response.status == 200 and response.content_type == "audio/wav"
    audio, rate = read_wav(await response.read())
    assert rate == 48_000
    assert len(audio) > 0.5 * rate and np.max(np.abs(audio)) > 0.01


async def test_speak_with_a_chosen_kokoro_voice(client: Client) -> None:
    response = await client.post(
        "/speak", json={"text": "Hola, buenos días.", "lang": "spa", "voice": "em_alex"}
    )
    assert response.status == 200
    audio, _ = read_wav(await response.read())
    assert np.max(np.abs(audio)) > 0.01


async def test_speak_with_seamless_for_a_language_kokoro_lacks(client: Client) -> None:
    response = await client.post("/speak", json={"text": "Dzień dobry.", "lang": "pol"})
    assert response.status == 200 and response.content_type == "audio/wav"
    audio, rate = read_wav(await response.read())
    assert rate == 16_000 and len(audio) > 0


async def until(condition: Callable[[], bool], *also_done: asyncio.Future[Any]) -> None:
    """Returns once `condition` holds, or once any of `also_done` finished first."""
    # A polled count: the slots have no event to wait on.
    while not condition() and not any(f.done() for f in also_done):  # noqa: ASYNC110
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(("lang", "text"), [("eng", "Hello there."), ("pol", "Dzień dobry.")])
async def test_speak_waits_for_a_slot_the_rooms_hold(
    aiohttp_client: MakeClient, engines: Engines, lang: str, text: str
) -> None:
    """REST speech and the rooms' speech share the bounded slots, Kokoro's and
    SeamlessM4T's vocoder alike: with the one slot held by a room, /speak queues."""
    blocks = blocks_around(engines, speech_slots=1)
    app = web.Application()
    add_rest_routes(app, engines, blocks)
    client = await aiohttp_client(app)
    room_voicing = asyncio.Event()
    release_room = asyncio.Event()

    async def cast_voice(speaker: str, lang: str, audio: Any) -> str:
        room_voicing.set()
        await release_room.wait()  # the room holds its slot meanwhile
        return "af_heart"

    utterance = Utterance(np.zeros(16_000, np.float32), 0.0, 1.0, source_id="room-speaker")
    room_chunks: list[Any] = []
    room = asyncio.create_task(
        blocks.speak(utterance, "eng", "Good morning.", cast_voice, room_chunks.append)
    )
    try:
        await room_voicing.wait()
        request = asyncio.ensure_future(client.post("/speak", json={"text": text, "lang": lang}))
        await asyncio.wait_for(until(lambda: blocks.speak.waiting == 1, request), timeout=120)
        assert not request.done(), "/speak was answered while every speech slot was taken"
        release_room.set()
        await room
        response = await request
        assert response.status == 200 and room_chunks
        audio, _ = read_wav(await response.read())
        assert np.max(np.abs(audio)) > 0.01
        assert blocks.speak.waiting == 0
    finally:
        release_room.set()
        await asyncio.gather(room, return_exceptions=True)
        await blocks.close()


def test_languages_report_what_the_engines_do(engines: Engines) -> None:
    by_code = {info["code"]: info for info in engines.languages()}
    assert by_code["eng"]["speech_out"] == "kokoro"
    assert by_code["pol"]["speech_out"] == "seamless"
    assert by_code["afr"] == {"code": "afr", "name": "Afrikaans", "speech_in": True,
                              "text_out": True, "speech_out": None}
    assert by_code["ast"]["text_out"] is False and by_code["ast"]["speech_out"] is None
    names = [info["name"] for info in engines.languages()]
    assert names == sorted(names)
