"""The REST face: text translation, file transcription, speech synthesis.

`add_rest_routes(app, engines, blocks)` mounts:

- `POST /translate` `{"text", "source_lang", "target_lang"}`
- `POST /translate/batch` `{"texts": [...], "source_lang", "target_lang"}`
- `POST /transcribe` multipart `file`, optional `language`
- `POST /transcribe-translate` multipart `file`, `target_lang`, optional `language`
- `POST /speak` `{"text", "lang", "voice"?}` -> audio/wav

Errors are `{"error": {"code", "message"}}`: 413 past the size limit (bodies
are read in chunks and dropped at the limit, whatever Content-Length says),
415 for files PyAV cannot decode, 422 for bad fields or languages, 503 when
the translator's or the batcher's queue is full.

The models are shared with the live rooms, and so are the blocks in front of
them: speech to transcribe goes through the rooms' micro-batcher a few segments
at a time (a room's utterance waits for one batch, not for a whole file), and
`/speak` takes one of the rooms' bounded synthesis slots.
"""

from __future__ import annotations

import asyncio
import io
import json
import wave
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import BodyPartReader, web

from ai.audio_file import UndecodableAudio, decode_audio
from ai.batcher import BatcherClosed, BatcherFull
from ai.engines import Engines, SpeechResult
from ai.kokoro_voices import KOKORO_LANGUAGES
from ai.languages import LANGUAGES
from ai.pipeline import PipelineEngines
from ai.translator import MIN_SECONDS, TranslationError, TranslatorBusy
from ai.utterance import Audio
from ai.worker import WorkerClosed

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_UPLOAD_BYTES = 25 * 2**20
MAX_JSON_BYTES = 2**20
MAX_BATCH_TEXTS = 64
MAX_SPEAK_CHARS = 1000
TEXTS_PER_CALL = 16
SEGMENTS_PER_CALL = 4
_CHUNK = 64 * 1024


