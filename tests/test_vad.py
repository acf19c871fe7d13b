"""The webrtcvad segmenter on espeak-ng speech whose true voiced spans are known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ai.utterance import PIPELINE_RATE, Stage, Utterance
from ai.vad import VadSegmenter, VadSettings, segment
from tests.fixtures.speech import Speech, compose

SETTINGS = VadSettings()
TOLERANCE = 0.1


def voiced_edges(utterance: Utterance, settings: VadSettings = SETTINGS) -> tuple[float, float]:
    """Where the segmenter heard speech begin and end, without its padding."""
    return utterance.start + settings.pre_roll, utterance.end - settings.post_roll


def covered(span: tuple[float, float], utterances: list[Utterance]) -> bool:
    """Every 10 ms of the span lies inside some utterance."""
    points = np.arange(span[0], span[1], 0.01)
    return all(any(u.start <= t <= u.end for u in utterances) for t in points)


@pytest.fixture(scope="module")
def three_sentences() -> Speech:
    return compose([
        0.8, "Good morning everyone, thank you for joining the call today.",
        1.2, "Let us start with the budget for next year.",
        0.9, "Any questions so far?", 1.0,
    ])


def test_boundaries_match_the_true_speech(three_sentences: Speech) -> None:
    found = segment(three_sentences.audio)

    assert len(found) == len(three_sentences.voiced)
    for utterance, (start, end) in zip(found, three_sentences.voiced, strict=True):
        heard_start, heard_end = voiced_edges(utterance)
        assert abs(heard_start - start) <= TOLERANCE, (heard_start, start)
        assert abs(heard_end - end) <= TOLERANCE, (heard_end, end)
        assert len(utterance.audio) == round((utterance.end - utterance.start) * PIPELINE_RATE)


def test_no_speech_is_dropped(three_sentences: Speech) -> None:
    found = segment(three_sentences.audio)

    for span in three_sentences.voiced:
        assert covered(span, found), span


def test_utterance_audio_is_the_stream_between_its_times(three_sentences: Speech) -> None:
    [first, *_] = segment(three_sentences.audio)

    start = round(first.start * PIPELINE_RATE)
    expected = three_sentences.audio[start : start + len(first.audio)]
    np.testing.assert_array_equal(first.audio, expected)


def test_streaming_in_20ms_packets_stamps_receive_times(three_sentences: Speech) -> None:
    segmenter = VadSegmenter(source_id="conn-1", room="room-1")
    packet = 320
    found: list[Utterance] = []
    for i, offset in enumerate(range(0, len(three_sentences.audio), packet)):
        chunk = three_sentences.audio[offset : offset + packet]
        found += segmenter.push(chunk, offset / PIPELINE_RATE, received_at=1000.0 + i)
    found += segmenter.flush()

    assert [u.source_id for u in found] == ["conn-1"] * 3
    assert [u.room for u in found] == ["room-1"] * 3
    for utterance, (_, end) in zip(found, three_sentences.voiced, strict=True):
        # The packet holding the last voiced frame arrived at 1000 + its index.
        last_voiced_packet = utterance.stamps[Stage.LAST_VOICED] - 1000.0
        assert abs(last_voiced_packet * packet / PIPELINE_RATE - end) <= TOLERANCE
        assert Stage.VAD_END in utterance.stamps


def test_an_utterance_is_returned_once_the_hangover_has_passed() -> None:
    speech = compose([0.5, "Hello there, how are you?", 2.0])
    segmenter = VadSegmenter()
    end = speech.voiced[0][1]
    returned_at = None
    for offset in range(0, len(speech.audio), 320):
        if segmenter.push(speech.audio[offset : offset + 320], offset / PIPELINE_RATE):
            returned_at = offset / PIPELINE_RATE
            break

    assert returned_at is not None
    assert SETTINGS.hangover - TOLERANCE <= returned_at - end <= SETTINGS.hangover + TOLERANCE


def test_chunks_of_any_length_give_the_same_utterances(three_sentences: Speech) -> None:
    whole = segment(three_sentences.audio)
    segmenter = VadSegmenter()
    odd: list[Utterance] = []
    offset = 0
    for size in [1, 77, 1000, 333, 4801] * 1000:
        if offset >= len(three_sentences.audio):
            break
        odd += segmenter.push(three_sentences.audio[offset : offset + size], offset / 16_000)
        offset += size
    odd += segmenter.flush()

    assert len(odd) == len(whole)
    for a, b in zip(odd, whole, strict=True):
        assert (a.start, a.end) == pytest.approx((b.start, b.end))
        np.testing.assert_array_equal(a.audio, b.audio)


def test_silence_and_steady_noise_yield_nothing() -> None:
    rng = np.random.default_rng(7)
    ten_seconds = 10 * PIPELINE_RATE
    silence = np.zeros(ten_seconds, np.float32)
    white = (rng.standard_normal(ten_seconds) * 0.05).astype(np.float32)
    hum = (0.3 * np.sin(2 * np.pi * 120 * np.arange(ten_seconds) / PIPELINE_RATE)).astype(
        np.float32
    )

    assert segment(silence) == []
    assert segment(white) == []
    assert segment(hum + white) == []


def test_clicks_are_dropped() -> None:
    audio = np.zeros(3 * PIPELINE_RATE, np.float32)
    for at in (0.5, 1.5, 2.5):
        i = int(at * PIPELINE_RATE)
        audio[i : i + 80] = np.hanning(80) * 0.9

    assert segment(audio) == []


def test_a_long_monologue_is_split_between_words_under_the_maximum() -> None:
    sentences = [
        "The committee met on Tuesday to discuss the new library building.",
        "Several members argued that the old site was too small for the town.",
        "Others said that moving the books would cost far more than expected.",
        "After a long debate they agreed to ask the public for their views.",
        "A survey will be sent to every household before the end of the month.",
        "The results will be presented at the next meeting in the spring.",
        "Until then the library will keep its usual opening hours.",
        "Volunteers are still needed to help sort the donated books.",
        "Anyone who wants to help can call the front desk on weekday mornings.",
    ]
    parts: list[str | float] = [0.5]
    for sentence in sentences:
        parts += [sentence, 0.2]
    speech = compose(parts)
    assert len(speech.audio) / PIPELINE_RATE > 30

    found = segment(speech.audio)

    assert len(found) >= 3
    assert all(u.duration <= SETTINGS.max_length + 1e-6 for u in found)
    for span in speech.voiced:
        assert covered(span, found), span
    cuts = [before.end for before, after in itertools.pairwise(found) if after.start == before.end]
    assert cuts, "a monologue this long must have been split"
    for cut in cuts:
        around = speech.audio[round(cut * PIPELINE_RATE) - 160 : round(cut * PIPELINE_RATE) + 160]
        assert np.sqrt(np.mean(around**2)) < 0.01, f"cut at {cut:.2f}s is mid-word"


def test_a_gap_in_stream_time_ends_the_utterance_and_restarts_the_clock() -> None:
    speech = compose([0.5, "Hello there, how are you?", 0.1])
    segmenter = VadSegmenter()
    found: list[Utterance] = []
    for offset in range(0, len(speech.audio), 320):
        found += segmenter.push(speech.audio[offset : offset + 320], offset / PIPELINE_RATE)
    found += segmenter.push(np.zeros(320, np.float32), 100.0)

    [utterance] = found
    assert abs(voiced_edges(utterance)[0] - speech.voiced[0][0]) <= TOLERANCE


def test_bad_input_is_refused_with_a_clear_error() -> None:
    segmenter = VadSegmenter()
    with pytest.raises(ValueError, match="mono"):
        segmenter.push(np.zeros((320, 2), np.float32), 0.0)
    with pytest.raises(ValueError, match="float"):
        segmenter.push(np.zeros(320, np.int16), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        segmenter.push(np.full(320, np.nan, np.float32), 0.0)
    with pytest.raises(ValueError, match="frame_ms"):
        VadSettings(frame_ms=25)
