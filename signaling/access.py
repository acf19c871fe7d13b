"""Who may use the server: the operator token, room passcodes, allowed page origins, and a
per-address backoff that slows down guessing either secret."""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from signaling.messages import ErrorCode, ProtocolError

FREE_FAILURES = 3
"""Wrong guesses from one address before it has to wait: enough for a typo or two."""

FIRST_WAIT_SECONDS = 1.0
MAX_WAIT_SECONDS = 300.0
"""Each failure past the free ones doubles the wait, up to 5 minutes: a guesser gets about
300 tries a day from one address, a person who mistyped waits a second or two."""

REMEMBERED_ADDRESSES = 10_000
"""Addresses with failures kept at most; the one failing longest ago is forgotten first,
so a spray from many addresses costs bounded memory."""


@dataclass
class _Failures:
    count: int
    until: float


class FailureBackoff:
    """Per client address: how long its next guess must wait after wrong ones."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def wait(self, address: str) -> float:
        """Seconds before a guess from `address` is considered; 0 when it may try now."""
        entry = self._failures.get(address)
        return 0.0 if entry is None else max(0.0, entry.until - self._clock())

    def failed(self, address: str) -> None:
        entry = self._failures.pop(address, None) or _Failures(0, 0.0)
        entry.count += 1
        excess = entry.count - FREE_FAILURES
        if excess > 0:
            wait = min(MAX_WAIT_SECONDS, FIRST_WAIT_SECONDS * 2 ** (excess - 1))
            entry.until = self._clock() + wait
        self._failures[address] = entry
        while len(self._failures) > REMEMBERED_ADDRESSES:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


def _normalized(address: str) -> str | None:
    """`address` as an IP address in canonical form; None if it is not one."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def _same_secret(given: object, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


class Access:
    """The server's access rules. `token` None means the server is open to anyone who can
    reach it; rooms may still be locked with a passcode."""

    def __init__(
        self,
        token: str | None = None,
        allowed_origins: tuple[str, ...] = (),
        backoff: FailureBackoff | None = None,
        trusted_proxies: tuple[str, ...] = (),
    ) -> None:
        self.token = token or None
        self.allowed_origins = frozenset(origin.rstrip("/").lower() for origin in allowed_origins)
        self.backoff = backoff or FailureBackoff()
        self.trusted_proxies = tuple(
            ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies
        )

    def client_address(self, request: web.BaseRequest) -> str:
        """Whose request this is, for per-address limits and the backoff: the peer's
        address, or behind a `--trusted-proxy` the address that proxy saw, from
        `X-Forwarded-For` (read from the right, past every trusted hop: what a client
        writes there itself is further left and never reached)."""
        address = request.remote or ""
        if not self._trusted(address):
            return address
        hops = ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
        for hop in reversed(hops):
            hop = hop.strip()
            if not self._trusted(hop):
                return _normalized(hop) or address
            address = hop
        return address

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)

    def check_token(self, address: str, given: object) -> None:
        """Raises `unauthorized` (or `retry_later` while `address` must wait)."""
        if self.token is None:
            return
        self._check(address, given, self.token, ErrorCode.UNAUTHORIZED, "access token")

    def check_passcode(self, address: str, given: object, passcode: str | None) -> None:
        """Raises `wrong_passcode` (or `retry_later`) unless the room is open or `given` fits."""
        if passcode is None:
            return
        self._check(address, given, passcode, ErrorCode.WRONG_PASSCODE, "room passcode")

    def _check(self, address: str, given: object, expected: str, code: str, what: str) -> None:
        wait = self.backoff.wait(address)
        if wait > 0:
            raise retry_later(wait)
        if _same_secret(given, expected):
            self.backoff.succeeded(address)
            return
        if given is None:
            # Not a guess: a first visit that does not know yet that it needs one.
            raise ProtocolError(code, f"this needs the {what}")
        self.backoff.failed(address)
        raise ProtocolError(code, f"wrong {what}")

    def origin_allowed(self, request: web.BaseRequest) -> bool:
        """A browser page from this server or from an `--allowed-origin` may open sockets.
        Clients that send no Origin (not browsers) are not a cross-site risk and pass."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True
        origin = origin.rstrip("/").lower()
        if origin in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == request.host.lower()

    def rest_middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """With a token, every request but GETs of the page, its files, `/health` and
        `/languages` needs `Authorization: Bearer TOKEN`. `/ws` checks it in `join`."""

        @web.middleware
        async def require_token(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            if self.token is None or _public(request):
                return await handler(request)
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            address = self.client_address(request)
            try:
                self.check_token(address, given if scheme.lower() == "bearer" else None)
            except ProtocolError as error:
                return _refusal(error)
            return await handler(request)

        return require_token


PROTECTED_GETS = frozenset({"/metrics"})


def _public(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") and request.path not in PROTECTED_GETS


def retry_later(wait: float) -> ProtocolError:
    seconds = math.ceil(wait)
    return ProtocolError(
        ErrorCode.RETRY_LATER,
        f"too many wrong guesses from your address; try again in {seconds} s",
        retry_after=seconds,
    )


def _refusal(error: ProtocolError) -> web.Response:
    body = {"error": {"code": error.code, "message": error.message}}
    if error.code == ErrorCode.RETRY_LATER:
        return web.json_response(
            body, status=429, headers={"Retry-After": str(error.extra["retry_after"])}
        )
    return web.json_response(body, status=401, headers={"WWW-Authenticate": "Bearer"})