class Problem(Exception):
    """An HTTP error with the JSON body every endpoint uses."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message}}
        return web.json_response(body, status=self.status)


def _too_large(limit: int) -> Problem:
    return Problem(413, "too_large", f"request body over {limit} bytes")


def _check_declared_size(request: web.Request, limit: int) -> None:
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)


async def _read_limited(part: BodyPartReader | web.Request, limit: int, used: int = 0) -> bytes:
    """All of a body or form part, refusing once `used` plus its size passes `limit`."""
    chunks: list[bytes] = []
    while True:
        if isinstance(part, BodyPartReader):
            chunk = await part.read_chunk(_CHUNK)
        else:
            chunk = await part.content.read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        used += len(chunk)
        if used > limit:
            raise _too_large(limit)
        chunks.append(chunk)


async def _json_body(request: web.Request) -> dict[str, Any]:
    _check_declared_size(request, MAX_JSON_BYTES)
    raw = await _read_limited(request, MAX_JSON_BYTES)
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Problem(422, "invalid_request", f"body is not JSON ({error})") from error
    if not isinstance(body, dict):
        raise Problem(422, "invalid_request", "body must be a JSON object")
    return body


@dataclass(slots=True)
class _Form:
    file: bytes
    fields: dict[str, str]


async def _form_body(request: web.Request, limit: int) -> _Form:
    _check_declared_size(request, limit)
    if not request.content_type.startswith("multipart/"):
        raise Problem(415, "unsupported_media", "send the audio as multipart/form-data `file`")
    reader = await request.multipart()
    file: bytes | None = None
    fields: dict[str, str] = {}
    used = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise Problem(422, "invalid_request", "nested multipart is not supported")
        data = await _read_limited(part, limit, used)
        used += len(data)
        if part.name == "file":
            file = data
        elif part.name:
            fields[part.name] = data.decode("utf-8", errors="replace").strip()
    if file is None:
        raise Problem(422, "invalid_request", "missing form field `file`")
    return _Form(file, fields)


def _text_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise Problem(422, "invalid_request", f"`{name}` must be a non-empty string")
    return value


def _language(value: object, allowed: frozenset[str], name: str, ability: str) -> str:
    if value is None or value == "":
        raise Problem(422, "invalid_request", f"missing `{name}`")
    if not isinstance(value, str) or value not in LANGUAGES:
        raise Problem(422, "unknown_language", f"`{name}`: unknown language {value!r}")
    if value not in allowed:
        message = f"`{name}`: {LANGUAGES[value].name} ({value}) cannot be {ability}"
        raise Problem(422, "unknown_language", message)
    return value


def wav_bytes(audio: Audio, rate: int) -> bytes:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return out.getvalue()


class _Handlers:
    def __init__(self, engines: Engines, blocks: PipelineEngines, max_upload_bytes: int) -> None:
        self.engines = engines
        self.blocks = blocks
        self.max_upload = max_upload_bytes
        self.spoken = frozenset(code for code in LANGUAGES if engines.speech_out(code))

    async def translate(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        text = _text_field(body, "text")
        source, target = self._text_pair(body)
        [translation] = await self.engines.translator.translate_text([text], source, target)
        return web.json_response(
            {"translation": translation, "source_lang": source, "target_lang": target}
        )

    async def translate_batch(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        texts = body.get("texts")
        if not isinstance(texts, list) or not texts:
            raise Problem(422, "invalid_request", "`texts` must be a non-empty list of strings")
        if len(texts) > MAX_BATCH_TEXTS:
            raise Problem(422, "invalid_request", f"at most {MAX_BATCH_TEXTS} texts per request")
        if not all(isinstance(text, str) and text.strip() for text in texts):
            raise Problem(422, "invalid_request", "every entry of `texts` must be non-empty text")
        source, target = self._text_pair(body)
        translations: list[str] = []
        for start in range(0, len(texts), TEXTS_PER_CALL):
            chunk = texts[start : start + TEXTS_PER_CALL]
            translations += await self.engines.translator.translate_text(chunk, source, target)
        return web.json_response({"translations": translations})

    def _text_pair(self, body: dict[str, Any]) -> tuple[str, str]:
        written = self.engines.written
        return (
            _language(body.get("source_lang"), written, "source_lang", "read as text"),
            _language(body.get("target_lang"), written, "target_lang", "written"),
        )

    async def transcribe(self, request: web.Request) -> web.Response:
        form = await _form_body(request, self.max_upload)
        language = self._optional_source(form.fields, self.engines.written, "transcribed")
        segments, results = await self._transcribe(form.file, language, [])
        detected = results[0].source_lang if results else language
        return web.json_response({
            "text": " ".join(r.transcript for r in results if r.transcript),
            "language": detected,
            "segments": [
                {"start": round(start, 3), "end": round(end, 3), "text": result.transcript}
                for (start, end), result in zip(segments, results, strict=True)
            ],
        })

    async def transcribe_translate(self, request: web.Request) -> web.Response:
        form = await _form_body(request, self.max_upload)
        language = self._optional_source(form.fields, self.engines.heard, "heard")
        target = _language(form.fields.get("target_lang"), self.engines.written, "target_lang",
                           "written")
        _, results = await self._transcribe(form.file, language, [target])
        return web.json_response({
            "transcription": " ".join(r.transcript for r in results if r.transcript),
            "detected_language": results[0].source_lang if results else language,
            "translation": " ".join(t for r in results if (t := r.translations[target])),
            "target_lang": target,
        })

    @staticmethod
    def _optional_source(
        fields: dict[str, str], allowed: frozenset[str], ability: str
    ) -> str | None:
        if not fields.get("language"):
            return None
        return _language(fields["language"], allowed, "language", ability)

    async def _transcribe(
        self, data: bytes, language: str | None, targets: Sequence[str]
    ) -> tuple[list[tuple[float, float]], list[SpeechResult]]:
        """Every utterance of the file, in order; an undeclared language is detected
        once, on the longest utterance, and then used for the rest."""
        loop = asyncio.get_running_loop()
        try:
            audio = await loop.run_in_executor(None, decode_audio, data)
        except UndecodableAudio as error:
            raise Problem(415, "unsupported_media", str(error)) from error
        utterances = await loop.run_in_executor(None, self.engines.segment, audio)
        kept = [u for u in utterances if u.duration >= MIN_SECONDS]
        if not kept:
            return [], []
        results: dict[int, SpeechResult] = {}
        if language is None:
            longest = max(range(len(kept)), key=lambda i: kept[i].duration)
            [results[longest]] = await self._translate([(kept[longest].audio, None, targets)])
            language = results[longest].source_lang
        todo = [i for i in range(len(kept)) if i not in results]
        for start in range(0, len(todo), SEGMENTS_PER_CALL):
            batch = todo[start : start + SEGMENTS_PER_CALL]
            found = await self._translate([(kept[i].audio, language, targets) for i in batch])
            results.update(zip(batch, found, strict=True))
        spans = [(u.start, u.end) for u in kept]
        return spans, [results[i] for i in range(len(kept))]

    async def _translate(
        self, items: Sequence[tuple[Audio, str | None, Sequence[str]]]
    ) -> list[SpeechResult]:
        """Through the rooms' micro-batcher, so the model sees one queue: REST segments
        share batches with live utterances, and a room's waits for one batch at most."""
        submitted = [
            asyncio.ensure_future(self.blocks.translate.batcher.submit(
                (audio, source, tuple(targets), None)
            ))
            for audio, source, targets in items
        ]
        try:
            return list(await asyncio.gather(*submitted))
        finally:
            for item in submitted:
                item.cancel()  # after a failure, the others leave the queue too

    async def speak(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        text = _text_field(body, "text")
        if len(text) > MAX_SPEAK_CHARS:
            raise Problem(422, "invalid_request", f"`text` over {MAX_SPEAK_CHARS} characters")
        lang = _language(body.get("lang"), self.spoken, "lang", "spoken")
        voice = body.get("voice")
        if voice is not None and not (isinstance(voice, str) and voice):
            raise Problem(422, "invalid_request", "`voice` must be a voice name")
        if self.engines.speech_out(lang) == "kokoro":
            table = KOKORO_LANGUAGES[lang]
            voice = voice or (table.female + table.male)[0]
        elif voice is not None:
            raise Problem(422, "invalid_request",
                          f"{LANGUAGES[lang].name} is spoken in one voice; omit `voice`")
        try:
            audio, rate = await self.blocks.speak.synthesize(text, lang, voice)
        except ValueError as error:  # an unknown voice, in the engine's words
            raise Problem(422, "invalid_request", str(error)) from error
        wav = await asyncio.get_running_loop().run_in_executor(None, wav_bytes, audio, rate)
        return web.Response(body=wav, content_type="audio/wav")


def _answering_problems(handler: Handler) -> Handler:
    """Turns refusals into their JSON error; anything else stays a server error."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Problem as problem:
            return problem.response()
        except TranslationError as error:
            return Problem(422, error.code, str(error)).response()
        except (WorkerClosed, BatcherClosed):
            return Problem(503, "shutting_down", "the server is shutting down").response()
        except (TranslatorBusy, BatcherFull) as error:
            return Problem(503, "busy", str(error)).response()

    return handle


def add_rest_routes(
    app: web.Application,
    engines: Engines,
    blocks: PipelineEngines,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
) -> None:
    """Mounts the REST endpoints on `app` (before it starts).

    `blocks` are the live rooms' own (around the same engines): REST speech shares
    their bounded synthesis slots, so it queues with the rooms instead of beside them.
    """
    handlers = _Handlers(engines, blocks, max_upload_bytes)
    routes: dict[str, Handler] = {
        "/translate": handlers.translate,
        "/translate/batch": handlers.translate_batch,
        "/transcribe": handlers.transcribe,
        "/transcribe-translate": handlers.transcribe_translate,
        "/speak": handlers.speak,
    }
    for path, handler in routes.items():
        app.router.add_post(path, _answering_problems(handler))
