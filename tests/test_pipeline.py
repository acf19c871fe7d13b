"""The pipeline's own logic, with small deterministic engines standing in behind the Protocols.

The engines here only make results that can be traced back to their input;
the real engines have their own tests, and the end-to-end run uses them.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import numpy as np
import pytest

from ai.engines import SpeechResult
from ai.pipeline import PipelineEngines, RoomPipeline, order_key
from ai.speakers import SpeakerRegistry
from ai.utterance import PIPELINE_RATE, Audio, Stage, Utterance
from media.frames import FRAME_SAMPLES, MIX_RATE
from media.mixer import RoomMixer
from signaling.captions import Announcer
from signaling.metrics import Metrics
from signaling.room_sink import RoomSink
from signaling.rooms import Room as SignalingRoom

KOKORO = frozenset({"eng", "spa"})
"""What the test synthesizer speaks; "deu" goes to the translator's vocoder, "afr" is text only."""


def speech(seconds: float = 1.0, level: float = 0.1) -> Audio:
    return np.full(round(seconds * PIPELINE_RATE), level, dtype=np.float32)


class Translator:
    """Transcript names the audio's length; each translation names its language.

    Audio whose first sample is negative is refused, like unusable input.
    `gate` holds every batch until set.
    """

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, str | None, tuple[str, ...]]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.from_text: set[str] = set()
        """Targets written from the transcript, as the cascade's NLLB does: left out under
        `text_later`, then written by `translate_text`, which `text_gate` holds."""
        self.text_gate = asyncio.Event()
        self.text_gate.set()
        self.text_calls: list[tuple[list[str], str, str]] = []
        self.text_broken = False

    async def translate_speech(
        self,
        batch: Sequence[tuple[Audio, str | None, Sequence[str]]],
        *,
        priors: Sequence[str | None] = (),
        text_later: bool = False,
    ) -> list[SpeechResult]:
        self.batches.append([(len(audio), src, tuple(targets)) for audio, src, targets in batch])
        await self.gate.wait()
        if any(audio[0] < 0 for audio, _, _ in batch):
            raise ValueError("audio is unusable")
        return [
            SpeechResult(
                transcript=f"said {len(audio)}",
                source_lang=src or "eng",
                translations={
                    lang: f"[{lang}] said {len(audio)}" for lang in targets
                    if not (text_later and lang in self.from_text)
                },
            )
            for audio, src, targets in batch
        ]

    async def translate_text(
        self, texts: Sequence[str], source_lang: str, target_lang: str
    ) -> list[str]:
        self.text_calls.append((list(texts), source_lang, target_lang))
        await self.text_gate.wait()
        if self.text_broken:
            raise RuntimeError("text model broke")
        return [f"[{target_lang}] {text}" for text in texts]

    async def speak(self, text: str, lang: str) -> tuple[Audio, int]:
        return np.full(1600, 0.3, dtype=np.float32), PIPELINE_RATE


class Synthesizer:
    """Two chunks per text. A language in `held` waits for its gate; one in `broken` fails."""

    def __init__(self) -> None:
        self.voices: list[tuple[str, str]] = []
        self.held: dict[str, asyncio.Event] = {}
        self.broken: set[str] = set()
        self.open_streams = 0

    def speaks(self, lang: str) -> bool:
        return lang in KOKORO

    async def stream(self, text: str, lang: str, voice: str) -> AsyncIterator[Audio]:
        self.voices.append((lang, voice))
        self.open_streams += 1
        try:
            yield np.full(FRAME_SAMPLES, 0.2, dtype=np.float32)
            if lang in self.held:
                await self.held[lang].wait()
            if lang in self.broken:
                raise RuntimeError("synthesizer broke")
            yield np.full(FRAME_SAMPLES, 0.2, dtype=np.float32)
        finally:
            self.open_streams -= 1


class Identifier:
    def __init__(self, broken: bool = False) -> None:
        self.broken = broken

    async def identify(self, utterance: Utterance) -> tuple[str, str | None]:
        if self.broken:
            raise RuntimeError("no voiceprint")
        return f"spk-{utterance.source_id}", utterance.source_id.title()


