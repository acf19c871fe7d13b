"""Feeders: a participant's 16 kHz stream through the VAD into utterances, in owned tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from ai.utterance import Utterance
from ai.vad import VadSettings
from media.frames import FRAME_SAMPLES, MIX_RATE
from signaling.feeders import Feeders
from signaling.rooms import Participant, Rooms
from tests.fixtures.speech import Speech


@pytest.fixture
async def rooms() -> AsyncIterator[Rooms]:
    rooms = Rooms()
    yield rooms
    await rooms.close_all()


def speak(participant: Participant, speech: Speech, at: float = 0.0) -> None:
    """Feeds `speech` as received from stream time `at` seconds on."""
    for start in range(0, len(speech.audio) - FRAME_SAMPLES + 1, FRAME_SAMPLES):
        frame = speech.audio[start : start + FRAME_SAMPLES]
        participant.audio.receive(frame, at + start / MIX_RATE, 0.0)


async def until(condition: asyncio.Event) -> None:
    async with asyncio.timeout(30):
        await condition.wait()


class Submitted:
    """The pipeline's end of a feeder: keeps each utterance and says one came."""

    def __init__(self) -> None:
        self.utterances: list[Utterance] = []
        self.got = asyncio.Event()

    def __call__(self, utterance: Utterance) -> None:
        self.utterances.append(utterance)
        self.got.set()

    async def next(self) -> Utterance:
        await until(self.got)
        self.got.clear()
        return self.utterances[-1]


async def test_a_feeder_submits_each_utterance_in_the_language_spoken_now(
    rooms: Rooms, english_speech: Speech
) -> None:
    ann = rooms.join("r", "Ann", "eng", lambda message: None)
    submitted = Submitted()
    feeders = Feeders("r", VadSettings(), submitted)
    feeders.start(ann)
    assert list(feeders) == [ann.id]
    rooms.set_lang(ann, "spa")
    speak(ann, english_speech)
    utterance = await submitted.next()
    assert len(submitted.utterances) == 1
    # Nothing pinned: the language is left to detect, favouring the one she declared now.
    assert utterance.source_id == ann.id and utterance.declared_lang == "spa"
    assert utterance.source_lang is None

    ann.pin_spoken("eng")  # "I speak: English"
    speak(ann, english_speech, at=len(english_speech.audio) / MIX_RATE)
    utterance = await submitted.next()
    assert utterance.source_lang == "eng" and utterance.declared_lang == "eng"

    ann.pin_spoken(None)  # back to "detect", after she was heard speaking French
    ann.spoke("fra")
    speak(ann, english_speech, at=2 * len(english_speech.audio) / MIX_RATE)
    utterance = await submitted.next()
    assert utterance.source_lang is None and utterance.declared_lang == "fra"

    await feeders.stop(ann.id)
    assert list(feeders) == [] and feeders.queued == 0
    assert f"vad-{ann.id}" not in {task.get_name() for task in asyncio.all_tasks()}


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.logged = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.logged.set()


async def test_a_feeder_that_fails_is_logged_not_silent(
    rooms: Rooms, english_speech: Speech
) -> None:
    ann = rooms.join("r", "Ann", "eng", lambda message: None)
    errors = ErrorLog()
    logging.getLogger("signaling.feeders").addHandler(errors)

    def submit(utterance: Utterance) -> None:
        raise RuntimeError("pipeline exploded")

    feeders = Feeders("r", VadSettings(), submit)
    feeders.start(ann)
    speak(ann, english_speech)
    try:
        await until(errors.logged)
    finally:
        logging.getLogger("signaling.feeders").removeHandler(errors)
    (record,) = errors.records
    assert f"vad-{ann.id}" in record.getMessage() and "room r" in record.getMessage()
    assert record.exc_info is not None and "pipeline exploded" in str(record.exc_info[1])
    await feeders.close()  # a dead feeder still stops cleanly
    assert list(feeders) == []


async def test_speech_cut_off_by_a_dropped_connection_is_submitted_without_waiting(
    rooms: Rooms, english_speech: Speech
) -> None:
    ann = rooms.join("r", "Ann", "eng", lambda message: None)
    submitted = Submitted()
    feeders = Feeders("r", VadSettings(), submitted)
    feeders.start(ann)
    voiced_end = int(english_speech.voiced[0][1] * MIX_RATE)
    cut = Speech(english_speech.audio[: voiced_end // 2], english_speech.rate, [])
    speak(ann, cut)  # mid-sentence, her packets stop: nothing more ever arrives
    utterance = await submitted.next()
    assert len(submitted.utterances) == 1
    assert utterance.source_id == ann.id and utterance.duration > 0.5
    await feeders.close()
