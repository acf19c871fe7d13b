"""Voiceprints through pyannote's real loader, and the room's speaker registry."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from ai.identify import VoiceprintIdentifier
from ai.speakers import RegistrySettings, SpeakerRegistry
from ai.utterance import PIPELINE_RATE, Utterance
from tests.fixtures.speech import espeak

SETTINGS = RegistrySettings()
DIM = 256

if TYPE_CHECKING:
    from ai.voiceprint import PyannoteEmbedder


@pytest.fixture(scope="module")
def embedder(wespeaker_dir: Path) -> Iterator[PyannoteEmbedder]:
    from ai.voiceprint import PyannoteEmbedder

    engine = PyannoteEmbedder(wespeaker_dir)
    yield engine
    engine.close()


@pytest.mark.slow
def test_the_real_loader_gives_one_print_per_utterance(embedder: PyannoteEmbedder) -> None:
    speech = espeak("The quick brown fox jumps over the lazy dog.")

    first = embedder.embed(speech)
    again = embedder.embed(speech)

    assert embedder.dimension == DIM
    assert first.shape == (DIM,) and first.dtype == np.float32
    assert np.all(np.isfinite(first)) and np.linalg.norm(first) > 0
    np.testing.assert_allclose(first, again, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
async def test_embed_async_runs_off_the_loop_and_agrees(embedder: PyannoteEmbedder) -> None:
    speech = espeak("Hello from the other side of the room.")

    off_loop = await embedder.embed_async(speech)

    np.testing.assert_allclose(off_loop, embedder.embed(speech), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_unusable_audio_is_refused(embedder: PyannoteEmbedder) -> None:
    with pytest.raises(ValueError, match="too short"):
        embedder.embed(np.zeros(PIPELINE_RATE // 20, np.float32))
    with pytest.raises(ValueError, match="mono"):
        embedder.embed(np.zeros((PIPELINE_RATE, 2), np.float32))


@pytest.mark.slow
async def test_a_room_names_speakers_from_the_real_models_prints(
    embedder: PyannoteEmbedder,
) -> None:
    # The test model has random weights: only the same audio is sure to sound alike to it.
    dan_speech = espeak("One two three four five six seven.")
    eve_speech = espeak("The quick brown fox jumps over the lazy dog.", voice="en-gb")
    registry = SpeakerRegistry()
    changes: list[None] = []
    identifier = VoiceprintIdentifier(
        embedder.embed_async, registry, {"conn-dan": "Dan", "conn-eve": "Eve"}.get,
        lambda: changes.append(None),
    )

    def said(speech: np.ndarray, connection: str) -> Utterance:
        return Utterance(speech, 0.0, len(speech) / PIPELINE_RATE, source_id=connection)

    dan = await identifier.identify(said(dan_speech, "conn-dan"))
    dan_again = await identifier.identify(said(dan_speech, "conn-dan"))
    eve = await identifier.identify(said(eve_speech, "conn-eve"))

    assert dan == dan_again and dan[1] == "Dan"
    assert eve[1] == "Eve" and eve[0] != dan[0]
    assert [(s.id, s.name) for s in registry.speakers()] == [dan, eve]
    assert len(changes) == 3


# --- The registry on controlled prints ---------------------------------------------------


@pytest.fixture()
def basis() -> np.ndarray:
    """Orthonormal directions: each one a different voice."""
    q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((DIM, 8)))
    return q.T.astype(np.float32)


def at_cosine(target: np.ndarray, cosine: float, away: np.ndarray) -> np.ndarray:
    """A print whose cosine with `target` is exactly `cosine`, leaning towards `away`."""
    return (cosine * target + np.sqrt(1 - cosine**2) * away).astype(np.float32)


def noisy(voice: np.ndarray, seed: int) -> np.ndarray:
    """Another utterance by the same voice: cosine about 0.9 with it."""
    noise = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return voice + 0.03 * noise


def test_the_same_voice_is_recognised_and_its_print_grows(basis: np.ndarray) -> None:
    registry = SpeakerRegistry()
    dan = basis[0]

    first = registry.assign(noisy(dan, 1), "conn-dan", 2.0, "Dan")
    second = registry.assign(noisy(dan, 2), "conn-dan", 3.0, "Dan")

    assert first.is_new and not second.is_new
    assert second.speaker.id == first.speaker.id
    assert second.speaker.name == "Dan"
    assert second.speaker.seconds == pytest.approx(5.0)
    assert second.speaker.confidence > first.speaker.confidence
    assert 0.0 < second.speaker.confidence < 1.0


def test_the_print_is_the_seconds_weighted_running_mean(basis: np.ndarray) -> None:
    registry = SpeakerRegistry()
    one, two = basis[0], at_cosine(basis[0], 0.8, basis[1])
    registry.assign(one, "conn-dan", 1.0, "Dan")
    registry.assign(two, "conn-dan", 3.0, "Dan")

    probe = registry.assign(one, "conn-dan", 0.5, "Dan")

    mean = one * 1.0 + two * 3.0
    expected = float(one @ mean / np.linalg.norm(mean))
    assert probe.similarity == pytest.approx(expected, abs=1e-5)


def test_a_new_voice_on_a_new_connection_is_that_participant(basis: np.ndarray) -> None:
    registry = SpeakerRegistry()
    dan = registry.assign(basis[0], "conn-dan", 2.0, "Dan")

    bea = registry.assign(basis[1], "conn-bea", 2.0, "Bea")

    assert bea.is_new and bea.speaker.id != dan.speaker.id
    assert bea.speaker.name == "Bea" and bea.speaker.connection_id == "conn-bea"
    assert bea.speaker.color != dan.speaker.color
    assert [s.name for s in registry.speakers()] == ["Dan", "Bea"]


def test_two_people_on_one_phone_stay_apart(basis: np.ndarray) -> None:
    registry = SpeakerRegistry()
    dan, eve = basis[0], basis[1]

    a = registry.assign(noisy(dan, 1), "conn-dan", 2.0, "Dan")
    b = registry.assign(noisy(eve, 2), "conn-dan", 2.0, "Dan")
    c = registry.assign(noisy(dan, 3), "conn-dan", 2.0, "Dan")
    d = registry.assign(noisy(eve, 4), "conn-dan", 2.0, "Dan")

    assert b.is_new and b.speaker.name == "Speaker 2 on Dan's device"
    assert b.speaker.connection_id == "conn-dan"
    assert c.speaker.id == a.speaker.id
    assert d.speaker.id == b.speaker.id
    assert len(registry.speakers()) == 2


@pytest.mark.parametrize(("offset", "same"), [(+0.01, True), (-0.01, False)])
def test_the_threshold_edge_across_connections(
    basis: np.ndarray, offset: float, same: bool
) -> None:
    registry = SpeakerRegistry()
    dan = registry.assign(basis[0], "conn-dan", 2.0, "Dan")
    registry.assign(basis[1], "conn-bea", 2.0, "Bea")

    near_dan = at_cosine(basis[0], SETTINGS.threshold + offset, basis[2])
    result = registry.assign(near_dan, "conn-bea", 2.0, "Bea")

    assert (result.speaker.id == dan.speaker.id) is same
    if not same:
        assert result.is_new and result.speaker.name == "Speaker 2 on Bea's device"


@pytest.mark.parametrize(("connection", "same"), [("conn-dan", True), ("conn-bea", False)])
def test_the_connection_is_a_strong_prior(basis: np.ndarray, connection: str, same: bool) -> None:
    registry = SpeakerRegistry()
    dan = registry.assign(basis[0], "conn-dan", 2.0, "Dan")
    registry.assign(basis[1], "conn-bea", 2.0, "Bea")

    # Below the threshold on its own, above it with the bonus of Dan's own device.
    borderline = at_cosine(basis[0], SETTINGS.threshold - SETTINGS.connection_bonus / 2, basis[2])
    result = registry.assign(borderline, connection, 2.0)

    assert (result.speaker.id == dan.speaker.id) is same


def test_a_short_unknown_utterance_goes_to_the_last_speaker_on_the_device(
    basis: np.ndarray,
) -> None:
    registry = SpeakerRegistry()
    dan = registry.assign(basis[0], "conn-dan", 2.0, "Dan")

    blip = registry.assign(basis[3], "conn-dan", SETTINGS.min_learn_seconds / 2, "Dan")

    assert not blip.is_new and blip.speaker.id == dan.speaker.id
    assert blip.speaker.seconds == dan.speaker.seconds


def test_speakers_can_be_renamed(basis: np.ndarray) -> None:
    registry = SpeakerRegistry()
    registry.assign(basis[0], "conn-dan", 2.0, "Dan")
    eve = registry.assign(basis[1], "conn-dan", 2.0, "Dan").speaker

    renamed = registry.rename(eve.id, "  Eve  ")

    assert renamed.name == "Eve"
    assert [s.name for s in registry.speakers()] == ["Dan", "Eve"]
    assert registry.assign(basis[1], "conn-dan", 2.0, "Dan").speaker.name == "Eve"
    with pytest.raises(KeyError):
        registry.rename("nobody", "X")
    with pytest.raises(ValueError):
        registry.rename(eve.id, "   ")


def test_a_departed_connection_takes_only_its_own_speakers(basis: np.ndarray) -> None:
    registry = SpeakerRegistry()
    registry.assign(basis[0], "conn-dan", 2.0, "Dan")
    registry.assign(basis[1], "conn-bea", 2.0, "Bea")
    registry.assign(basis[2], "conn-bea", 2.0, "Bea")

    gone = registry.forget_connection("conn-bea")

    assert len(gone) == 2
    assert [s.name for s in registry.speakers()] == ["Dan"]


def test_the_room_keeps_a_bounded_number_of_speakers(basis: np.ndarray) -> None:
    registry = SpeakerRegistry(RegistrySettings(max_speakers=3))
    for i in range(5):
        registry.assign(basis[i], f"conn-{i}", 2.0, f"P{i}")

    assert [s.name for s in registry.speakers()] == ["P2", "P3", "P4"]


def test_a_broken_print_is_refused(basis: np.ndarray) -> None:
    registry = SpeakerRegistry()
    with pytest.raises(ValueError, match="voiceprint"):
        registry.assign(np.zeros(DIM, np.float32), "conn-dan", 2.0)
    with pytest.raises(ValueError, match="voiceprint"):
        registry.assign(np.full(DIM, np.nan, np.float32), "conn-dan", 2.0)
    assert registry.speakers() == []


# --- The torchaudio workaround -----------------------------------------------------------


def run_fresh(script: str) -> list[object]:
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script],
        capture_output=True, text=True, timeout=240, cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0, done.stderr
    result: list[object] = json.loads(done.stdout)
    return result


def test_torchaudio_and_what_pyannote_needs_of_it_import_in_a_fresh_process() -> None:
    # Without the workaround: does torchaudio's own native extension load here?
    plain_loads, plain_native = run_fresh("""
import json, sys
import torch
try:
    import torchaudio
except OSError:
    print(json.dumps([False, False]))
else:
    flags = sys.modules["torchaudio._extension"].__dict__
    print(json.dumps([True, bool(flags.get("_IS_TORCHAUDIO_EXT_AVAILABLE"))]))
""")
    native, features, resampled = run_fresh("""
import json
import torch
from ai.torch_compat import ensure_torchaudio
native = ensure_torchaudio()
import torchaudio
from pyannote.audio import Model
features = torchaudio.compliance.kaldi.fbank(torch.randn(1, 16000), num_mel_bins=80)
resampled = torchaudio.functional.resample(torch.randn(1, 48000), 48000, 16000)
print(json.dumps([native, list(features.shape), list(resampled.shape)]))
""")

    # Where the extension loads, nothing changes; where it fails (this CPU torch next to
    # pyannote's CUDA torchaudio), the stand-in is used and reports it truthfully.
    assert native is (plain_native if plain_loads else False)
    assert features == [98, 80] and resampled == [1, 16000]
