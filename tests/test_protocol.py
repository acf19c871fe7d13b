"""Message validation, the extensible message table, rate limiting, ICE and SDP checks."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from aiortc import RTCConfiguration, RTCPeerConnection

from ai.speakers import SpeakerRegistry
from media.ice import browser_ice_server, parse_ice_server, plan_host_addresses
from media.peer import OfferError, check_offer
from signaling.handlers import core_messages
from signaling.languages import LanguageInfo, table_languages
from signaling.messages import ErrorCode, Message, MessageRegistry, ProtocolError, text
from signaling.ratelimit import TokenBucket
from tests.fixtures.server import ServerFactory


def parse(raw: object) -> tuple[str, Message]:
    kind, message = core_messages().parse(raw if isinstance(raw, str) else json.dumps(raw))
    return kind.name, kind.validate(message)


def code_of(raw: object) -> str:
    with pytest.raises(ProtocolError) as caught:
        parse(raw)
    return caught.value.code


def test_core_messages_validate_and_drop_unknown_fields() -> None:
    name, message = parse(
        {"type": "join", "room": "daily_sync-2", "name": "Zoë 🐟", "lang": "eng", "x": 1}
    )
    assert name == "join"
    assert message == {"type": "join", "room": "daily_sync-2", "name": "Zoë 🐟", "lang": "eng"}
    assert parse({"type": "leave"}) == ("leave", {"type": "leave"})
    assert parse({"type": "set_lang", "lang": "spa"})[1]["lang"] == "spa"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", ErrorCode.BAD_JSON),
        ("[1, 2]", ErrorCode.BAD_JSON),
        ("[" * 100_000, ErrorCode.BAD_JSON),
        ('"join"', ErrorCode.BAD_JSON),
        ({"room": "r"}, ErrorCode.UNKNOWN_TYPE),
        ({"type": 7}, ErrorCode.UNKNOWN_TYPE),
        ({"type": "dance"}, ErrorCode.UNKNOWN_TYPE),
        ({"type": "join", "room": "r", "name": "n"}, ErrorCode.BAD_FIELD),
        ({"type": "join", "room": "", "name": "n", "lang": "eng"}, ErrorCode.BAD_FIELD),
        ({"type": "join", "room": "a b", "name": "n", "lang": "eng"}, ErrorCode.BAD_FIELD),
        ({"type": "join", "room": "r" * 65, "name": "n", "lang": "eng"}, ErrorCode.BAD_FIELD),
        ({"type": "join", "room": "r", "name": "   ", "lang": "eng"}, ErrorCode.BAD_FIELD),
        ({"type": "join", "room": "r", "name": "a\nb", "lang": "eng"}, ErrorCode.BAD_FIELD),
        ({"type": "join", "room": "r", "name": "n" * 65, "lang": "eng"}, ErrorCode.BAD_FIELD),
        ({"type": "join", "room": "r", "name": "n", "lang": 3}, ErrorCode.BAD_FIELD),
        ({"type": "offer", "sdp": None}, ErrorCode.BAD_FIELD),
        ({"type": "offer", "sdp": "x" * 70_000}, ErrorCode.BAD_FIELD),
    ],
)
def test_bad_messages_get_stable_codes(raw: object, code: str) -> None:
    assert code_of(raw) == code


def test_bad_field_message_names_the_field() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse({"type": "join", "room": "a b", "name": "n", "lang": "eng"})
    assert "'room'" in caught.value.message
    assert caught.value.to_message()["type"] == "error"


async def test_new_message_types_register_without_touching_the_core() -> None:
    registry = core_messages()
    seen: list[Message] = []

    async def set_mix(session: object, message: Message) -> None:
        seen.append(message)

    def balance(value: object) -> float:
        if not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError("must be a number from 0 to 1")
        return float(value)

    registry.register("set_mix", set_mix, {"original": balance})
    kind, message = registry.parse('{"type": "set_mix", "original": 0.5}')
    assert kind.requires_join
    await kind.handler(None, kind.validate(message))  # type: ignore[arg-type]
    assert seen == [{"type": "set_mix", "original": 0.5}]
    with pytest.raises(ProtocolError) as caught:
        kind.validate({"type": "set_mix", "original": 2})
    assert caught.value.code == ErrorCode.BAD_FIELD
    with pytest.raises(ValueError):
        registry.register("set_mix", set_mix)
    assert "set_mix" in registry and "set_mix" not in MessageRegistry()


def test_text_field_check() -> None:
    check = text(2, 3, pattern="[a-z]+")
    assert check("ab") == "ab"
    for bad in ("a", "abcd", "AB", 12):
        with pytest.raises(ValueError):
            check(bad)


@pytest.mark.parametrize(
    "name",
    ["می\u200cخواهم", "👨\u200d👩\u200d👧", "🏳\ufe0f\u200d🌈", "अक्\u200dष", "Zoë " + "n" * 59],
)
def test_names_with_joiners_are_accepted_and_agree_with_the_speaker_registry(name: str) -> None:
    assert parse({"type": "join", "room": "r", "name": name, "lang": "eng"})[1]["name"] == name
    registry = SpeakerRegistry()
    speaker = registry.assign(np.ones(4), "conn", 1.0, "x").speaker
    assert registry.rename(speaker.id, name).name == name


@pytest.mark.parametrize(
    "name", ["\u200d", "\u200c \u200d", "evil\u202egnp.exe", "a\u2066b", "a\u200bb", "\u0007bell"]
)
def test_invisible_or_reordering_names_are_refused(name: str) -> None:
    join = {"type": "join", "room": "r", "name": name, "lang": "eng"}
    assert code_of(join) == ErrorCode.BAD_FIELD


def test_token_bucket_allows_bursts_then_the_sustained_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.1
    assert bucket.take() and not bucket.take()
    now[0] += 100
    assert sum(bucket.take() for _ in range(10)) == 3


def test_languages_report_speech_output() -> None:
    languages = {info.code: info for info in table_languages()}
    assert languages["eng"].speech_out == "kokoro"
    assert languages["deu"].speech_out == "seamless"
    assert languages["yor"].speech_out is None and languages["yor"].text_out
    assert not languages["oci"].text_out
    assert set(languages["eng"].to_json()) == {
        "code",
        "name",
        "speech_in",
        "text_out",
        "speech_out",
    }


def test_ice_server_specs() -> None:
    turn = parse_ice_server("turn:al%3Aice:s3cr%40t@turn.example.org:3478?transport=tcp")
    assert turn.urls == "turn:turn.example.org:3478?transport=tcp"
    assert (turn.username, turn.credential) == ("al:ice", "s3cr@t")
    assert browser_ice_server(turn) == {
        "urls": ["turn:turn.example.org:3478?transport=tcp"],
        "username": "al:ice",
        "credential": "s3cr@t",
    }
    assert browser_ice_server(parse_ice_server("stun:stun.example.org:3478")) == {
        "urls": ["stun:stun.example.org:3478"]
    }
    for bad in ("stun.example.org", "http://x", "turn:host:3478", "stun:u:p@host", "turn:u@host"):
        with pytest.raises(ValueError):
            parse_ice_server(bad)


def test_ice_address_plan() -> None:
    plan = plan_host_addresses(["127.0.0.1", "203.0.113.7"])
    assert plan.bind == ("127.0.0.1", "0.0.0.0")
    assert plan.announce == {"0.0.0.0": "203.0.113.7"}
    with pytest.raises(ValueError):
        plan_host_addresses(["203.0.113.7", "198.51.100.1"])
    with pytest.raises(ValueError):
        plan_host_addresses(["example.org"])


async def test_offer_checks() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    sdp = (await pc.createOffer()).sdp
    await pc.close()
    check_offer(sdp)
    for bad in (
        "hello",
        sdp.replace("m=audio", "m=video"),
        sdp + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n",
        "\r\n".join(line for line in sdp.split("\r\n") if "opus" not in line.lower()),
        "\r\n".join(line for line in sdp.split("\r\n") if "fingerprint" not in line),
    ):
        with pytest.raises(OfferError):
            check_offer(bad)


async def test_http_routes(babblefish_factory: ServerFactory, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<title>BabbleFish</title>")
    (tmp_path / "app.js").write_text("// client")

    def two_languages() -> list[LanguageInfo]:
        return [
            LanguageInfo("eng", "English", True, True, "kokoro"),
            LanguageInfo("oci", "Occitan", True, False, None),
        ]

    server = await babblefish_factory(client_dir=tmp_path, languages=two_languages)
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/")) as page:
            assert page.status == 200 and "BabbleFish" in await page.text()
        async with http.get(server.make_url("/app.js")) as script:
            assert script.status == 200
        async with http.get(server.make_url("/../pyproject.toml")) as escape:
            assert escape.status in (403, 404)
        async with http.get(server.make_url("/health")) as health:
            body = await health.json()
            assert body["status"] == "ok" and body["rooms"] == 0 and body["participants"] == 0
            assert body["uptime"] >= 0
            assert body["mixers"] == {"ticking": 0, "ticks": 0, "late_ticks": 0, "skipped_ticks": 0}
            assert "python_heap_bytes" not in body  # only under -X tracemalloc
        async with http.get(server.make_url("/languages")) as reply:
            assert (await reply.json())["languages"] == [info.to_json() for info in two_languages()]


async def test_health_gives_the_python_heap_while_tracemalloc_traces(
    babblefish: TestServer,
) -> None:
    tracemalloc.start()
    try:
        held = [bytearray(1000) for _ in range(2000)]
        async with aiohttp.ClientSession() as http:
            async with http.get(babblefish.make_url("/health")) as reply:
                heap = (await reply.json())["python_heap_bytes"]
            del held
            async with http.get(babblefish.make_url("/health")) as reply:
                after = (await reply.json())["python_heap_bytes"]
    finally:
        tracemalloc.stop()
    assert heap >= 2_000_000 and heap - after >= 1_900_000  # what the test held, then let go


async def test_default_languages_route_lists_the_whole_table(babblefish: TestServer) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(babblefish.make_url("/languages")) as reply,
    ):
        listed = (await reply.json())["languages"]
    assert len(listed) == len(table_languages())
    assert {
        "code": "spa",
        "name": "Spanish",
        "speech_in": True,
        "text_out": True,
        "speech_out": "kokoro",
    } in listed
