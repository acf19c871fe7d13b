"""TLS for the server: the operator's certificate, or a self-signed one made once."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 825

HANDSHAKE_TIMEOUT_SECONDS = 10.0
"""How long a new connection may take to finish its TLS handshake. A browser on a slow
phone link needs about a second; asyncio's own default, 60 s, let a client that opens
connections and never says a word hold each one for a minute."""


def self_signed_certificate(directory: Path, hosts: Sequence[str]) -> tuple[Path, Path]:
    """(certificate, key) files in `directory`, made on first use and kept after.

    `hosts` become the subject alternative names (IP addresses or DNS names). A kept
    certificate is replaced only once it has expired.
    """
    cert_path, key_path = directory / "self-signed.crt", directory / "self-signed.key"
    if cert_path.is_file() and key_path.is_file() and not _expired(cert_path):
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "BabbleFish (self-signed)")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_bytes)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_ssl_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def _alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.split("%")[0])))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _expired(cert_path: Path) -> bool:
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return True
    return certificate.not_valid_after_utc <= datetime.datetime.now(datetime.UTC)


class TLSSite(web.BaseSite):
    """Where the server listens over TLS: `web.TCPSite` gives asyncio no handshake
    deadline, so this one does the same with `handshake_timeout`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        handshake_timeout: float = HANDSHAKE_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self.host, self.port, self.handshake_timeout = host, port, handshake_timeout

    @property
    def name(self) -> str:
        return f"https://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        handler = self._runner.server
        assert handler is not None  # BaseSite refuses a runner that is not set up
        self._server = await asyncio.get_running_loop().create_server(
            handler,
            self.host,
            self.port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self.handshake_timeout,
            backlog=self._backlog,
        )