async def cast_voice(speaker_id: str, lang: str, audio: Audio) -> str:
    return f"{lang}/{speaker_id}"


class Sink:
    """Records every event as a tuple."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def _record(self, *event: object) -> None:
        self.events.append(event)

    def on_dispatch(self, utterance: Utterance, targets: Sequence[str], order_key: float) -> None:
        self._record("dispatch", utterance.id, tuple(targets))

    def on_caption(self, utterance: Utterance, lang: str, text: str, final: bool) -> None:
        self._record("caption", utterance.id, lang, text, final)

    def on_speech(self, utterance: Utterance, lang: str, chunk: Audio) -> None:
        self._record("speech", utterance.id, lang, len(chunk))

    def on_speech_end(self, utterance: Utterance, lang: str) -> None:
        self._record("speech_end", utterance.id, lang)

    def on_error(self, utterance: Utterance, message: str, lang: str | None) -> None:
        self._record("error", utterance.id, lang, message)

    def on_discarded(self, utterance: Utterance) -> None:
        self._record("discarded", utterance.id)

    def on_finished(self, utterance: Utterance) -> None:
        self._record("finished", utterance.id)

    def of(self, utterance: Utterance) -> list[tuple[object, ...]]:
        return [event[:1] + event[2:] for event in self.events if event[1] == utterance.id]

    async def until(self, done: Callable[[], bool]) -> None:
        """Polls, because conditions also read engine state that signals nothing."""
        async with asyncio.timeout(30):
            while not done():  # noqa: ASYNC110
                await asyncio.sleep(0.002)

    async def until_finished(self, *utterances: Utterance) -> None:
        ids = {utt.id for utt in utterances}
        await self.until(lambda: ids <= {e[1] for e in self.events if e[0] == "finished"})


class Room:
    def __init__(self, engines: PipelineEngines, langs: set[str], **options: int) -> None:
        self.langs = langs
        self.sink = Sink()
        self.identifier = Identifier()
        self.pipeline = RoomPipeline(
            engines, self.identifier, lambda: self.langs, cast_voice, self.sink, **options
        )


@pytest.fixture
def translator() -> Translator:
    return Translator()


@pytest.fixture
def synthesizer() -> Synthesizer:
    return Synthesizer()


@pytest.fixture
async def engines(translator: Translator, synthesizer: Synthesizer) -> PipelineEngines:
    return PipelineEngines(translator, synthesizer)


def other_tasks() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def test_what_is_written_from_the_speech_does_not_wait_for_the_text_model(
    engines: PipelineEngines, translator: Translator
) -> None:
    """As the cascade writes English with Whisper and Spanish with NLLB from the
    transcript: the English caption and speech go out while the Spanish is still being
    written, and the Spanish follows from the transcript."""
    translator.from_text = {"spa"}
    translator.text_gate.clear()
    room = Room(engines, {"eng", "spa"})
    utt = Utterance(speech(), 0.0, 1.0, source_id="pierre", source_lang="fra")
    assert room.pipeline.submit(utt)
    await room.sink.until(lambda: ("speech_end", "eng") in room.sink.of(utt))
    assert ("caption", "eng", "[eng] said 16000", True) in room.sink.of(utt)
    assert not [e for e in room.sink.of(utt) if "spa" in e]
    assert translator.text_calls == [(["said 16000"], "fra", "spa")]

    translator.text_gate.set()
    await room.sink.until_finished(utt)
    events = room.sink.of(utt)
    assert ("caption", "spa", "[spa] said 16000", True) in events
    assert ("speech_end", "spa") in events
    assert not [e for e in events if e[0] == "error"]


async def test_a_failed_text_translation_fails_its_language_alone(
    engines: PipelineEngines, translator: Translator
) -> None:
    translator.from_text = {"spa"}
    translator.text_broken = True
    room = Room(engines, {"eng", "spa"})
    utt = Utterance(speech(), 0.0, 1.0, source_id="pierre", source_lang="fra")
    assert room.pipeline.submit(utt)
    await room.sink.until_finished(utt)
    events = room.sink.of(utt)
    assert ("speech_end", "eng") in events
    assert ("error", "spa", "translation into spa failed: text model broke") in events
    assert not [e for e in events if e[0] in ("caption", "speech") and e[1] == "spa"]


async def test_a_detected_language_is_captioned_with_the_transcript_and_not_spoken(
    engines: PipelineEngines, translator: Translator
) -> None:
    """Nothing pinned: every listening language is a target until the translator says
    which one was spoken (the fake detects English); that one gets the transcript and
    no speech, since its listeners hear the speaker's own voice."""
    room = Room(engines, {"eng", "spa"})
    utt = Utterance(speech(), 0.0, 1.0, source_id="bruno", declared_lang="spa")
    assert room.pipeline.submit(utt)
    await room.sink.until_finished(utt)

    events = room.sink.of(utt)
    assert events[0] == ("dispatch", ("eng", "spa"))
    assert translator.batches[-1] == [(16000, None, ("eng", "spa"))]
    assert utt.source_lang == "eng"
    assert ("caption", "eng", "said 16000", True) in events
    assert ("caption", "spa", "[spa] said 16000", True) in events
    assert [e[1] for e in events if e[0] == "speech"] == ["spa", "spa"]
    assert sorted(str(e[1]) for e in events if e[0] == "speech_end") == ["eng", "spa"]


