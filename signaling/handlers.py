"""Handlers of the client -> server messages: the core (join, offer, set_lang, leave) and
live translation's (set_mix, rename_speaker, set_table, set_spoken_lang)."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import WSCloseCode

from media.peer import OfferError
from signaling.access import retry_later
from signaling.messages import (
    ErrorCode,
    Message,
    MessageRegistry,
    ProtocolError,
    optional,
    text,
)
from signaling.rooms import Participant, RoomFull, TooManyRooms
from signaling.session import Session

MAX_SDP_CHARS = 60_000

ROOM = text(1, 64, pattern=r"[A-Za-z0-9_-]+")
NAME = text(1, 64, printable=True)
LANG = text(1, 16)
SDP = text(1, MAX_SDP_CHARS)
PASSCODE = optional(text(1, 64, printable=True))
RESUME_TOKEN = text(1, 128)


def _listenable(session: Session, lang: str) -> str:
    if not session.server.listenable(lang):
        raise ProtocolError(
            ErrorCode.UNKNOWN_LANG, f"{lang!r} is not a language you can listen in (/languages)"
        )
    return lang


async def join(session: Session, message: Message) -> None:
    if session.participant is not None:
        raise ProtocolError(ErrorCode.ALREADY_JOINED, "this socket is already in a room")
    lang = _listenable(session, message["lang"])
    rooms = session.server.rooms
    existing = rooms.get(message["room"])
    passcode = message.get("passcode")
    if existing is not None:
        session.server.access.check_passcode(session.address, passcode, existing.passcode)
    try:
        participant = rooms.join(message["room"], message["name"], lang, session.send)
    except RoomFull as error:
        raise ProtocolError(ErrorCode.ROOM_FULL, str(error)) from error
    except TooManyRooms as error:
        raise ProtocolError(ErrorCode.TOO_MANY_ROOMS, str(error)) from error
    if existing is None:
        participant.room.passcode = passcode  # whoever opens the room may lock it
    session.participant = participant
    session.send(_welcome("joined", session, participant))


async def resume(session: Session, message: Message) -> None:
    """Take back a participant whose connection dropped: same id, room and voice."""
    if session.participant is not None:
        raise ProtocolError(ErrorCode.ALREADY_JOINED, "this socket is already in a room")
    rooms = session.server.rooms
    guesses = session.server.access.backoff
    if (wait := guesses.wait(session.address)) > 0:
        raise retry_later(wait)
    participant = rooms.claim(message["resume_token"])
    if participant is not None:
        # Owned from here on, so that if this socket dies too the participant is suspended.
        session.participant = participant
        for other in list(session.server.sessions):
            if other is not session and other.participant is participant:
                await other.hand_over()  # its network changed before it noticed
        if not await rooms.resume(participant, session.send):
            session.participant = participant = None
    if participant is None:
        guesses.failed(session.address)
        raise ProtocolError(
            ErrorCode.RESUME_FAILED,
            "that place in the room is gone (left, or away for more than "
            f"{rooms.resume_grace:g} s); join again",
        )
    session.send(_welcome("resumed", session, participant))
    for held in participant.take_held():
        session.send(held)


def _welcome(kind: str, session: Session, participant: Participant) -> Message:
    return {
        "type": kind,
        "id": participant.id,
        "room": participant.room.id,
        "name": participant.name,
        "lang": participant.lang,
        "participants": participant.room.roster(),
        "locked": participant.room.passcode is not None,
        "ice_servers": session.server.ice_servers,
        "resume_token": participant.resume_token,
    }


async def offer(session: Session, message: Message) -> None:
    participant = session.participant
    assert participant is not None  # requires_join
    if session.pc is not None:
        raise ProtocolError(
            ErrorCode.RENEGOTIATION_UNSUPPORTED,
            "media is already negotiated; reconnect to start it again",
        )
    peers = session.server.peers
    pc = session.pc = peers.create(on_ended=session.media_failed)

    @pc.on("connectionstatechange")
    def _connected() -> None:
        if pc.connectionState == "connected":
            session.media_connected = True

    try:
        sdp = await peers.answer(
            pc, message["sdp"], participant.listener.track, participant.audio.attach
        )
    except OfferError as error:
        session.pc = None
        await peers.close(pc)
        raise ProtocolError(ErrorCode.BAD_SDP, str(error)) from error
    session.send({"type": "answer", "sdp": sdp})


async def set_lang(session: Session, message: Message) -> None:
    participant = session.participant
    assert participant is not None  # requires_join
    session.server.rooms.set_lang(participant, _listenable(session, message["lang"]))


async def leave(session: Session, message: Message) -> None:
    await session.end_media()
    session.close(WSCloseCode.OK, "left")


def core_messages() -> MessageRegistry:
    """A registry with the core protocol; features register more types on it."""
    registry = MessageRegistry()
    registry.register(
        "join", join, {"room": ROOM, "name": NAME, "lang": LANG, "passcode": PASSCODE},
        requires_join=False,
    )
    registry.register(
        "resume", resume, {"resume_token": RESUME_TOKEN}, requires_join=False
    )
    registry.register("offer", offer, {"sdp": SDP})
    registry.register("set_lang", set_lang, {"lang": LANG})
    registry.register("leave", leave)
    return registry


class LiveControls(Protocol):
    def rename_speaker(self, participant: Participant, speaker: str, name: str) -> None:
        """Renames a speaker of `participant`'s room. Raises KeyError naming an unknown
        speaker, ValueError saying why a name is refused."""
        ...

    async def set_table(
        self, participant: Participant, other_id: str, together: bool | None
    ) -> None:
        """Seats `participant` and `other_id` together, apart, or as heard (None). Raises
        KeyError naming an unknown participant, ValueError for a pair that cannot be."""
        ...


def _together(value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError("must be true, false or null")
    return value


def _unit_interval(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number from 0 to 1")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError("must be from 0 to 1")
    return float(value)


async def set_mix(session: Session, message: Message) -> None:
    participant = session.participant
    assert participant is not None  # requires_join
    participant.listener.mix.original = message["original"]


AUTO = "auto"
"""`set_spoken_lang`'s value for "detect the language I speak"."""


