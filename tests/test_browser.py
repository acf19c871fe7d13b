"""End to end in real browsers: two headless Chromium pages talk through the server.

How it runs here (and in CI, as root on a machine like this one):
- Debian's `/usr/bin/chromium` through Playwright's Python package, one persistent context
  per participant, because each needs its own `--use-file-for-fake-audio-capture` wav.
- No network namespace is needed. With `--allow-loopback-in-peer-connection` Chromium
  offers host candidates on 127.0.0.1 (next to its other interfaces), and the server is
  told to offer 127.0.0.1 (`ServerSettings(ice_addresses=["127.0.0.1"])`), so ICE pairs
  on loopback. If a machine had no loopback candidates, running the session under
  `unshare -n sh -c 'ip link set lo up; pytest ...'` gives a namespace with only `lo`.
- Each page measures the audio it receives with a WebAudio AnalyserNode (getStats()
  audioLevel stays 0 while an audio element is muted) and its own microphone the same
  way; `window.babblefish.stats()` returns both as histories of (epoch ms, level).
  Both pages run on this machine's clock, so the histories line up.

Nothing here asserts a duration: the test polls until enough speech has been heard, then
checks who heard whom by correlating the level envelopes.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from PIL import Image

from tests.fixtures.browser import LaunchParticipant, Participant
from tests.fixtures.server import ServerFactory, signaling_of
from tests.fixtures.speech import compose

pytestmark = pytest.mark.browser

ROOM_SCREENSHOT = Path("/tmp/babblefish-room.png")
CAPTIONS_SCREENSHOT = Path("/tmp/babblefish-captions.png")
LIVE_ROOM_SCREENSHOT = Path("/tmp/babblefish-live-room.png")
SHARE_SCREENSHOT = Path("/tmp/babblefish-share.png")
BIN_S = 0.1
MAX_LAG_S = 2.0
SPEAKING = 0.5
SILENT = 0.05
ENOUGH_BINS = 25
"""2.5 s of each kind of moment (only I speak / only the other speaks) before judging."""

CONNECTED = "s && s.joined && s.states.peer === 'connected' && s.participants.length === 2"


@pytest.fixture
async def babblefish(
    babblefish_factory: ServerFactory, request: pytest.FixtureRequest
) -> TestServer:
    """The server the pages use; a test may pass ServerSettings fields by indirect
    parametrization."""
    return await babblefish_factory(**getattr(request, "param", {}))


def fake_mic(path: Path, sentence: str, silence_after: float) -> Path:
    """A looping microphone: one sentence, then silence. Different lengths of silence
    make two such loops drift against each other, so each speaks alone at some point."""
    return compose([0.3, sentence, silence_after], rate=48_000).write_wav(path)


def binned(history: list[list[float]], start: float, bins: int) -> np.ndarray:
    """Peak level per BIN_S bin from `start` (epoch ms); a bin with no reading repeats the
    one before."""
    out = np.full(bins, np.nan)
    for stamp, level in history:
        index = int((stamp - start) / (BIN_S * 1000))
        if 0 <= index < bins:
            out[index] = level if np.isnan(out[index]) else max(out[index], level)
    for index in range(bins):
        if np.isnan(out[index]):
            out[index] = out[index - 1] if index else 0.0
    return out


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def hearing(listener: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """What `listener` received, against both microphones, over the time all three were
    measured, at the delay that best explains it by the other's microphone."""
    series = [listener["incoming"]["history"], listener["mic"]["history"], other["mic"]["history"]]
    start = max(history[0][0] for history in series)
    end = min(history[-1][0] for history in series)
    bins = int((end - start) / (BIN_S * 1000))
    heard, own, theirs = (binned(history, start, bins) for history in series)
    max_lag = int(MAX_LAG_S / BIN_S)
    if bins < 4 * max_lag:
        return {"bins": bins}
    lags = range(max_lag + 1)
    by_other = [correlation(heard[lag:], theirs[: bins - lag]) for lag in lags]
    lag = int(np.argmax(by_other))
    heard, own, theirs = heard[lag:], own[: bins - lag], theirs[: bins - lag]
    # "Only I speak": I am loud and the other is silent in a whole second around it.
    theirs_around = np.array(
        [theirs[max(0, i - 5) : i + 6].max() for i in range(len(theirs))]
    )
    only_mine = (own > SPEAKING) & (theirs_around < SILENT)
    only_theirs = theirs > SPEAKING
    return {
        "bins": bins,
        "lag_s": lag * BIN_S,
        "r_other": by_other[lag],
        "r_own": max(correlation(heard[k:], own[: len(own) - k]) for k in lags),
        "only_mine": int(only_mine.sum()),
        "only_theirs": int(only_theirs.sum()),
        "heard_while_only_mine": float(np.percentile(heard[only_mine], 90))
        if only_mine.any() else None,
        "heard_while_theirs": float(np.median(heard[only_theirs])) if only_theirs.any() else None,
    }