async def test_captions_then_speech_in_every_language_someone_hears(
    engines: PipelineEngines, synthesizer: Synthesizer
) -> None:
    room = Room(engines, {"eng", "spa", "deu", "afr"})
    utt = Utterance(speech(), 0.0, 1.0, source_id="alice", source_lang="eng")
    assert room.pipeline.submit(utt)
    await room.sink.until_finished(utt)

    events = room.sink.of(utt)
    assert events[0] == ("dispatch", ("afr", "deu", "spa"))
    captions = [e for e in events if e[0] == "caption"]
    assert captions == [
        ("caption", "eng", "said 16000", False),
        ("caption", "afr", "[afr] said 16000", True),
        ("caption", "deu", "[deu] said 16000", True),
        ("caption", "spa", "[spa] said 16000", True),
        ("caption", "eng", "said 16000", True),
    ]
    assert events.index(captions[-1]) < min(i for i, e in enumerate(events) if e[0] == "speech")
    speech_events = {lang: [e[2] for e in events if e[0] == "speech" and e[1] == lang]
                     for lang in ("afr", "deu", "spa")}
    vocoded = 1600 * MIX_RATE // PIPELINE_RATE
    assert speech_events == {"afr": [], "deu": [vocoded], "spa": [FRAME_SAMPLES] * 2}
    assert sorted(str(e[1]) for e in events if e[0] == "speech_end") == ["afr", "deu", "spa"]
    assert events[-1] == ("finished",)

    assert (utt.speaker_id, utt.speaker_name) == ("spk-alice", "Alice")
    assert synthesizer.voices == [("spa", "spa/spk-alice")]
    assert utt.translations["spa"] == "[spa] said 16000" and utt.error is None
    for stage in (Stage.VAD_END, Stage.VOICEPRINT, Stage.TRANSLATED, Stage.FIRST_TTS):
        assert stage in utt.stamps


async def test_only_languages_the_loaded_vocoder_has_are_voiced_by_it(
    translator: Translator, synthesizer: Synthesizer
) -> None:
    engines = PipelineEngines(translator, synthesizer, seamless_spoken=frozenset())
    room = Room(engines, {"eng", "deu"})
    utt = Utterance(speech(), 0.0, 1.0, source_id="alice", source_lang="eng")
    assert room.pipeline.submit(utt)
    await room.sink.until_finished(utt)
    events = room.sink.of(utt)
    assert ("caption", "deu", "[deu] said 16000", True) in events
    assert not [e for e in events if e[0] == "speech"] and ("speech_end", "deu") in events


