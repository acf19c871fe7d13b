"""The client -> server message table: each type's field checks and handler, extensible.

A later feature adds a message type by calling `MessageRegistry.register`; the session
core looks types up here and never names them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signaling.session import Session


class ErrorCode:
    """Stable `code` values of `{"type": "error"}` messages (see docs/protocol.md)."""

    BAD_JSON = "bad_json"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FIELD = "bad_field"
    NOT_JOINED = "not_joined"
    ALREADY_JOINED = "already_joined"
    UNKNOWN_LANG = "unknown_lang"
    ROOM_FULL = "room_full"
    BAD_SDP = "bad_sdp"
    RENEGOTIATION_UNSUPPORTED = "renegotiation_unsupported"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    ICE_FAILED = "ice_failed"
    RESUME_FAILED = "resume_failed"
    UNKNOWN_PARTICIPANT = "unknown_participant"
    UNAUTHORIZED = "unauthorized"
    WRONG_PASSCODE = "wrong_passcode"
    RETRY_LATER = "retry_later"
    TOO_MANY_ROOMS = "too_many_rooms"
    TOO_MANY_SOCKETS = "too_many_sockets"
    JOIN_TIMEOUT = "join_timeout"
    BAD_ORIGIN = "bad_origin"


class ProtocolError(Exception):
    """A client mistake. `close_code` set means the socket is closed after the error."""

    def __init__(
        self, code: str, message: str, close_code: int | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code
        self.extra = extra
        """More fields for the client, e.g. `retry_after` seconds."""

    def to_message(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message, **self.extra}


Message = dict[str, Any]
FieldCheck = Callable[[Any], Any]
"""Returns the value to use, or raises ValueError saying what is wrong."""
Handler = Callable[["Session", Message], Awaitable[None]]


def text(
    min_length: int = 1,
    max_length: int = 64,
    pattern: str | None = None,
    printable: bool = False,
) -> FieldCheck:
    """A string field of bounded length, optionally matching `pattern` in full."""
    compiled = re.compile(pattern) if pattern is not None else None

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if not min_length <= len(value) <= max_length:
            raise ValueError(f"must be {min_length}-{max_length} characters long")
        if compiled is not None and not compiled.fullmatch(value):
            raise ValueError(f"must match {compiled.pattern}")
        if printable and not is_display_name(value):
            raise ValueError("must be printable characters, not only spaces")
        return value

    return check


JOINERS = frozenset("\u200c\u200d")
"""Zero-width non-joiner and joiner: invisible, yet part of how Persian, Hindi and other
scripts spell words, and of emoji sequences such as 👨‍👩‍👧. Every other format character
(bidi overrides and isolates, zero-width spaces, tags) stays refused: they can make a
name display as something else than it is."""


def is_display_name(value: str) -> bool:
    """Printable characters and joiners, with at least one visible character."""
    if not all(char.isprintable() or char in JOINERS for char in value):
        return False
    return any(not char.isspace() and char not in JOINERS for char in value)


@dataclass(frozen=True)
class optional:
    """A field the client may leave out; when present it must pass `check`."""

    check: FieldCheck

    def __call__(self, value: Any) -> Any:
        return self.check(value)


@dataclass(frozen=True)
class MessageType:
    name: str
    fields: Mapping[str, FieldCheck]
    handler: Handler
    requires_join: bool

    def validate(self, message: Message) -> Message:
        """The message with each declared field checked; unknown fields are ignored."""
        clean: Message = {"type": self.name}
        for field, check in self.fields.items():
            if field not in message:
                if isinstance(check, optional):
                    continue
                raise ProtocolError(ErrorCode.BAD_FIELD, f"{self.name}: missing field {field!r}")
            try:
                clean[field] = check(message[field])
            except ValueError as error:
                raise ProtocolError(
                    ErrorCode.BAD_FIELD, f"{self.name}: field {field!r} {error}"
                ) from error
        return clean


class MessageRegistry:
    def __init__(self) -> None:
        self._types: dict[str, MessageType] = {}

    def register(
        self,
        name: str,
        handler: Handler,
        fields: Mapping[str, FieldCheck] | None = None,
        *,
        requires_join: bool = True,
    ) -> None:
        if name in self._types:
            raise ValueError(f"message type {name!r} is already registered")
        self._types[name] = MessageType(name, dict(fields or {}), handler, requires_join)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def parse(self, raw: str) -> tuple[MessageType, Message]:
        """The message's type entry and the decoded object (fields not yet validated)."""
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError) as error:  # RecursionError: absurdly deep nesting
            raise ProtocolError(ErrorCode.BAD_JSON, f"not JSON: {error}") from error
        if not isinstance(message, dict):
            raise ProtocolError(ErrorCode.BAD_JSON, "a message must be a JSON object")
        name = message.get("type")
        if not isinstance(name, str):
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, "missing string field 'type'")
        kind = self._types.get(name)
        if kind is None:
            known = ", ".join(sorted(self._types))
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown type {name!r} (known: {known})")
        return kind, message
