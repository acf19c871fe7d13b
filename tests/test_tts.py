"""Kokoro through kokoro-onnx with its real weights, heard back by whisper-base."""

from __future__ import annotations

import asyncio
import itertools
import math
import threading

import numpy as np
import pytest

from ai.casting import FEMALE_FROM_HZ, VoiceCasting, estimate_pitch
from ai.kokoro_voices import BRITISH_ENGLISH, KOKORO_LANGUAGES
from ai.models import TestAssets
from ai.resample import SPEECH_RATE, to_speech_rate
from ai.tts import KokoroTTS, split_for_speech
from ai.tts_pace import SynthesisPace
from ai.utterance import PIPELINE_RATE
from tests.fixtures.kokoro import WhisperOracle, error_rate, words
from tests.fixtures.speech import espeak

pytestmark = pytest.mark.slow

FIFTEEN_WORDS = "The weather today is sunny and warm, so we will have lunch outside in the garden."
SPANISH = "Mañana por la mañana vamos a visitar el museo de arte con nuestros amigos."


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio))))


def test_it_speaks_the_kokoro_languages_and_leaves_the_rest(kokoro_tts: KokoroTTS) -> None:
    for lang, table in KOKORO_LANGUAGES.items():
        assert kokoro_tts.speaks(lang), lang
        assert kokoro_tts.languages[lang] == table, "a voice in the table is not in the file"
    for lang in ("deu", "kor", "rus", "xyz"):
        assert not kokoro_tts.speaks(lang)


def test_every_voice_named_in_the_table_exists(test_assets: TestAssets) -> None:
    shipped = set(np.load(test_assets.kokoro_voices).files)
    tables = [*KOKORO_LANGUAGES.values(), BRITISH_ENGLISH]

    named = {voice for table in tables for voice in table.female + table.male}

    assert named <= shipped, named - shipped
    for table in tables:
        assert all(v[1] == "f" for v in table.female) and all(v[1] == "m" for v in table.male)


@pytest.mark.parametrize(("lang", "voice", "text"), [
    ("eng", "af_heart", FIFTEEN_WORDS),
    ("eng", "am_michael", FIFTEEN_WORDS),
    ("spa", "ef_dora", SPANISH),
])
def test_a_sentence_is_spoken_so_that_its_words_come_back(
    kokoro_tts: KokoroTTS, whisper: WhisperOracle, lang: str, voice: str, text: str
) -> None:
    audio = kokoro_tts.synthesize(text, lang, voice)

    seconds = len(audio) / SPEECH_RATE
    assert audio.dtype == np.float32
    assert 0.15 <= seconds / len(words(text)) <= 0.6, seconds
    assert rms(audio) > 0.02 and np.max(np.abs(audio)) <= 1.0
    heard = whisper.transcribe(audio, lang)
    assert error_rate(words(text), words(heard)) <= 0.2, heard


async def test_stream_yields_a_chunk_per_sentence_in_order(
    kokoro_tts: KokoroTTS, whisper: WhisperOracle
) -> None:
    sentences = ["Good morning.", "The meeting starts at ten.", "Please bring your notes."]

    chunks = [c async for c in kokoro_tts.stream(" ".join(sentences), "eng", "af_bella")]

    assert len(chunks) == len(sentences)
    for chunk, sentence in zip(chunks, sentences, strict=True):
        heard = whisper.transcribe(chunk, "eng")
        assert error_rate(words(sentence), words(heard)) <= 0.25, (sentence, heard)
    # The first chunk is the first sentence alone: it was ready before the rest was made.
    alone = kokoro_tts.synthesize(sentences[0], "eng", "af_bella")
    pause = round(kokoro_tts.settings.sentence_pause * SPEECH_RATE)
    assert len(chunks[0]) == len(alone) + pause