async def test_targets_are_taken_at_dispatch_so_set_lang_applies_to_the_next_utterance(
    engines: PipelineEngines, translator: Translator
) -> None:
    room = Room(engines, {"eng", "spa"})
    translator.gate.clear()
    first = Utterance(speech(), 0.0, 1.0, source_id="alice", source_lang="eng")
    room.pipeline.submit(first)
    await room.sink.until(lambda: len(translator.batches) == 1)

    room.langs = {"eng", "fra"}  # bob switched from Spanish to French mid-translation
    translator.gate.set()
    second = Utterance(speech(2.0), 1.5, 3.5, source_id="alice", source_lang="eng")
    await room.sink.until_finished(first)
    room.pipeline.submit(second)
    await room.sink.until_finished(second)

    assert room.sink.of(first)[0] == ("dispatch", ("spa",))
    assert room.sink.of(second)[0] == ("dispatch", ("fra",))
    assert [batch[0][2] for batch in translator.batches] == [("spa",), ("fra",)]


async def test_a_speaker_alone_in_their_language_still_gets_a_caption(
    engines: PipelineEngines,
) -> None:
    room = Room(engines, {"eng"})
    utt = Utterance(speech(), 0.0, 1.0, source_id="alice", source_lang="eng")
    room.pipeline.submit(utt)
    await room.sink.until_finished(utt)
    assert room.sink.of(utt) == [
        ("dispatch", ()),
        ("caption", "eng", "said 16000", False),
        ("caption", "eng", "said 16000", True),
        ("finished",),
    ]


async def test_utterances_from_several_rooms_share_one_translator_batch(
    engines: PipelineEngines, translator: Translator
) -> None:
    rooms = [Room(engines, {"eng", "spa"}), Room(engines, {"spa", "eng"})]
    utts = [
        Utterance(speech(1.0), 0.0, 1.0, source_id="alice", source_lang="eng"),
        Utterance(speech(2.0), 0.0, 2.0, source_id="bruno", source_lang="spa"),
    ]
    for room, utt in zip(rooms, utts, strict=True):
        room.pipeline.submit(utt)
    for room, utt in zip(rooms, utts, strict=True):
        await room.sink.until_finished(utt)
    assert translator.batches == [[(16000, "eng", ("spa",)), (32000, "spa", ("eng",))]]


async def test_a_translator_failure_fails_that_utterance_alone(
    engines: PipelineEngines, translator: Translator
) -> None:
    room = Room(engines, {"eng", "spa"})
    bad = Utterance(speech(level=-0.1), 0.0, 1.0, source_id="alice", source_lang="eng")
    good = Utterance(speech(), 0.0, 1.0, source_id="bob", source_lang="eng")
    room.pipeline.submit(bad)
    room.pipeline.submit(good)
    await room.sink.until_finished(bad, good)

    bad_events = room.sink.of(bad)
    assert bad_events[0] == ("dispatch", ("spa",))
    assert bad_events[1][:2] == ("error", None) and "audio is unusable" in str(bad_events[1][2])
    assert bad_events[2:] == [("finished",)]
    assert bad.error is not None and "audio is unusable" in bad.error
    assert ("speech_end", "spa") in room.sink.of(good) and good.error is None
    assert len(translator.batches[0]) == 2  # they were batched, then retried singly


async def test_a_speech_failure_fails_that_language_alone(
    engines: PipelineEngines, synthesizer: Synthesizer
) -> None:
    synthesizer.broken.add("spa")
    room = Room(engines, {"eng", "spa", "deu"})
    utt = Utterance(speech(), 0.0, 1.0, source_id="alice", source_lang="deu")
    room.pipeline.submit(utt)
    await room.sink.until_finished(utt)

    events = room.sink.of(utt)
    errors = [e for e in events if e[0] == "error"]
    assert len(errors) == 1 and errors[0][1] == "spa" and "synthesizer broke" in str(errors[0][2])
    assert ("speech_end", "eng") in events and ("speech_end", "spa") not in events
    assert synthesizer.open_streams == 0