def enough(result: dict[str, Any]) -> bool:
    return result.get("only_mine", 0) >= ENOUGH_BINS and result.get("only_theirs", 0) >= ENOUGH_BINS


async def two_in_a_room(
    launch_participant: LaunchParticipant, tmp_path: Path
) -> tuple[Participant, Participant]:
    ana = await launch_participant(
        fake_mic(tmp_path / "ana.wav", "Good morning everyone, the weather is lovely today.", 4.5)
    )
    bob = await launch_participant(
        fake_mic(tmp_path / "bob.wav", "Please send me the quarterly report before noon.", 7.0)
    )
    await ana.join("Ana", "e2e", "eng")
    await bob.join("Bob", "e2e", "eng")
    for page in (ana, bob):
        await page.wait_until(CONNECTED)
    return ana, bob


async def test_each_hears_the_other_and_not_themselves(
    launch_participant: LaunchParticipant, tmp_path: Path
) -> None:
    ana, bob = await two_in_a_room(launch_participant, tmp_path)
    await ana.page.screenshot(path=str(ROOM_SCREENSHOT))

    results: dict[str, dict[str, Any]] = {}
    for _ in range(120):
        await asyncio.sleep(1.0)
        a, b = await ana.stats(), await bob.stats()
        if not (a["incoming"] and b["incoming"]):
            continue
        results = {"ana": hearing(a, b), "bob": hearing(b, a)}
        if all(enough(result) for result in results.values()):
            break
    print(results)
    for who, result in results.items():
        assert enough(result), f"{who} never had both kinds of moment: {result}"
        # What I receive follows the other's microphone ...
        assert result["r_other"] > 0.5, (who, result)
        # ... and not mine,
        assert result["r_own"] < result["r_other"] - 0.4, (who, result)
        # so while only I speak, I receive near silence, and I do hear the other speak.
        assert result["heard_while_only_mine"] < 0.2, (who, result)
        assert result["heard_while_theirs"] > 0.4, (who, result)


async def test_language_change_leave_and_rejoin(
    launch_participant: LaunchParticipant, tmp_path: Path
) -> None:
    ana, bob = await two_in_a_room(launch_participant, tmp_path)

    await ana.page.click("#room-lang")
    await ana.page.fill("#room-lang", "spanish")
    await ana.page.keyboard.press("Enter")
    await ana.wait_until("s.lang === 'spa'")
    spanish = bob.page.locator("#participants .person-lang", has_text="Spanish")
    await spanish.wait_for()

    await bob.page.click("#leave-button")
    await bob.page.locator("#join-view").wait_for(state="visible")
    await ana.wait_until("s.participants.length === 1")
    assert (await bob.stats())["mic"] is None

    # Same page, no reload: the form kept the choices.
    await bob.page.click("#join-button")
    await bob.wait_until(CONNECTED)
    await ana.wait_until(CONNECTED)
    assert await bob.page.locator("#participants .person").count() == 2


# Installed in a page: records what the page ever showed about reconnecting, since the
# moment itself may be shorter than a poll.
WATCH_RECONNECTING = """(other) => {
  const seen = window.__reconnectSeen = {banner: false, otherAway: false, otherGone: false};
  const look = () => {
    if (!document.getElementById('reconnecting').hidden) seen.banner = true;
    const rows = [...document.querySelectorAll('#participants .person')];
    const row = rows.find((item) => item.querySelector('.avatar') && item.dataset.id === other);
    if (!row) seen.otherGone = true;
    else if (row.classList.contains('is-reconnecting')) seen.otherAway = true;
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true,
                                                     attributes: true});
  look();
}"""