async def test_closing_a_stream_early_cancels_the_piece_queued_ahead(
    kokoro_tts: KokoroTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    spoken: list[str] = []
    worker_free = threading.Event()
    real_speak = kokoro_tts._speak

    def speak(piece: str, lang: str, voice: str, pause: float) -> np.ndarray:
        if not spoken:
            # Keeps the worker busy after the first piece, so the piece made ahead is
            # still queued (not yet running) when the stream is closed.
            kokoro_tts._worker.submit(-math.inf, worker_free.wait, 30)
        spoken.append(piece)
        return real_speak(piece, lang, voice, pause)

    monkeypatch.setattr(kokoro_tts, "_speak", speak)
    stream = kokoro_tts.stream("One. Two. Three. Four. Five.", "eng", "af_heart")
    try:
        first = await anext(stream)
        await stream.aclose()
    finally:
        worker_free.set()
    # Queued after the piece made ahead: it runs after it, if that runs.
    await asyncio.wrap_future(kokoro_tts._worker.submit(math.inf, lambda: None))

    assert len(first) > 0
    assert spoken == ["One."]
    # The engine is free for the next request.
    after = [chunk async for chunk in kokoro_tts.stream("Six.", "eng", "af_heart")]
    assert len(after) == 1 and len(after[0]) > 0


async def test_a_translation_being_heard_is_not_stopped_for_another_to_start(
    kokoro_tts: KokoroTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kokoro_tts, "pace", paced(0.67))
    monkeypatch.setattr(kokoro_tts, "_clock", lambda: 1000.0)
    spoken: list[str] = []
    worker_free = threading.Event()
    real_speak = kokoro_tts._speak

    def speak(piece: str, lang: str, voice: str, pause: float) -> np.ndarray:
        if not spoken:  # holds the worker after the first piece, so the next ones queue
            kokoro_tts._worker.submit(-math.inf, worker_free.wait, 30)
        spoken.append(piece)
        return real_speak(piece, lang, voice, pause)

    monkeypatch.setattr(kokoro_tts, "_speak", speak)
    heard = kokoro_tts.stream(
        "The train leaves the station at three in the afternoon.", "eng", "af_heart"
    )
    waiting = kokoro_tts.stream("Good morning everyone.", "eng", "af_bella")
    try:
        await anext(heard)  # its next piece is due when this one has played (1.3 s)
        starting = asyncio.ensure_future(anext(waiting))  # due in 0.5 s, patience 1.5 s
        await asyncio.sleep(0)  # lets `starting` submit its first piece, behind the hold
        worker_free.set()
        await anext(heard)
        await starting
    finally:
        worker_free.set()
        await heard.aclose()
        await waiting.aclose()
    # Its next piece, due first, went before the other's first piece. (The piece after
    # that is asked for only once this one is made, so it may come before or after it.)
    assert spoken[:2] == ["The train leaves", "the station at three"]
    assert "Good morning everyone." in spoken[2:]


def test_japanese_goes_through_misaki(kokoro_tts: KokoroTTS, whisper: WhisperOracle) -> None:
    import pyopenjtalk

    text = "明日の会議は午後三時から始まります。"
    audio = kokoro_tts.synthesize(text, "jpn", "jf_alpha")

    heard = whisper.transcribe(audio, "jpn")
    expected, got = pyopenjtalk.g2p(text, kana=True), pyopenjtalk.g2p(heard, kana=True)
    assert error_rate(list(expected), list(got)) <= 0.35, (heard, got, expected)


def test_chinese_goes_through_misaki(kokoro_tts: KokoroTTS, whisper: WhisperOracle) -> None:
    from pypinyin import lazy_pinyin

    text = "我们明天早上在会议室开会。"
    audio = kokoro_tts.synthesize(text, "cmn", "zf_xiaobei")

    heard = whisper.transcribe(audio, "cmn")
    expected, got = words(" ".join(lazy_pinyin(text))), words(" ".join(lazy_pinyin(heard)))
    assert error_rate(expected, got) <= 0.3, (heard, got, expected)


async def test_bad_requests_are_refused_before_any_work(kokoro_tts: KokoroTTS) -> None:
    with pytest.raises(ValueError, match="voice"):
        kokoro_tts.synthesize("Hello.", "eng", "xx_nobody")
    with pytest.raises(ValueError, match="deu"):
        [c async for c in kokoro_tts.stream("Hallo.", "deu", "af_heart")]
    assert [c async for c in kokoro_tts.stream(" ... !! ", "eng", "af_heart")] == []


def test_kokoro_voices_are_judged_by_their_pitch(kokoro_tts: KokoroTTS) -> None:
    for voice, female in [("af_heart", True), ("af_sarah", True),
                          ("am_michael", False), ("am_adam", False)]:
        speech = kokoro_tts.synthesize(FIFTEEN_WORDS, "eng", voice)
        pitch = estimate_pitch(speech[::3].copy())  # 48 kHz to 16 kHz; the band is low
        assert pitch is not None
        assert (pitch >= FEMALE_FROM_HZ) is female, (voice, pitch)


# --- Voice casting, on espeak voices of known pitch ---------------------------------------


@pytest.fixture(scope="module")
def low_voice() -> np.ndarray:
    return espeak("I think we should start the meeting now.", "en-us+m3")


@pytest.fixture(scope="module")
def high_voice() -> np.ndarray:
    return espeak("I think we should start the meeting now.", "en-us+f3")


def test_pitch_of_known_tones_and_voices(low_voice: np.ndarray, high_voice: np.ndarray) -> None:
    t = np.arange(PIPELINE_RATE) / PIPELINE_RATE
    for f0 in (110.0, 220.0):
        sawtooth = ((t * f0) % 1.0 - 0.5).astype(np.float32)
        assert estimate_pitch(sawtooth) == pytest.approx(f0, rel=0.03)
    low, high = estimate_pitch(low_voice), estimate_pitch(high_voice)
    assert low is not None and low < FEMALE_FROM_HZ
    assert high is not None and high >= FEMALE_FROM_HZ
    assert estimate_pitch(np.zeros(PIPELINE_RATE, np.float32)) is None


def test_casting_matches_gender_and_keeps_voices_distinct_and_stable(
    low_voice: np.ndarray, high_voice: np.ndarray
) -> None:
    casting = VoiceCasting(KOKORO_LANGUAGES)
    english = KOKORO_LANGUAGES["eng"]

    dan = casting.voice_for("dan", "eng", low_voice)
    ann = casting.voice_for("ann", "eng", high_voice)
    eve = casting.voice_for("eve", "eng", high_voice)
    bob = casting.voice_for("bob", "eng", low_voice)

    assert dan in english.male and bob in english.male
    assert ann in english.female and eve in english.female
    assert len({dan, ann, eve, bob}) == 4
    # Stable: later utterances, even odd ones, never change a cast voice.
    assert casting.voice_for("ann", "eng", low_voice) == ann
    assert casting.voice_for("dan", "eng") == dan
    # Per language, with the gender judged once.
    assert casting.voice_for("dan", "spa") in KOKORO_LANGUAGES["spa"].male
    assert casting.gender_of("ann") == "female"


def test_casting_reuses_voices_when_a_language_runs_out(high_voice: np.ndarray) -> None:
    casting = VoiceCasting(KOKORO_LANGUAGES)

    cast = [casting.voice_for(f"p{i}", "fra", high_voice) for i in range(3)]

    assert cast == ["ff_siwis"] * 3
    with pytest.raises(ValueError, match="deu"):
        casting.voice_for("p0", "deu", high_voice)


def test_a_speaker_without_clear_pitch_still_gets_an_unused_voice() -> None:
    casting = VoiceCasting(KOKORO_LANGUAGES)
    silence = np.zeros(PIPELINE_RATE, np.float32)

    first = casting.voice_for("a", "eng", silence)
    second = casting.voice_for("b", "eng", None)

    assert first != second
    assert casting.gender_of("a") is None


# --- Text splitting and resampling ---------------------------------------------------------


def test_text_is_cut_into_sentences_and_long_ones_into_clauses_then_phrases() -> None:
    english = split_for_speech("Hi there. How are you? Fine!")
    assert english == ["Hi there.", "How are you?", "Fine!"]
    chinese = split_for_speech("你好。今天天气很好！我们走吧。")
    assert chinese == ["你好。", "今天天气很好！", "我们走吧。"]
    long_first = "When the meeting ends, we will walk to the station, and then take the train home."
    assert split_for_speech(long_first, first_chars=40) == [
        "When the meeting ends,", "we will walk to the station, and then take the train home."
    ]
    assert split_for_speech(" ... ?! ") == []
    no_commas = "we will walk to the station and then take the train home before it gets dark"
    assert split_for_speech(no_commas, first_chars=40) == [
        "we will walk to the station", "and then take the train home before it gets dark"
    ]
    assert split_for_speech("茶" * 80, first_chars=40) == ["茶" * 80]


def test_the_first_piece_of_a_short_sentence_is_a_few_words_cut_where_a_phrase_starts() -> None:
    # 55 characters: spoken whole before, so Kokoro took the whole sentence's time.
    assert split_for_speech("The train leaves the station at three in the afternoon.") == [
        "The train leaves", "the station at three in the afternoon."
    ]
    assert split_for_speech(
        "Good morning everyone, today we are going to talk about the new project."
    ) == ["Good morning everyone,", "today we are going to talk about the new project."]
    assert split_for_speech(
        "Mañana por la mañana vamos a visitar el museo de arte con nuestros amigos."
    )[0] == "Mañana por la mañana vamos"


def test_pieces_grow_so_each_is_ready_while_the_one_before_plays() -> None:
    text = ("Tomorrow morning the whole team will travel to the coast by train and we will "
            "stay in a small hotel near the harbour for the rest of the week.")
    pieces = split_for_speech(text, first_chars=25, next_chars=lambda n: 2 * n)

    assert pieces == [
        "Tomorrow morning", "the whole team will travel", "to the coast by train and we will stay",
        "in a small hotel near the harbour for the rest of the week.",
    ]
    for before, after in itertools.pairwise(pieces):
        assert len(after) <= 2 * len(before), (before, after)
    # Growing three times per piece needs fewer cuts.
    assert len(split_for_speech(text, first_chars=25, next_chars=lambda n: 3 * n)) < len(pieces)


def test_no_cut_leaves_a_short_piece_after_the_first() -> None:
    # Cut into "El tren sale", "de la estación a las tres", "de la tarde.", Kokoro said
    # "de la charde" and whisper-base lost "afternoon".
    assert split_for_speech("El tren sale de la estación a las tres de la tarde.") == [
        "El tren sale", "de la estación a las tres de la tarde."
    ]
    assert split_for_speech("So we need 3,000 people for the event.") == [
        "So we need 3,000 people for the event."
    ]


def test_a_cut_leaves_no_lone_word_and_does_not_break_a_number() -> None:
    for text in ("So we will meet at the station.", "Yes we can.", "Well, that is fine by me."):
        for piece in split_for_speech(text, first_chars=8, next_chars=lambda n: 2 * n):
            assert len(piece.split()) >= 2, (text, piece)
    assert split_for_speech(
        "So we need 3,000 people for the event.", first_chars=10, next_chars=lambda n: 2 * n
    ) == [
        "So we need", "3,000 people", "for the event."
    ]


def paced(rate: float, seconds_per_char: float = 0.065) -> SynthesisPace:
    """A pace that has measured calls of 0.5-3 s of audio made at `rate`."""
    pace = SynthesisPace()
    pace.record("eng", 6, 0.8, 3.0)  # the first call loads the phonemizer: not counted
    for audio in (0.5, 1.0, 2.0, 3.0):
        pace.record("eng", round(audio / seconds_per_char), audio, rate * (audio + 0.3))
    return pace


def test_the_pace_is_measured_on_recent_calls_and_starts_from_a_cautious_prior() -> None:
    fresh = SynthesisPace(overhead=0.3)
    assert fresh.seconds_to_make(1.0) >= 1.0  # unmeasured: no faster than real time
    pace = paced(0.67)
    assert pace.rate() == pytest.approx(0.67)
    assert pace.seconds_to_make(1.5) == pytest.approx(0.67 * 1.8)
    assert pace.audio_made_within(0.67 * 2.3) == pytest.approx(2.0)
    assert pace.audio_made_within(0.1) == 0.0  # the fixed cost alone is more
    assert pace.audio_seconds("eng", 100) == pytest.approx(6.5, rel=0.02)
    assert pace.audio_seconds("cmn", 100) == pytest.approx(7.0)  # never heard: the prior
    for _ in range(16):  # the machine got busy: only recent calls count
        pace.record("eng", 15, 1.0, 1.3 * 1.3)
    assert pace.rate() == pytest.approx(1.3)


def test_the_engine_measures_its_pace_on_its_own_calls(
    kokoro_tts: KokoroTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    pace = SynthesisPace()
    monkeypatch.setattr(kokoro_tts, "pace", pace)
    kokoro_tts.synthesize("Hello there.", "eng", "af_heart")  # loads English: not counted
    assert pace.rate() == SynthesisPace().rate()
    audio = kokoro_tts.synthesize("The train leaves the station.", "eng", "af_heart")
    assert pace.rate() != SynthesisPace().rate()
    assert pace.audio_seconds("eng", 29) == pytest.approx(len(audio) / SPEECH_RATE, rel=0.01)


def test_streamed_pieces_follow_the_measured_pace(
    kokoro_tts: KokoroTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = ("The train leaves the station at three in the afternoon, "
            "and it arrives at the coast at five.")
    pause = kokoro_tts.settings.sentence_pause

    # Two quiet cores: a first piece of about two words, then pieces as long as can be
    # made while the one before plays.
    monkeypatch.setattr(kokoro_tts, "pace", paced(0.67))
    plan = kokoro_tts._plan(text, "eng", "af_heart")
    assert [p for p, _ in plan] == [
        "The train leaves", "the station at three", "in the afternoon,", "and it arrives",
        "at the coast at five.",
    ]
    assert [after for _, after in plan] == [pause] * 4 + [0.0]
    settings = kokoro_tts.settings
    assert kokoro_tts._stall(plan, "eng", settings.pace_margin) <= settings.stall_tolerance

    # Four translations spoken at once take turns on the one synthesizer: short pieces
    # would starve, so the sentence is spoken whole.
    assert kokoro_tts._plan(text, "eng", "af_heart", sharing=4) == [(text, 0.0)]

    # A synthesizer slower than real time cannot keep ahead of short pieces: the first
    # piece is long enough for what follows to be made while it plays.
    monkeypatch.setattr(kokoro_tts, "pace", paced(1.6))
    assert [p for p, _ in kokoro_tts._plan(text, "eng", "af_heart")] == [
        "The train leaves the station at three in the afternoon,", "and it arrives",
        "at the coast at five.",
    ]

    # Nobody waits for `synthesize`'s first audio: it speaks each sentence whole.
    whole = kokoro_tts._plan(text, "eng", "af_heart", whole=True)
    assert whole == [(text, 0.0)]


def test_every_rate_is_brought_to_48k_without_moving_pitch() -> None:
    for rate in (16_000, 24_000):
        t = np.arange(rate) / rate
        tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
        out = to_speech_rate(tone, rate)
        spectrum = np.abs(np.fft.rfft(out))
        assert len(out) == SPEECH_RATE
        assert np.argmax(spectrum) * SPEECH_RATE / len(out) == pytest.approx(1000, abs=2)
        assert rms(out) == pytest.approx(rms(tone), rel=0.02)
    with pytest.raises(ValueError, match="mono"):
        to_speech_rate(np.zeros((10, 2), np.float32), 24_000)
