"""Reconnect: a participant whose connection drops mid-meeting comes back as themselves.

aiortc participants through a real server. The first test runs live translation with a
scripted translator, the real Kokoro and random-weight WeSpeaker voiceprints, so that
"the same voice" is the room's own speaker registry speaking, not a naming rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from ai.pipeline import PipelineEngines
from ai.tts import KokoroTTS
from ai.voiceprint import PyannoteEmbedder
from media.frames import MIX_RATE
from media.ice import offer_host_addresses
from signaling.messages import ErrorCode
from signaling.session import CLOSE_RESUMED_ELSEWHERE
from signaling.translation import mount_live
from signaling.web import ServerSettings, create_app
from tests.fixtures.live import ScriptedTranslator
from tests.fixtures.server import ServerFactory, signaling_of
from tests.fixtures.speech import compose
from tests.fixtures.webrtc import PeerFactory, TestPeer
from tests.test_bad_input import a_real_offer, eventually, expect_error
from tests.test_live import (
    Message,
    alice_about_to_speak_to_bruno,
    assert_speech_like,
    everyone_connected,
    final_caption,
)
from tests.test_live import next_message as next_message_of


class Watch:
    """Everything one participant is sent, kept in order, with a wait for the next match."""

    def __init__(self, peer: TestPeer) -> None:
        self.peer = peer
        self.seen: list[Message] = []

    async def until(self, wanted: Callable[[Message], bool]) -> Message:
        def keep(message: Message) -> bool:
            self.seen.append(message)
            return wanted(message)

        return await next_message_of(self.peer, keep)

    def rosters(self) -> list[dict[str, str]]:
        return [
            {p["id"]: p["status"] for p in m["participants"]}
            for m in self.seen
            if m["type"] == "participants"
        ]


def status_of(participant: str, status: str) -> Callable[[Message], bool]:
    return lambda m: m["type"] == "participants" and any(
        p["id"] == participant and p["status"] == status for p in m["participants"]
    )


def without(participant: str) -> Callable[[Message], bool]:
    return lambda m: m["type"] == "participants" and all(
        p["id"] != participant for p in m["participants"]
    )


@pytest.fixture
async def voiceprint_server(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    kokoro_tts: KokoroTTS,
    wespeaker_dir: Path,
) -> AsyncIterator[tuple[TestServer, ScriptedTranslator]]:
    translator = ScriptedTranslator(lines=("Buenos días a todos.",))
    embedder = PyannoteEmbedder(wespeaker_dir)
    app = create_app(ServerSettings(ice_addresses=["127.0.0.1"]))
    mount_live(app, PipelineEngines(translator, kokoro_tts), embed=embedder.embed_async)
    yield await aiohttp_server(app), translator
    embedder.close()
    offer_host_addresses(None)


async def alice_and_bruno_connected(
    server: TestServer, peer_factory: PeerFactory, room: str
) -> tuple[TestPeer, TestPeer]:
    """Two English speakers in `room`, each with a connected peer connection."""
    alice, bruno = [await peer_factory(server) for _ in range(2)]
    await alice.join(room, "Alice", "eng")
    await bruno.join(room, "Bruno", "eng")
    await alice.connect()
    await bruno.connect()
    return alice, bruno


async def test_a_dropped_speaker_resumes_with_the_same_id_voice_and_mix(
    voiceprint_server: tuple[TestServer, ScriptedTranslator], peer_factory: PeerFactory
) -> None:
    server, translator = voiceprint_server
    sentence = compose([0.3, "Good morning everyone, let us begin.", 1.2], rate=MIX_RATE)
    alice, bruno, _ = await alice_about_to_speak_to_bruno(
        server, peer_factory, "table", sentence, bruno_mix={"original": 0}
    )
    watch = Watch(bruno)
    alice.mic.play()
    before = await watch.until(final_caption("spa"))
    voice = before["speaker"]
    assert voice["participant"] == alice.id and voice["id"] != alice.id  # a voiceprint
    participant = signaling_of(server).rooms.get("table").participants[alice.id]
    await alice.send({"type": "set_mix", "original": 0.4})
    await eventually(lambda: participant.listener.mix.original == 0.4)

    token = alice.resume_token
    await alice.drop()  # mid-meeting, without a word
    await watch.until(status_of(alice.id, "reconnecting"))

    again = await peer_factory(server)
    resumed = await again.resume(token)
    assert (resumed["id"], resumed["name"], resumed["lang"]) == (alice.id, "Alice", "eng")
    assert resumed["resume_token"] != token
    assert {p["id"]: p["status"] for p in resumed["participants"]} == {
        alice.id: "connected", bruno.id: "connected"
    }
    await again.connect(sentence.audio)
    starts = await everyone_connected(again, bruno)  # her new peer gets her mix too
    await watch.until(status_of(alice.id, "connected"))
    again.mic.play()
    after = await watch.until(final_caption("spa"))

    assert after["utterance"] != before["utterance"]
    assert after["speaker"]["id"] == voice["id"]  # recognised as the same voice
    assert after["speaker"]["participant"] == alice.id
    assert len(translator.segments) == 2
    assert participant.listener.mix.original == 0.4
    assert after["speaker"]["seconds"] > voice["seconds"]  # her enrolment went on
    last_speakers = [m for m in watch.seen if m["type"] == "speakers"][-1]
    assert [s["id"] for s in last_speakers["speakers"]] == [voice["id"]]
    await watch.until(lambda m: m["type"] == "latency" and m["utterance"] == after["utterance"])
    await bruno.recorder.wait_for(MIX_RATE * 3 // 2)  # her translation, playing
    assert_speech_like(bruno.recorder.audio(starts[bruno]))
    # Bruno saw her reconnect, never leave and join again.
    assert all(alice.id in roster for roster in watch.rosters())
    assert not any(m["type"] == "speakers" and not m["speakers"] for m in watch.seen)


async def test_a_phone_on_a_new_network_takes_over_its_old_connection(
    babblefish: TestServer, peer_factory: PeerFactory
) -> None:
    """The old socket has not noticed the network change yet when the new one resumes."""
    signaling = signaling_of(babblefish)
    alice, bruno = await alice_and_bruno_connected(babblefish, peer_factory, "move")

    mobile = await peer_factory(babblefish)
    await mobile.resume(alice.resume_token)
    assert mobile.id == alice.id
    assert await alice.closed() == (CLOSE_RESUMED_ELSEWHERE, "resumed elsewhere")
    await mobile.connect()
    await everyone_connected(mobile, bruno)
    assert len(signaling.peers) == 2  # the old peer connection was released
    room = signaling.rooms.get("move")
    assert list(room.participants) == [alice.id, bruno.id]
    assert [listener.id for listener in room.mixer.listeners] == [alice.id, bruno.id]


async def test_a_wrong_or_expired_token_is_refused_and_the_grace_ends_in_a_leave(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    server = await babblefish_factory(resume_grace=0.2)
    signaling = signaling_of(server)
    alice, bruno = await alice_and_bruno_connected(server, peer_factory, "late")
    watch = Watch(bruno)

    stranger = await peer_factory(server)
    await stranger.send({"type": "resume", "resume_token": "x" * 43})
    error = await expect_error(stranger, ErrorCode.RESUME_FAILED)
    assert "join again" in str(error["message"])
    await stranger.join("late", "Carol", "eng")  # the socket stays usable
    await stranger.send({"type": "resume", "resume_token": alice.resume_token})
    await expect_error(stranger, ErrorCode.ALREADY_JOINED)

    token = alice.resume_token
    await alice.drop()
    await watch.until(status_of(alice.id, "reconnecting"))
    await watch.until(without(alice.id))  # the grace ran out: a normal leave
    late = await peer_factory(server)
    await late.send({"type": "resume", "resume_token": token})
    await expect_error(late, ErrorCode.RESUME_FAILED)

    room = signaling.rooms.get("late")
    assert list(room.participants) == [bruno.id, stranger.id]
    await eventually(lambda: len(signaling.peers) == 1)  # Bruno's; Carol never offered
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert not any(name.startswith(("grace-", f"inbound-{alice.id}")) for name in names)


async def test_a_token_dies_with_a_real_leave(
    babblefish: TestServer, peer_factory: PeerFactory
) -> None:
    alice = await peer_factory(babblefish)
    await alice.join("bye", "Alice", "eng")
    token = alice.resume_token
    await alice.send({"type": "leave"})
    assert await alice.closed() == (1000, "left")
    again = await peer_factory(babblefish)
    await again.send({"type": "resume", "resume_token": token})
    await expect_error(again, ErrorCode.RESUME_FAILED)
    assert len(signaling_of(babblefish).rooms) == 0


async def test_failed_media_on_a_live_socket_is_resumed_too(
    babblefish: TestServer, peer_factory: PeerFactory
) -> None:
    signaling = signaling_of(babblefish)
    alice, bruno = await alice_and_bruno_connected(babblefish, peer_factory, "ice")
    watch = Watch(bruno)

    assert alice.pc is not None
    await alice.pc.close()  # the media path dies; the socket is fine
    await expect_error(alice, ErrorCode.ICE_FAILED)
    assert await alice.closed() == (4001, ErrorCode.ICE_FAILED)
    await watch.until(status_of(alice.id, "reconnecting"))

    again = await peer_factory(babblefish)
    await again.resume(alice.resume_token)
    await again.connect()
    await everyone_connected(again, bruno)
    await watch.until(status_of(alice.id, "connected"))
    assert again.id == alice.id and len(signaling.peers) == 2
    assert all(alice.id in roster for roster in watch.rosters())


async def test_behind_an_operator_token_a_resume_needs_it_too(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    operator = "s3cret-operator-token"
    server = await babblefish_factory(access_token=operator)
    alice = await peer_factory(server)
    await alice.send(
        {
            "type": "join", "room": "private", "name": "Alice", "lang": "eng",
            "access_token": operator,
        }
    )
    token = (await alice.expect("joined"))["resume_token"]
    await alice.drop()

    again = await peer_factory(server)
    await again.send({"type": "resume", "resume_token": token})
    await expect_error(again, ErrorCode.UNAUTHORIZED)
    await again.send({"type": "resume", "resume_token": token, "access_token": operator})
    resumed = await again.expect("resumed")
    assert resumed["name"] == "Alice" and resumed["room"] == "private"


async def test_media_that_never_connected_is_a_leave_not_a_drop(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    """ICE that never worked (a firewall) would fail again on resume: no place is kept."""
    server = await babblefish_factory(ice_timeout=0.2)
    alice = await peer_factory(server)
    await alice.join("fw", "Alice", "eng")
    offer = (await a_real_offer()).replace("a=end-of-candidates", "")  # no usable path
    await alice.send({"type": "offer", "sdp": offer})
    await alice.expect("answer")
    await expect_error(alice, ErrorCode.ICE_FAILED)
    assert (await alice.closed())[0] == 4001
    await eventually(lambda: signaling_of(server).rooms.get("fw") is None)
    again = await peer_factory(server)
    await again.send({"type": "resume", "resume_token": alice.resume_token})
    await expect_error(again, ErrorCode.RESUME_FAILED)