async def test_an_unknown_speaker_is_still_translated_and_voiced(
    engines: PipelineEngines, synthesizer: Synthesizer
) -> None:
    room = Room(engines, {"eng", "spa"})
    room.identifier.broken = True
    utt = Utterance(speech(), 0.0, 1.0, source_id="alice", source_lang="eng")
    room.pipeline.submit(utt)
    await room.sink.until_finished(utt)
    assert utt.speaker_id is None and utt.error is None
    assert synthesizer.voices == [("spa", "spa/alice")]
    assert ("speech_end", "spa") in room.sink.of(utt)


async def test_a_speaker_too_far_ahead_is_refused_with_an_error(
    engines: PipelineEngines, translator: Translator
) -> None:
    room = Room(engines, {"eng", "spa"}, max_in_flight_per_source=1)
    translator.gate.clear()
    first = Utterance(speech(), 0.0, 1.0, source_id="alice", source_lang="eng")
    second = Utterance(speech(), 1.0, 2.0, source_id="alice", source_lang="eng")
    other = Utterance(speech(), 1.0, 2.0, source_id="bob", source_lang="eng")
    assert room.pipeline.submit(first)
    assert not room.pipeline.submit(second)
    assert room.pipeline.submit(other)
    assert [e[0] for e in room.sink.of(second)] == ["error", "finished"]
    translator.gate.set()
    await room.sink.until_finished(first, other)
    assert room.pipeline.in_flight == 0


async def test_a_leaving_speaker_is_cancelled_everywhere_and_nothing_leaks(
    engines: PipelineEngines, translator: Translator, synthesizer: Synthesizer
) -> None:
    before = other_tasks()
    room = Room(engines, {"eng", "spa"})
    synthesizer.held["spa"] = asyncio.Event()
    speaking = Utterance(speech(), 0.0, 1.0, source_id="alice", source_lang="eng")
    room.pipeline.submit(speaking)
    await room.sink.until(lambda: ("speech", "spa", FRAME_SAMPLES) in room.sink.of(speaking))

    translator.gate.clear()
    translating = Utterance(speech(2.0), 1.0, 3.0, source_id="alice", source_lang="eng")
    queued = Utterance(speech(3.0), 1.0, 4.0, source_id="alice", source_lang="eng")
    staying = Utterance(speech(), 1.0, 2.0, source_id="bob", source_lang="eng")
    room.pipeline.submit(translating)
    await room.sink.until(lambda: len(translator.batches) == 2)
    room.pipeline.submit(queued)  # waits in the batcher behind the running batch
    room.pipeline.submit(staying)
    await room.sink.until(lambda: engines.translate.batcher.pending == 2)

    events_before = {utt.id: len(room.sink.of(utt)) for utt in (speaking, translating, queued)}
    await room.pipeline.cancel_source("alice")
    assert engines.translate.batcher.pending == 1
    assert synthesizer.open_streams == 0
    synthesizer.held["spa"].set()
    translator.gate.set()
    await room.sink.until_finished(staying)

    for utt in (speaking, translating, queued):
        assert len(room.sink.of(utt)) == events_before[utt.id]  # not a word more
    assert room.pipeline.in_flight == 0
    assert translator.batches[2:] == [[(16000, "eng", ("spa",))]]  # alice's queued one never ran
    await engines.close()
    await asyncio.sleep(0)
    assert other_tasks() == before