async def test_a_dropped_connection_comes_back_by_itself_with_the_same_id(
    launch_participant: LaunchParticipant, tmp_path: Path, babblefish: TestServer
) -> None:
    ana, bob = await two_in_a_room(launch_participant, tmp_path)
    ana_id = (await ana.stats())["id"]
    await ana.page.evaluate(WATCH_RECONNECTING, "")
    await bob.page.evaluate(WATCH_RECONNECTING, ana_id)
    resumed_after = await ana.page.evaluate("Date.now()")

    # The network goes: the server's end of Ana's socket vanishes, with no close frame.
    signaling = signaling_of(babblefish)
    session = next(s for s in signaling.sessions if s.participant and s.participant.id == ana_id)
    session.ws._req.transport.abort()

    await ana.wait_until(
        f"s.id === '{ana_id}' && s.joined && !s.reconnecting && s.states.peer === 'connected'"
    )
    await bob.wait_until(f"s.statuses['{ana_id}'] === 'connected'")
    # Each hears the other again, on Ana's new peer connection.
    heard_since = (
        f"s.incoming && s.incoming.history.some(([t, level]) => t > {resumed_after} && level > 0.3)"
    )
    await ana.wait_until(heard_since)
    await bob.wait_until(heard_since)
    assert (await ana.page.evaluate("window.__reconnectSeen"))["banner"]
    bob_saw = await bob.page.evaluate("window.__reconnectSeen")
    assert bob_saw == {"banner": False, "otherAway": True, "otherGone": False}
    assert (await ana.stats())["wake_lock"] is True


async def test_share_shows_the_room_link_as_a_qr_code_that_scans_back_to_it(
    launch_participant: LaunchParticipant, tmp_path: Path, babblefish_url: str
) -> None:
    pyzbar = pytest.importorskip("pyzbar.pyzbar", reason="pip install pyzbar; apt libzbar0")
    ana = await launch_participant(fake_mic(tmp_path / "ana.wav", "Hello.", 1.0))
    await ana.join("Ana", "table-7", "eng")
    await ana.page.click("#share-button")
    dialog = ana.page.locator("#share-dialog")
    await dialog.wait_for(state="visible")
    link = f"{babblefish_url}?room=table-7"
    assert await dialog.locator(".share-link").input_value() == link
    qr = dialog.locator(".share-qr")
    await qr.wait_for(state="visible")
    image = Image.open(io.BytesIO(await qr.screenshot()))
    assert [code.data.decode() for code in pyzbar.decode(image)] == [link]
    await ana.page.screenshot(path=str(SHARE_SCREENSHOT))

    # A phone that scans it gets the room filled in.
    phone = await launch_participant(fake_mic(tmp_path / "phone.wav", "Hi.", 1.0))
    await phone.page.goto(link)
    assert await phone.page.locator("#room").input_value() == "table-7"


INVITE_SCRIPT = """() => {
  const S = BF.share;
  return {
    plain: S.inviteLink('https://host:8443/', 'r1'),
    locked: S.inviteLink('https://host:8443/app/', 'r1', {passcode: 'p w&1', token: ''}),
    read: S.readInvite({search: '?room=r1&x=1', hash: '#passcode=p+w%261'}),
  };
}"""


async def test_invite_links_carry_the_passcode_only_in_the_fragment(
    launch_participant: LaunchParticipant, tmp_path: Path, babblefish_url: str
) -> None:
    page = (await launch_participant(fake_mic(tmp_path / "a.wav", "Hello.", 1.0))).page
    result = await page.evaluate(INVITE_SCRIPT)
    assert result["plain"] == "https://host:8443/?room=r1"
    assert result["locked"] == "https://host:8443/app/?room=r1#passcode=p+w%261"
    assert result["read"] == {"room": "r1", "passcode": "p w&1"}


async def test_unreachable_server_is_explained(
    launch_participant: LaunchParticipant, tmp_path: Path
) -> None:
    page = (await launch_participant(fake_mic(tmp_path / "a.wav", "Hello.", 1.0))).page
    await page.locator("#join-lang:not([disabled])").wait_for()
    await page.click("#server-box summary")
    await page.fill("#server-url", "http://127.0.0.1:9")
    await page.click("#server-check")
    notice = page.locator("#notice")
    await notice.wait_for(state="visible")
    assert "Cannot reach the server at http://127.0.0.1:9/" in await notice.inner_text()
    assert await page.locator("#join-button").is_disabled()