async def set_spoken_lang(session: Session, message: Message) -> None:
    """Pins the language the participant speaks, or `auto` to have it detected."""
    participant = session.participant
    assert participant is not None  # requires_join
    lang = message["lang"]
    if lang != AUTO and not any(
        info.code == lang and info.speech_in for info in session.server.languages()
    ):
        raise ProtocolError(
            ErrorCode.UNKNOWN_LANG,
            f"{lang!r} is not a language the server hears (/languages speech_in), nor auto",
        )
    if participant.pin_spoken(None if lang == AUTO else lang):
        participant.room.send_roster()


def live_messages(registry: MessageRegistry, live: LiveControls) -> None:
    """Adds live translation's message types to `registry`."""

    async def rename_speaker(session: Session, message: Message) -> None:
        participant = session.participant
        assert participant is not None  # requires_join
        try:
            live.rename_speaker(participant, message["speaker"], message["name"])
        except KeyError as error:
            raise ProtocolError("unknown_speaker", str(error.args[0])) from error
        except ValueError as error:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"rename_speaker: {error}") from error

    async def set_table(session: Session, message: Message) -> None:
        participant = session.participant
        assert participant is not None  # requires_join
        try:
            await live.set_table(participant, message["participant"], message["together"])
        except KeyError as error:
            raise ProtocolError(ErrorCode.UNKNOWN_PARTICIPANT, str(error.args[0])) from error
        except ValueError as error:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"set_table: {error}") from error

    registry.register("set_mix", set_mix, {"original": _unit_interval})
    registry.register("rename_speaker", rename_speaker, {"speaker": text(1, 32), "name": NAME})
    registry.register(
        "set_table", set_table, {"participant": text(1, 32), "together": _together}
    )
    registry.register("set_spoken_lang", set_spoken_lang, {"lang": LANG})
