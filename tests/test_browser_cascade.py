"""Real speech through real browsers: the README's screenshot of a live room.

Two headless Chromium pages (see tests/test_browser.py for how they run here) join a
server running the cascade engine with real weights: whisper-base hears the Spanish and
writes the English (its `translate` task), Kokoro speaks it. Sofía's microphone is a wav
of two Spanish sentences in Kokoro's ef_dora voice; Erin listens in English. The test
waits until Erin's page shows English captions whose content words are a correct
translation of both sentences and she has heard the translation, then photographs her
page: docs/screenshots/live-room.png is that picture.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from ai.translator import CascadeTranslator
from ai.tts import KokoroTTS
from ai.utterance import Audio
from media.frames import MIX_RATE
from media.ice import offer_host_addresses
from signaling.translation import LoadedEngines, mount_translation
from signaling.web import ServerSettings, create_app
from tests.fixtures.browser import LaunchParticipant
from tests.fixtures.cascade import ENGLISH_CONTENT, content_words
from tests.fixtures.speech import Speech
from tests.test_browser import CONNECTED, TRANSLATION_HEARD

pytestmark = pytest.mark.browser

CASCADE_ROOM_SCREENSHOT = Path("/tmp/babblefish-cascade-room.png")
"""Copied to docs/screenshots/live-room.png for the README."""


@pytest.fixture
async def babblefish(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    cascade_translator: CascadeTranslator,
    kokoro_tts: KokoroTTS,
) -> AsyncIterator[TestServer]:
    """A server whose rooms translate with the cascade engine (real whisper-base)."""
    app = create_app(ServerSettings(ice_addresses=["127.0.0.1"]))
    mount_translation(
        app, LoadedEngines(cascade_translator, kokoro_tts, None), owns_engines=False, warm=False
    )
    yield await aiohttp_server(app)
    offer_host_addresses(None)


def spanish_microphone(sentences: list[Audio], path: Path) -> Path:
    """Both sentences with a pause between, then a long silence before the browser loops
    the file (a page may connect after the first pass), so that however slow the shared
    CPU, one pass is translated and heard before the next comes round."""
    def silence(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * MIX_RATE), np.float32)

    parts = [silence(2.0), sentences[0], silence(2.0), sentences[1], silence(40.0)]
    return Speech(np.concatenate(parts), MIX_RATE, []).write_wav(path)


def covers(heard: set[str], content: set[str]) -> bool:
    """All content words but at most one (whisper-base writes "3 pm" or "afternoon")."""
    return len(content & heard) >= len(content) - 1


def translates(texts: list[str], content: set[str]) -> bool:
    return any(covers(content_words(text), content) for text in texts)


@pytest.mark.timeout(600)
async def test_spanish_speech_is_captioned_in_english_on_the_listeners_page(
    launch_participant: LaunchParticipant, tmp_path: Path, spanish_speech_48k: list[Audio]
) -> None:
    sofia = await launch_participant(spanish_microphone(spanish_speech_48k, tmp_path / "es.wav"))
    await sofia.join("Sofía", "demo", "spa")
    # Erin joins once Sofía's speech is being transcribed: every utterance after that was
    # sent whole (none cut short by a connection still being set up).
    await sofia.wait_until("s.captions.some(c => c.final && c.lang === 'spa' && c.text)",
                           timeout_s=240)
    erin = await launch_participant(Speech(np.zeros(MIX_RATE, np.float32), MIX_RATE, [])
                                    .write_wav(tmp_path / "erin.wav"))
    await erin.join("Erin", "demo", "eng")
    for page in (erin, sofia):
        await page.wait_until(CONNECTED)

    # Until one caption translates each sentence (the file loops; a pass may be misheard).
    shown: list[str] = []
    try:
        async with asyncio.timeout(360):
            while not all(translates(shown, content) for content in ENGLISH_CONTENT):
                await asyncio.sleep(1.0)
                # What the page shows (the picture's words), not only what the server sent.
                shown = await erin.page.locator("#captions .caption-text").all_inner_texts()
    except TimeoutError:
        raise AssertionError(
            f"Erin's captions never translated both sentences: {shown}\n"
            f"Sofía's: {[c['text'] for c in (await sofia.stats())['captions']]}"
        ) from None
    await erin.wait_until(TRANSLATION_HEARD, timeout_s=60)
    stats = await erin.stats()
    assert all(c["speaker"]["name"] == "Sofía" and c["lang"] == "eng"
               for c in stats["captions"] if c["final"] and not c["error"]), stats["captions"]
    sources = await erin.page.locator("#captions .caption-original").all_inner_texts()
    assert {"proyecto", "tren", "estacion"} <= content_words(" ".join(sources)), sources
    await erin.page.screenshot(path=str(CASCADE_ROOM_SCREENSHOT), full_page=True)