@pytest.mark.parametrize("babblefish", [{"max_participants": 1}], indirect=True)
async def test_server_error_is_explained_and_the_form_comes_back(
    launch_participant: LaunchParticipant, tmp_path: Path
) -> None:
    ana = await launch_participant(fake_mic(tmp_path / "ana.wav", "Hello.", 1.0))
    bob = await launch_participant(fake_mic(tmp_path / "bob.wav", "Hi.", 1.0))
    await ana.join("Ana", "tiny", "eng")
    await bob.page.fill("#name", "Bob")
    await bob.page.fill("#room", "tiny")
    await bob.page.click("#join-button")
    notice = bob.page.locator("#notice")
    await notice.wait_for(state="visible")
    assert "This room is full" in await notice.inner_text()
    assert await bob.page.locator("#join-view").is_visible()
    assert await bob.page.locator("#join-button").is_enabled()
    assert (await bob.stats())["joined"] is False


TRANSCRIPT_SCRIPT = """() => {
  const T = BF.transcript;
  const ana = {id: 's1', name: 'Ana', color: '#e6194b', participant: 'p1'};
  const bob = {id: 's2', name: 'Bob', color: '#4363d8', participant: 'p2'};
  const base = Date.UTC(2025, 0, 2, 3, 4, 5);
  const caption = (fields) => ({type: 'caption', t: {}, ...fields});
  const log = new T.CaptionLog();
  const u1 = {utterance: 'u1', speaker: ana, source_lang: 'eng',
              source_text: 'Good morning everyone.', start: base, end: base + 2500};
  const messages = [
    caption({...u1, lang: 'eng', text: 'Good morning everyone.', final: false}),
    caption({...u1, lang: 'spa', text: 'Buenos días a todos.', final: true}),
    caption({utterance: 'u2', speaker: bob, source_lang: 'spa', source_text: 'Vale, lo miro hoy.',
             lang: 'spa', text: 'Vale, lo miro hoy.', final: true,
             start: base + 3723004, end: base + 3724504}),
    caption({utterance: 'u3', speaker: ana, source_lang: 'eng', source_text: 'The report is late.',
             lang: 'spa', text: '', final: true, error: 'translation timed out',
             start: base + 4000, end: base + 5000}),
    // A partial arriving late, then the dropped marker: neither loses the translation.
    caption({...u1, lang: 'eng', text: 'Good morning everyone.', final: false}),
    caption({...u1, lang: 'spa', text: '', final: true, dropped: true}),
  ];
  for (const message of messages) log.apply(message);
  const renamed = log.applySpeakers([{...ana, name: 'Ana María'}, bob]);
  const names = {eng: 'English', spa: 'Spanish'};
  return {
    entries: log.entries,
    renamed: renamed.map((entry) => entry.utterance),
    srt: T.toSrt(log.entries),
    text: T.toText(log.entries, {title: 'Transcript of e2e', languageName: (code) => names[code]}),
  };
}"""

EXPECTED_SRT = """1
00:00:00,000 --> 00:00:02,500
Ana María: Buenos días a todos.
Good morning everyone.

2
00:00:04,000 --> 00:00:05,000
Ana María: The report is late.

3
01:02:03,004 --> 01:02:04,504
Bob: Vale, lo miro hoy.
"""

EXPECTED_TEXT = """Transcript of e2e
Started 2025-01-02T03:04:05.000Z

[00:00:00] Ana María: Buenos días a todos. [skipped to catch up]
    English: Good morning everyone.
[00:00:04] Ana María: The report is late. [translation failed]
[01:02:03] Bob: Vale, lo miro hoy.
"""


