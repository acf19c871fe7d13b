"""`POST /qr`: a QR code (SVG) of an invite link, so the phones around a table can join by
scanning one screen.

The link comes in the request body, never in the URL: it may carry a room passcode in its
fragment, and URLs end up in access logs.
"""

from __future__ import annotations

import io

import segno
from aiohttp import web

MAX_QR_TEXT_BYTES = 1024
"""A link with a room, passcode and token is a few hundred bytes; a QR code of much more
is too dense for a phone across a table to read."""


async def qr_code(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_QR_TEXT_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            max_size=MAX_QR_TEXT_BYTES, actual_size=request.content_length
        )
    body = await request.content.read(MAX_QR_TEXT_BYTES + 1)
    if len(body) > MAX_QR_TEXT_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_QR_TEXT_BYTES, actual_size=len(body))
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="the body must be UTF-8 text") from None
    if not text:
        raise web.HTTPBadRequest(text="send the text to encode (an invite link) as the body")
    # Error correction M: still scans with a glare spot on a glossy phone screen.
    code = segno.make(text, error="m", micro=False)
    svg = io.BytesIO()
    code.save(svg, kind="svg", scale=1, border=4, xmldecl=False, title="Invite link")
    return web.Response(
        body=svg.getvalue(),
        content_type="image/svg+xml",
        headers={"Cache-Control": "no-store"},
    )


def add_invite_routes(app: web.Application) -> None:
    app.router.add_post("/qr", qr_code)
