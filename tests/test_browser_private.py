"""End to end in Chromium, on a private server (`--access-token`): a locked room refuses
a page without the token and passcode and serves a page that has them, typed or from an
invite link's fragment; and a host's Share code (scanned back with zbar) brings a phone
into the locked room with nothing typed but a name. How the browsers run: see
tests/test_browser.py."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from PIL import Image

from tests.fixtures.browser import LaunchParticipant, Participant
from tests.fixtures.server import ServerFactory
from tests.test_browser import fake_mic

pytestmark = pytest.mark.browser

TOKEN = "table-7-token"
PASSCODE = "blue heron"


@pytest.fixture
async def babblefish(babblefish_factory: ServerFactory) -> TestServer:
    return await babblefish_factory(access_token=TOKEN)


async def try_join(person: Participant, name: str, room: str) -> None:
    page = person.page
    await page.locator("#join-lang:not([disabled])").wait_for()
    await page.fill("#name", name)
    await page.fill("#room", room)
    await page.click("#join-lang")
    await page.fill("#join-lang", "eng")
    await page.keyboard.press("Enter")
    await page.click("#join-button")


async def refused_with(person: Participant, text: str) -> None:
    notice = person.page.locator("#notice")
    await notice.wait_for(state="visible")
    assert text in await notice.inner_text()
    assert await person.page.locator("#join-view").is_visible()
    assert (await person.stats())["joined"] is False


async def test_token_and_passcode_gate_the_page_and_an_invite_link_carries_both(
    launch_participant: LaunchParticipant, babblefish_url: str, tmp_path: Path
) -> None:
    mic = fake_mic(tmp_path / "mic.wav", "Hello.", 1.0)
    host, guest, stranger = [await launch_participant(mic) for _ in range(3)]

    # No token: refused, and the page asks for one.
    await try_join(host, "Host", "council")
    await refused_with(host, "This server is private")
    token_field = host.page.locator("#access-token")
    assert await token_field.is_visible()

    # With the token, the host opens the room and locks it with a passcode.
    await token_field.fill(TOKEN)
    await host.page.fill("#passcode", PASSCODE)
    await host.page.click("#join-button")
    await host.page.locator("#room-view").wait_for(state="visible")
    await host.wait_until("s.joined && s.participants.length === 1")
    assert await host.page.locator("#room-title .lock-mark").is_visible()

    # A stranger with the token but not the passcode stays out of the locked room.
    await stranger.page.goto(f"{babblefish_url}#token={TOKEN}")
    await try_join(stranger, "Stranger", "council")
    await refused_with(stranger, "This room is locked")
    assert "token" not in stranger.page.url  # read, remembered and taken off the address

    # An invite link's fragment holds both; the guest only types a name.
    await guest.page.goto(f"{babblefish_url}#token={TOKEN}&passcode=blue%20heron")
    await try_join(guest, "Guest", "council")
    await guest.page.locator("#room-view").wait_for(state="visible")
    await guest.wait_until("s.joined && s.participants.length === 2")

    # The token is remembered on the device: back on the form it is there already.
    await host.page.reload()
    await host.page.locator("#join-lang:not([disabled])").wait_for()
    assert await host.page.locator("#access-token").input_value() == TOKEN


async def test_a_phone_joins_a_locked_room_by_scanning_the_share_code(
    launch_participant: LaunchParticipant, babblefish_url: str, tmp_path: Path
) -> None:
    pyzbar = pytest.importorskip("pyzbar.pyzbar", reason="pip install pyzbar; apt libzbar0")
    mic = fake_mic(tmp_path / "mic.wav", "Hello.", 1.0)
    host, phone = [await launch_participant(mic) for _ in range(2)]

    await host.page.goto(f"{babblefish_url}#token={TOKEN}")
    await host.page.locator("#join-lang:not([disabled])").wait_for()
    await host.page.fill("#name", "Host")
    await host.page.fill("#room", "council")
    await host.page.fill("#passcode", PASSCODE)
    await host.page.click("#join-button")
    await host.wait_until("s.joined")

    await host.page.click("#share-button")
    qr = host.page.locator("#share-dialog .share-qr")
    await qr.wait_for(state="visible")  # the QR request carried the token as Bearer
    (code,) = pyzbar.decode(Image.open(io.BytesIO(await qr.screenshot())))
    link = code.data.decode()
    assert link == f"{babblefish_url}?room=council#passcode=blue+heron&token={TOKEN}"
    assert link == await host.page.locator("#share-dialog .share-link").input_value()

    await phone.page.goto(link)
    await phone.page.locator("#join-lang:not([disabled])").wait_for()
    await phone.page.fill("#name", "Phone")
    await phone.page.click("#join-button")
    await phone.wait_until("s.joined && s.participants.length === 2")
    await host.wait_until("s.participants.length === 2")
