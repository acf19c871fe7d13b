"""`POST /qr`: the invite link's QR code, and what it refuses."""

from __future__ import annotations

import aiohttp
from aiohttp.test_utils import TestServer

from signaling.invite import MAX_QR_TEXT_BYTES
from tests.fixtures.server import ServerFactory


async def test_qr_code_of_a_link_is_an_svg(babblefish: TestServer) -> None:
    link = "https://192.168.1.20:8443/?room=table-7#passcode=tea"
    async with aiohttp.ClientSession() as session:
        response = await session.post(babblefish.make_url("/qr"), data=link)
        svg = await response.text()
    assert response.status == 200
    assert response.content_type == "image/svg+xml"
    assert response.headers["Cache-Control"] == "no-store"
    assert svg.startswith("<svg") and "<path" in svg
    assert link not in svg  # the passcode is drawn, not written out


async def test_qr_code_refuses_what_it_cannot_encode(babblefish: TestServer) -> None:
    url = babblefish.make_url("/qr")
    async with aiohttp.ClientSession() as session:
        assert (await session.post(url, data=b"")).status == 400
        assert (await session.post(url, data=b"\xff\xfe")).status == 400
        too_long = "x" * (MAX_QR_TEXT_BYTES + 1)
        assert (await session.post(url, data=too_long)).status == 413
        assert (await session.get(url, params={"text": "x"})).status != 200  # never in a URL


async def test_behind_an_operator_token_the_qr_code_needs_it(
    babblefish_factory: ServerFactory,
) -> None:
    server = await babblefish_factory(access_token="s3cret")
    url = server.make_url("/qr")
    async with aiohttp.ClientSession() as session:
        assert (await session.post(url, data="https://h/?room=r")).status == 401
        authorized = {"Authorization": "Bearer s3cret"}
        assert (await session.post(url, data="https://h/?room=r", headers=authorized)).status == 200