class RoomWiredSink(Sink):
    """Records events, and passes each on to the room's real sink (signaling/room_sink.py)."""

    def __init__(self) -> None:
        super().__init__()
        mixer = RoomMixer()
        announcer = Announcer(SignalingRoom("room", mixer), SpeakerRegistry())
        self.metrics = Metrics()
        self.room = RoomSink(mixer, announcer, self.metrics)

    def on_dispatch(self, utterance: Utterance, targets: Sequence[str], order_key: float) -> None:
        super().on_dispatch(utterance, targets, order_key)
        self.room.on_dispatch(utterance, targets, order_key)

    def on_caption(self, utterance: Utterance, lang: str, text: str, final: bool) -> None:
        super().on_caption(utterance, lang, text, final)
        self.room.on_caption(utterance, lang, text, final)

    def on_speech(self, utterance: Utterance, lang: str, chunk: Audio) -> None:
        super().on_speech(utterance, lang, chunk)
        self.room.on_speech(utterance, lang, chunk)

    def on_speech_end(self, utterance: Utterance, lang: str) -> None:
        super().on_speech_end(utterance, lang)
        self.room.on_speech_end(utterance, lang)

    def on_error(self, utterance: Utterance, message: str, lang: str | None) -> None:
        super().on_error(utterance, message, lang)
        self.room.on_error(utterance, message, lang)

    def on_discarded(self, utterance: Utterance) -> None:
        super().on_discarded(utterance)
        self.room.on_discarded(utterance)

    def on_finished(self, utterance: Utterance) -> None:
        super().on_finished(utterance)
        self.room.on_finished(utterance)


async def test_speech_plays_in_the_order_utterances_ended_even_if_voiced_out_of_order(
    engines: PipelineEngines,
) -> None:
    sink = RoomWiredSink()
    pipeline = RoomPipeline(engines, Identifier(), lambda: {"eng", "spa"}, cast_voice, sink)
    earlier = Utterance(speech(), 0.0, 1.0, source_id="alice", source_lang="eng")
    later = Utterance(speech(), 0.5, 1.5, source_id="bob", source_lang="eng")
    earlier.stamp(Stage.VAD_END, 100.0)
    later.stamp(Stage.VAD_END, 101.0)
    pipeline.submit(later)
    await sink.until_finished(later)  # the later one is voiced first
    pipeline.submit(earlier)
    await sink.until_finished(earlier)
    assert order_key(earlier) < order_key(later)

    origins = []
    while (frame := sink.room.playouts["spa"].pull()) is not None:
        origins.append(frame.origin)
    assert origins == ["alice", "alice", "bob", "bob"]


async def test_an_utterance_heard_back_is_dropped_once_transcribed_and_gives_up_its_turn(
    engines: PipelineEngines,
) -> None:
    sink = RoomWiredSink()
    pipeline = RoomPipeline(
        engines, Identifier(), lambda: {"eng", "spa"}, cast_voice, sink,
        heard_back=lambda utterance: utterance.source_id == "bruno",
    )
    echo = Utterance(speech(), 0.0, 1.0, source_id="bruno", source_lang="eng")
    then = Utterance(speech(), 0.5, 1.5, source_id="alice", source_lang="eng")
    echo.stamp(Stage.VAD_END, 100.0)
    then.stamp(Stage.VAD_END, 101.0)
    pipeline.submit(echo)
    await sink.until_finished(echo)
    assert sink.of(echo) == [("dispatch", ("spa",)), ("discarded",), ("finished",)]
    assert echo.transcript == "said 16000"  # it was heard, then found to be played audio
    assert echo.id not in sink.room.playouts["spa"] and not sink.room.awaiting

    pipeline.submit(then)
    await sink.until_finished(then)
    origins = []
    while (frame := sink.room.playouts["spa"].pull()) is not None:
        origins.append(frame.origin)
    assert origins == ["alice", "alice"]  # nothing held its place
    outcomes = {s.labels["outcome"]: s.value for s in sink.metrics.utterances.collect()[0].samples
                if s.name.endswith("_total")}
    assert outcomes == {"heard_back": 1.0, "translated": 1.0}
    dropped = sink.metrics.dropped.labels("heard_back")._value.get()
    assert dropped == 1.0


async def test_bad_submissions_are_refused_clearly(engines: PipelineEngines) -> None:
    room = Room(engines, {"eng"})
    utt = Utterance(speech(), 0.0, 1.0, source_id="alice", source_lang="eng")
    room.pipeline.submit(utt)
    with pytest.raises(ValueError, match="already in flight"):
        room.pipeline.submit(utt)
    await room.pipeline.close()
    with pytest.raises(RuntimeError, match="closed"):
        room.pipeline.submit(Utterance(speech(), 0.0, 1.0, source_id="alice"))
