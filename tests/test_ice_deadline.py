"""An answered offer whose ICE never connects is released, with its tasks, in time."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from signaling.messages import ErrorCode
from signaling.session import CLOSE_ICE_FAILED
from tests.fixtures.server import ServerFactory, signaling_of
from tests.fixtures.webrtc import PeerFactory
from tests.test_bad_input import eventually, server_is_idle

_CANDIDATE = re.compile(r"^a=candidate:.*\r?\n", re.MULTILINE)


async def offer_with(candidate: str | None) -> str:
    """A real aiortc offer with its candidates replaced by `candidate` (None: none at all)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = _CANDIDATE.sub("", pc.localDescription.sdp)
    await pc.close()
    if candidate is not None:
        sdp = sdp.replace("a=end-of-candidates", f"a=candidate:{candidate}\r\na=end-of-candidates")
    return sdp


@pytest.mark.parametrize(
    "candidate",
    [
        None,
        "1 1 UDP 2122252543 peer.example.invalid 49152 typ host",
        "1 1 UDP 2122252543 0d5e3ef1-52b4-4d07-a8f6-ba6dd2d5ee71.local 49152 typ host",
    ],
    ids=["no-candidates", "hostname", "mdns"],
)
async def test_an_offer_that_never_connects_is_released(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory, candidate: str | None
) -> None:
    server = await babblefish_factory(ice_timeout=0.5, resume_grace=0)
    signaling = signaling_of(server)
    tasks_before = asyncio.all_tasks()
    peer = await peer_factory(server)
    await peer.join("r", "Ana", "eng")
    await peer.send({"type": "offer", "sdp": await offer_with(candidate)})
    await peer.expect("answer")
    assert len(signaling.peers) == 1

    error = await peer.expect("error")
    assert error["code"] == ErrorCode.ICE_FAILED
    assert (await peer.closed())[0] == CLOSE_ICE_FAILED
    await eventually(server_is_idle(server))
    assert signaling.peers.timed_out == 1
    for _ in range(20):  # aiortc's own tasks finish a few loop turns after close()
        left = {t for t in asyncio.all_tasks() - tasks_before if not t.done()}
        left.discard(asyncio.current_task())  # type: ignore[arg-type]
        left -= {peer._reader}
        if not left:
            break
        await asyncio.sleep(0.05)
    assert not left, left
