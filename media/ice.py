"""ICE configuration: STUN/TURN servers, and which addresses the server offers as candidates.

aioice picks host candidates from every interface except loopback, and aiortc falls back to
Google's STUN server when none is configured. The server overrides both, here only.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import aioice.ice
import ifaddr
from aiortc import RTCConfiguration, RTCIceServer

_SCHEMES = ("stun", "stuns", "turn", "turns")


def parse_ice_server(spec: str) -> RTCIceServer:
    """`stun:host[:port]` or `turn[s]:user:password@host[:port][?transport=tcp]`.

    User and password are percent-decoded, so `%40` stands for `@` and `%3A` for `:`.
    """
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in _SCHEMES or not rest:
        raise ValueError(f"ICE server {spec!r}: expected stun:, stuns:, turn: or turns: URL")
    credentials, at, address = rest.rpartition("@")
    if not at:
        if scheme.startswith("turn"):
            raise ValueError(f"ICE server {spec!r}: TURN needs user:password@host")
        return RTCIceServer(urls=spec)
    if scheme.startswith("stun"):
        raise ValueError(f"ICE server {spec!r}: STUN takes no credentials")
    user, colon, password = credentials.partition(":")
    if not user or not colon or not password or not address:
        raise ValueError(f"ICE server {spec!r}: TURN needs user:password@host")
    return RTCIceServer(
        urls=f"{scheme}:{address}", username=unquote(user), credential=unquote(password)
    )


def browser_ice_server(server: RTCIceServer) -> dict[str, Any]:
    """The `RTCIceServer` dictionary a browser's RTCPeerConnection takes."""
    urls = [server.urls] if isinstance(server.urls, str) else list(server.urls)
    entry: dict[str, Any] = {"urls": urls}
    if server.username is not None:
        entry["username"] = server.username
        entry["credential"] = server.credential
    return entry


def rtc_configuration(servers: Sequence[RTCIceServer]) -> RTCConfiguration:
    """Always explicit: an empty list means no STUN at all, not aiortc's Google default."""
    return RTCConfiguration(iceServers=list(servers))


@dataclass(frozen=True)
class HostAddresses:
    """Addresses to gather on (`bind`) and the public ones to announce instead of a wildcard."""

    bind: tuple[str, ...]
    announce: dict[str, str]
    """Wildcard ("0.0.0.0" or "::") -> the address offered for candidates bound on it."""


def plan_host_addresses(addresses: Sequence[str]) -> HostAddresses:
    """Addresses of this machine are bound as they are. One address per IP family that is
    not (a public address behind 1:1 NAT) is served on the wildcard address and announced."""
    bind: list[str] = []
    announce: dict[str, str] = {}
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError as error:
            raise ValueError(f"ICE address {text!r} is not an IP address") from error
        if _is_local(str(address)):
            bind.append(str(address))
            continue
        wildcard = "0.0.0.0" if address.version == 4 else "::"
        if wildcard in announce:
            raise ValueError(
                f"only one non-local IPv{address.version} ICE address can be announced, "
                f"got {announce[wildcard]} and {address}"
            )
        announce[wildcard] = str(address)
        bind.append(wildcard)
    return HostAddresses(tuple(bind), announce)


_plan: HostAddresses | None = None
_gather_host_addresses = aioice.ice.get_host_addresses
_gather_candidates = aioice.ice.Connection.get_component_candidates


def offer_host_addresses(addresses: Sequence[str] | None) -> None:
    """Make every ICE agent in this process offer exactly `addresses` as host candidates.

    None restores aioice's own choice. Process-wide, because aioice has no per-connection
    setting; the server calls it once at start-up.
    """
    global _plan
    _plan = None if addresses is None else plan_host_addresses(addresses)
    aioice.ice.get_host_addresses = _host_addresses
    aioice.ice.Connection.get_component_candidates = _component_candidates  # type: ignore[method-assign]


def local_addresses() -> list[str]:
    """Every IP address of this machine's interfaces, loopback included."""
    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            found.append(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
    return found


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _plan is None:
        return _gather_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
    wanted = {4: use_ipv4, 6: use_ipv6}
    return [a for a in _plan.bind if wanted[ipaddress.ip_address(a).version]]


async def _component_candidates(
    self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5  # noqa: ASYNC109  (aioice signature)
) -> list[aioice.Candidate]:
    candidates = await _gather_candidates(self, component, addresses, timeout)
    if _plan is not None:
        for candidate in candidates:
            if candidate.type == "host" and candidate.host in _plan.announce:
                candidate.host = _plan.announce[candidate.host]
    return candidates


def _is_local(address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True
