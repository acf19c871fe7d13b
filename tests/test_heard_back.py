"""Which transcribed utterances are translations the room played, heard back."""

from __future__ import annotations

import numpy as np

from ai.utterance import PIPELINE_RATE, Stage, Utterance
from signaling.heard_back import (
    ECHO_DELAY,
    REMEMBERED,
    PlayedTranslations,
    languages_near,
    normalise,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def heard(transcript: str, lang: str | None, first_voiced: float, seconds: float) -> Utterance:
    """An utterance whose voiced audio arrived from `first_voiced` for `seconds`."""
    utterance = Utterance(
        np.zeros(round(seconds * PIPELINE_RATE), np.float32), 0.0, seconds,
        source_id="bruno", source_lang=lang,
    )
    utterance.transcript = transcript
    utterance.stamp(Stage.LAST_VOICED, first_voiced + seconds)
    return utterance


def played(text: str = "Hola a todos, bienvenidos a la reunión de hoy.") -> PlayedTranslations:
    """`text` into Spanish, played from 1000 s to 1003 s."""
    record = PlayedTranslations(Clock())
    record.spoken("u1", "spa", text)
    record.spoken("u1", "spa", text)  # its next piece
    record.started("u1", "spa", 1000.0)
    record.ended("u1", "spa", 1003.0)
    return record


def test_a_played_translation_heard_back_while_it_plays_is_recognised() -> None:
    record = played()
    echo = heard("Hola a todos, bienvenidos a la reunión de hoy", "spa", 1000.4, 3.0)
    assert record.heard_back(echo, {"spa"})
    assert record.heard_back(echo, {"spa", "eng"})


def test_leaked_fragments_even_repeated_by_the_recogniser_are_recognised() -> None:
    record = played()
    assert record.heard_back(heard("bienvenidos a la reunión", "spa", 1001.2, 1.2), {"spa"})
    assert record.heard_back(heard("a la reunión", "spa", 1001.9, 0.6), {"spa"})
    assert record.heard_back(heard("hola a todos hola a todos hola", "spa", 1000.2, 1.5), {"spa"})


def test_punctuation_case_and_accents_written_differently_do_not_matter() -> None:
    record = played()
    echo = heard("HOLA A TODOS... Bienvenidos a la reunion de hoy!", "spa", 1000.4, 3.0)
    assert record.heard_back(echo, {"spa"})
    assert normalise("¿Qué tal?  Muy bien.") == "qué tal muy bien"


def test_it_must_be_heard_while_or_just_after_it_played() -> None:
    record = played()
    text = "Hola a todos, bienvenidos a la reunión de hoy"
    assert not record.heard_back(heard(text, "spa", 996.0, 3.0), {"spa"})  # said before
    assert record.heard_back(heard(text, "spa", 1003.0 + ECHO_DELAY - 0.5, 2.0), {"spa"})
    assert not record.heard_back(heard(text, "spa", 1003.0 + ECHO_DELAY + 0.5, 2.0), {"spa"})
    playing = PlayedTranslations(Clock())  # started, still playing (a stalled piece)
    playing.spoken("u1", "spa", text)
    playing.started("u1", "spa", 1000.0)
    assert playing.heard_back(heard(text, "spa", 1009.0, 2.0), {"spa"})


def test_only_languages_played_near_the_microphone_and_the_language_heard_count() -> None:
    record = played()
    echo = heard("Hola a todos, bienvenidos a la reunión de hoy", "spa", 1000.4, 3.0)
    assert not record.heard_back(echo, {"eng", "fra"})
    detected_french = heard("Hola a todos, bienvenidos a la reunión de hoy", "fra", 1000.4, 3.0)
    assert not record.heard_back(detected_french, {"spa", "fra"})
    undetected = heard("Hola a todos, bienvenidos a la reunión de hoy", None, 1000.4, 3.0)
    assert record.heard_back(undetected, {"spa"})


def test_someone_saying_something_else_over_it_is_not_taken_for_it() -> None:
    record = played()
    assert not record.heard_back(
        heard("Perdón, ¿puedes repetir la última parte?", "spa", 1000.5, 2.0), {"spa"}
    )


def test_one_word_must_match_a_translation_as_a_whole_and_two_side_by_side() -> None:
    record = played()
    assert not record.heard_back(heard("Hola.", "spa", 1000.2, 0.5), {"spa"})  # only part of it
    short = played("Sí, claro.")
    assert short.heard_back(heard("si claro", "spa", 1000.2, 0.8), {"spa"})
    assert record.heard_back(heard("A todos.", "spa", 1000.2, 0.6), {"spa"})  # cut from it
    assert not record.heard_back(heard("Todos, hola.", "spa", 1000.2, 0.6), {"spa"})
    assert not record.heard_back(heard("a todas", "spa", 1000.2, 0.6), {"spa"})


def test_writing_without_spaces_is_compared_character_by_character() -> None:
    record = PlayedTranslations(Clock())
    record.spoken("u1", "cmn", "大家好，今天我们讨论新项目。")
    record.started("u1", "cmn", 1000.0)
    assert record.heard_back(heard("今天我们讨论", "cmn", 1001.0, 1.0), {"cmn"})
    assert not record.heard_back(heard("你好吗朋友们", "cmn", 1001.0, 1.0), {"cmn"})


def test_nothing_counts_before_it_starts_playing_and_old_playback_is_forgotten() -> None:
    clock = Clock()
    record = PlayedTranslations(clock)
    record.spoken("u1", "spa", "Muy bien, gracias.")
    echo = heard("Muy bien, gracias.", "spa", 1000.2, 1.0)
    assert not record.heard_back(echo, {"spa"})  # queued, not played yet
    record.started("u1", "spa", 1000.0)
    assert record.heard_back(echo, {"spa"})
    clock.now += REMEMBERED + 1
    record.spoken("u2", "spa", "Otra cosa.")
    assert not record.heard_back(echo, {"spa"})


def test_an_utterance_without_a_transcript_or_timing_is_never_taken_for_playback() -> None:
    record = played("Muy bien.")
    assert not record.heard_back(heard("", "spa", 1000.2, 1.0), {"spa"})
    untimed = heard("Muy bien.", "spa", 1000.2, 1.0)
    del untimed.stamps[Stage.LAST_VOICED]
    assert not record.heard_back(untimed, {"spa"})


def test_a_microphone_hears_its_own_phone_and_its_tables_loudspeakers_only() -> None:
    listening = {"dan": "eng", "marek": "ces", "pierre": "fra", "remote": "spa"}
    tables = [frozenset({"dan", "marek", "pierre"})]
    assert languages_near("dan", tables, listening) == {"eng", "ces", "fra"}
    assert languages_near("remote", tables, listening) == {"spa"}
    assert languages_near("gone", tables, listening) == set()
