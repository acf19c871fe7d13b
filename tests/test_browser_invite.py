"""End to end in Chromium: on a private server, a host's Share code (scanned back with
zbar) brings a phone into the locked room with nothing typed but a name. How the browsers
run: see tests/test_browser.py."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from PIL import Image

from tests.fixtures.browser import LaunchParticipant
from tests.fixtures.server import ServerFactory
from tests.test_browser import fake_mic

pytestmark = pytest.mark.browser

TOKEN = "table-7-token"
PASSCODE = "blue heron"


@pytest.fixture
async def babblefish(babblefish_factory: ServerFactory) -> TestServer:
    return await babblefish_factory(access_token=TOKEN)


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