async def test_transcript_merges_captions_and_formats_srt_and_text(
    launch_participant: LaunchParticipant, tmp_path: Path
) -> None:
    page = (await launch_participant(fake_mic(tmp_path / "a.wav", "Hello.", 1.0))).page
    result = await page.evaluate(TRANSCRIPT_SCRIPT)

    u1, u2, u3 = result["entries"]
    assert (u1["lang"], u1["text"], u1["final"], u1["dropped"]) == (
        "spa", "Buenos días a todos.", True, True
    )
    assert (u2["lang"], u2["error"], u2["dropped"]) == ("spa", None, False)
    assert (u3["text"], u3["error"]) == ("", "translation timed out")
    assert result["renamed"] == ["u1", "u3"]
    assert result["srt"] == EXPECTED_SRT
    assert result["text"] == EXPECTED_TEXT


TRANSLATED_FOR_ANA = (
    "s.captions.some(c => c.final && c.lang === 'spa' && c.text && !c.error"
    " && c.speaker && c.speaker.name === 'Bob')"
)
ORIGINAL_FOR_BOB = (
    "s.captions.some(c => c.final && c.lang === 'eng' && c.text && c.text === c.source_text)"
)
TRANSLATION_HEARD = "s.latency_ms !== null && s.incoming.history.some(([, level]) => level > 0.3)"


class TestLiveTranslation:
    """Against a server with the real engines: the tiny SeamlessM4T v2 (random weights, so
    its words are gibberish, but real ones all the same) and Kokoro's real weights."""

    @pytest.fixture
    def babblefish(self, live_server: TestServer) -> TestServer:
        return live_server

    # The waits below add up to 375 s, well inside this limit, so a slow or broken
    # translation fails with wait_until's diagnostic (the page's stats), not a bare timeout;
    # the rest covers loading the models (session fixtures, timed with the first test) and pages.
    @pytest.mark.timeout(600)
    async def test_spanish_page_gets_captions_and_speech_from_english_speech(
        self, launch_participant: LaunchParticipant, tmp_path: Path
    ) -> None:
        ana = await launch_participant(compose([2.0], rate=48_000).write_wav(tmp_path / "ana.wav"))
        bob = await launch_participant(
            fake_mic(tmp_path / "bob.wav", "Good morning everyone, the weather is lovely.", 6.0)
        )
        # Ana keeps only translations in her mix (a remembered choice, sent on joining), so
        # whatever she hears is translated speech, never Bob's voice ducked underneath.
        await ana.page.evaluate("localStorage.setItem('babblefish.join', JSON.stringify({mix: 0}))")
        await ana.page.reload()
        await ana.join("Ana", "live", "spa")
        await bob.join("Bob", "live", "eng")
        for page in (ana, bob):
            await page.wait_until(CONNECTED)

        await ana.wait_until(TRANSLATED_FOR_ANA, timeout_s=240)
        await ana.wait_until(TRANSLATION_HEARD, timeout_s=90)
        await bob.wait_until(ORIGINAL_FOR_BOB, timeout_s=45)
        captions = ana.page.locator(".captions-card")
        await captions.screenshot(path=str(CAPTIONS_SCREENSHOT))

        stats = await ana.stats()
        assert stats["mix"] == 0
        caption = next(c for c in stats["captions"] if c["final"] and c["lang"] == "spa")
        # The English transcript came along for the small line beneath.
        assert caption["source_text"]
        shown = ana.page.locator(f"#captions [data-utterance='{caption['utterance']}']")
        assert await shown.locator(".caption-speaker").inner_text() == "Bob"
        assert await shown.locator(".caption-text").inner_text() == caption["text"]

        # Ana renames Bob's voice inline; both pages follow the server's answer.
        bob_id = (await bob.stats())["id"]
        await ana.wait_until(f"s.speakers.some(v => v.participant === '{bob_id}' && v.seconds > 0)")
        voice = next(v for v in (await ana.stats())["speakers"] if v["participant"] == bob_id)
        row = ana.page.locator(f"#voices [data-speaker='{voice['id']}']")
        await row.locator(".rename-button").click()
        await row.locator(".rename-form input").fill("Roberto")
        await row.locator(".rename-form input").press("Enter")
        renamed = f"s.speakers.some(v => v.id === '{voice['id']}' && v.name === 'Roberto')"
        for page in (ana, bob):
            await page.wait_until(renamed)
        assert await row.locator(".voice-name").inner_text() == "Roberto"
        assert await shown.locator(".caption-speaker").inner_text() == "Roberto"
        await ana.page.screenshot(path=str(LIVE_ROOM_SCREENSHOT), full_page=True)
