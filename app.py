"""BabbleFish server: `python app.py --help`.

Every flag also reads an environment variable (shown in --help); a flag on the command
line wins over the variable, which wins over the default.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from ai.models import ENGINES, MODEL_SPECS, MissingModels, ModelSettings, ModelSpec, resolve_all
from media.ice import local_addresses, parse_ice_server, plan_host_addresses
from signaling.languages import table_languages, untranslated_languages
from signaling.memory import (
    ALLOCATORS,
    AllocatorUnavailable,
    freeze_start_up,
    restart_on,
    running_allocator,
)
from signaling.tls import (
    HANDSHAKE_TIMEOUT_SECONDS,
    TLSSite,
    self_signed_certificate,
    server_ssl_context,
)
from signaling.web import ServerSettings, create_app

ENV_PREFIX = "BABBLEFISH_"


def _model_dest(spec: ModelSpec) -> str:
    return spec.flag.lstrip("-").replace("-", "_")


@dataclass
class Settings(ServerSettings):
    host: str = "0.0.0.0"
    port: int = 8443
    cert: Path | None = None
    key: Path | None = None
    data_dir: Path = Path("data")
    http: bool = False
    log_level: str = "INFO"
    no_translation: bool = False
    allocator: str = "system"
    download_models: bool = False
    threads: int = 0
    models_dir: Path | None = None
    seamless_model: str | None = None
    speaker_model: str | None = None
    kokoro_model: str | None = None
    kokoro_voices: str | None = None
    ja_dictionary: str | None = None
    # -- the cascade engine (issue 9) --
    engine: str = "seamless"
    asr_model: str | None = None
    mt_model: str | None = None
    english_from: str = "whisper"
    idle_timeout: float = 15.0
    """Seconds a connection may stay open without a complete request (a TLS connection
    that never sends one, a slowloris trickling its headers) or idle between requests."""
    tls_handshake_timeout: float = HANDSHAKE_TIMEOUT_SECONDS
    """Seconds a connection may take to finish its TLS handshake."""

    def model_settings(self) -> ModelSettings:
        paths = {spec.key: getattr(self, _model_dest(spec)) for spec in MODEL_SPECS}
        return ModelSettings(self.models_dir, {k: v for k, v in paths.items() if v})


@dataclass(frozen=True)
class Flag:
    """One command-line flag and its environment variable; `dest` names a `Settings` field."""

    name: str
    dest: str
    help: str
    parse: Callable[[str], Any] = str
    repeatable: bool = False
    switch: bool = False
    metavar: str | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.lstrip("-").replace("-", "_").upper()


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError("a port is 1-65535")
    return port


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be a positive number of seconds")
    return value


def _origin(text: str) -> str:
    if text == "null":
        return text  # pages opened from disk (file://); sandboxed frames send it too
    scheme, _, host = text.rstrip("/").partition("://")
    if scheme not in ("http", "https") or not host or "/" in host:
        raise ValueError("an origin is scheme://host[:port], e.g. https://meet.example.org")
    return text


def _grace_seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 3600:
        raise ValueError("must be from 0 to 3600")
    return value


def _proxy(text: str) -> str:
    ipaddress.ip_network(text, strict=False)  # raises ValueError unless an address/network
    return text


def _ice_address(text: str) -> str:
    plan_host_addresses([text])  # raises ValueError for anything but an IP address
    return text


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"one of {', '.join(allowed)}")
        return text

    return parse


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("one of DEBUG, INFO, WARNING, ERROR")
    return level


FLAGS: list[Flag] = [
    Flag("--host", "host", "address to listen on", metavar="ADDR"),
    Flag("--port", "port", "port for HTTPS and WSS (HTTP with --http)", _port),
    Flag("--cert", "cert", "TLS certificate (PEM); with --key, replaces the self-signed one",
         Path, metavar="FILE"),
    Flag("--key", "key", "private key (PEM) of --cert", Path, metavar="FILE"),
    Flag("--data-dir", "data_dir",
         "where the server keeps its state (e.g. the self-signed certificate in tls/)",
         Path, metavar="DIR"),
    Flag("--http", "http", "serve plain HTTP, for use behind a TLS-terminating proxy",
         switch=True),
    Flag("--ice-server", "ice_servers",
         "STUN/TURN server for both ends, repeatable: stun:HOST[:PORT] or "
         "turn[s]:USER:PASSWORD@HOST[:PORT][?transport=tcp] (percent-encode ':' and '@' "
         "in USER/PASSWORD). Default: none (no STUN; host candidates only)",
         parse_ice_server, repeatable=True, metavar="URL"),
    Flag("--ice-address", "ice_addresses",
         "address to offer as an ICE host candidate, repeatable (default: every interface "
         "but loopback). An address not on this machine (public IP behind 1:1 NAT) is "
         "served on the wildcard address and announced as given",
         _ice_address, repeatable=True, metavar="ADDR"),
    Flag("--max-participants", "max_participants", "participants per room", _positive,
         metavar="N"),
    Flag("--resume-grace", "resume_grace",
         "seconds a participant whose connection dropped keeps their place, to reconnect "
         "with the same id and voice (0: a drop is a leave)", _grace_seconds, metavar="SECONDS"),
    Flag("--ice-timeout", "ice_timeout",
         "seconds an answered offer may take to connect before its peer connection is "
         "released (the client gets ice_failed)", _seconds, metavar="SECONDS"),
    Flag("--access-token", "access_token",
         "operator token: when set, the WebSocket (a `token` field) and the REST face "
         "(Authorization: Bearer) require it; the page stays public and asks for it. "
         "Prefer the variable: a flag shows in the process list", metavar="TOKEN"),
    Flag("--allowed-origin", "allowed_origins",
         "page origin besides the server's own that may open WebSockets, repeatable, "
         "e.g. https://meet.example.org (`null`: the page opened from a file)", _origin,
         repeatable=True, metavar="ORIGIN"),
    Flag("--trusted-proxy", "trusted_proxies",
         "reverse proxy (address or network, repeatable) whose X-Forwarded-For header names "
         "the client: per-address limits and the guessing backoff then count each client on "
         "its own, not everyone as the proxy", _proxy, repeatable=True, metavar="ADDR"),
    Flag("--max-rooms", "max_rooms", "rooms open at once on this server", _positive,
         metavar="N"),
    Flag("--max-sockets-per-address", "limits.sockets_per_address",
         "WebSockets open at once from one client address", _positive, metavar="N"),
    Flag("--join-timeout", "limits.join_timeout",
         "seconds a WebSocket may stay open without joining a room", _seconds,
         metavar="SECONDS"),
    Flag("--idle-timeout", "idle_timeout",
         "seconds a connection may stay open without a complete HTTP request",
         _seconds, metavar="SECONDS"),
    Flag("--tls-handshake-timeout", "tls_handshake_timeout",
         "seconds a connection may take to finish its TLS handshake", _seconds,
         metavar="SECONDS"),
    Flag("--rest-concurrency", "rest_concurrency",
         "REST requests served at once; more get 503", _positive, metavar="N"),
    Flag("--max-upload-bytes", "max_upload_bytes", "largest REST request body", _positive,
         metavar="BYTES"),
    Flag("--memory-trim-interval", "memory_trim_interval",
         "seconds between collections of cyclic garbage (what closed connections leave) "
         "and returns of freed memory to the system (glibc's malloc_trim, on a worker "
         "thread), so a burst's high-water mark is not kept; 0: never",
         _grace_seconds, metavar="SECONDS"),
    Flag("--allocator", "allocator",
         "the C allocator: system (glibc), or jemalloc, which gives back what bursts of "
         "connections leave (the server restarts itself on libjemalloc; apt-get install "
         "libjemalloc2)", _choice(*ALLOCATORS), metavar="NAME"),
    Flag("--log-level", "log_level", "DEBUG, INFO, WARNING or ERROR", _log_level),
    Flag("--no-translation", "no_translation",
         "run rooms without the AI engines: people hear only same-language voices",
         switch=True),
    Flag("--download-models", "download_models",
         "fetch every production model (into the Hugging Face cache or --models-dir), then exit",
         switch=True),
    Flag("--threads", "threads", "CPU threads for torch and ONNX Runtime (0: their default)",
         int, metavar="N"),
    Flag("--models-dir", "models_dir", "keep downloaded models here, not in the Hugging Face "
         "cache", Path, metavar="DIR"),
    *(
        Flag(spec.flag, _model_dest(spec), f"local copy of the {spec.title}", metavar="PATH")
        for spec in MODEL_SPECS
    ),
    # -- the cascade engine (issue 9) --
    Flag("--engine", "engine",
         "seamless: SeamlessM4T v2 hears and translates (GPU advised; non-commercial weights). "
         "cascade: faster-whisper hears, NLLB-200 (CTranslate2) translates: fast on a CPU",
         _choice(*ENGINES), metavar="NAME"),
    Flag("--english-from", "english_from",
         "cascade engine: who writes English translations, whisper (its own translate task, "
         "from the speech) or mt (the text translator, from the transcript)",
         _choice("whisper", "mt"), metavar="WHO"),
]
"""A feature adds a flag here and a field of the same `dest` to `Settings` (a dotted
`dest` names a field of a frozen settings group, such as `limits.join_timeout`)."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def build_parser(flags: Sequence[Flag] = FLAGS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="BabbleFish: live speech translation rooms over WebRTC.",
        epilog="Repeatable flags read a comma-separated list from their variable. "
        "Switches read 1/true/yes/on or 0/false/no/off.",
    )
    defaults = Settings()
    for flag in flags:
        default = _setting(defaults, flag.dest)
        shown = [str(item) for item in default] if isinstance(default, list) else default
        text = f"{flag.help} [env: {flag.env}]"
        if flag.switch:
            parser.add_argument(flag.name, dest=flag.dest, action="store_true", default=None,
                                help=text)
        else:
            parser.add_argument(
                flag.name, dest=flag.dest, type=_argparse_type(flag), metavar=flag.metavar,
                action="append" if flag.repeatable else "store", default=None,
                help=f"{text} (default: {shown})" if shown not in (None, []) else text,
            )
    return parser


def parse_settings(
    argv: Sequence[str], env: Mapping[str, str], flags: Sequence[Flag] = FLAGS
) -> Settings:
    """Settings from the command line, then the environment, then the defaults."""
    parser = build_parser(flags)
    args = parser.parse_args(list(argv))
    settings = Settings()
    for flag in flags:
        value = getattr(args, flag.dest)
        if value is None and flag.env in env:
            try:
                value = _from_env(flag, env[flag.env])
            except ValueError as error:
                parser.error(f"{flag.env}={env[flag.env]!r}: {error}")
        if value is not None:
            _assign(settings, flag.dest, value)
    if (settings.cert is None) != (settings.key is None):
        parser.error("--cert and --key go together")
    return settings


def _setting(settings: Settings, dest: str) -> Any:
    value: Any = settings
    for part in dest.split("."):
        value = getattr(value, part, None)
    return value


def _assign(settings: Settings, dest: str, value: Any) -> None:
    group, _, name = dest.rpartition(".")
    if group:
        setattr(settings, group, replace(getattr(settings, group), **{name: value}))
    else:
        setattr(settings, name, value)


def _argparse_type(flag: Flag) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return flag.parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: {error}") from error

    convert.__name__ = flag.dest
    return convert


def _from_env(flag: Flag, text: str) -> Any:
    if flag.switch:
        lowered = text.strip().lower()
        if lowered not in _TRUE | _FALSE:
            raise ValueError("expected 1/true/yes/on or 0/false/no/off")
        return lowered in _TRUE
    if flag.repeatable:
        return [flag.parse(item.strip()) for item in text.split(",") if item.strip()]
    return flag.parse(text)


def _page_url(settings: Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        usable = [a for a in local_addresses() if ":" not in a and not a.startswith("127.")]
        host = usable[0] if usable else "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"{'http' if settings.http else 'https'}://{host}:{settings.port}/"


async def serve(settings: Settings, app: web.Application, ssl_context: ssl.SSLContext | None,
                note: str = "") -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully (the app's on_shutdown closes
    every socket and peer connection) and return."""
    runner = web.AppRunner(app, shutdown_timeout=5.0, keepalive_timeout=settings.idle_timeout)
    await runner.setup()
    try:
        site: web.BaseSite
        if ssl_context is None:
            site = web.TCPSite(runner, settings.host, settings.port)
        else:
            site = TLSSite(runner, settings.host, settings.port, ssl_context,
                           settings.tls_handshake_timeout)
        await site.start()
        print(f"BabbleFish is listening: open {_page_url(settings)}{note}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(sys.argv[1:] if argv is None else argv, os.environ)
    try:
        restart_on(settings.allocator)
    except AllocatorUnavailable as error:
        print(error, file=sys.stderr)
        raise SystemExit(1) from None
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.allocator != "system":
        logging.getLogger(__name__).info(
            "running on %s (MALLOC_CONF=%s)", running_allocator(), os.environ.get("MALLOC_CONF")
        )
    if settings.download_models or not settings.no_translation:
        try:
            models = resolve_all(
                settings.model_settings(), download=settings.download_models,
                engine=settings.engine,
            )
        except MissingModels as missing:
            print(missing, file=sys.stderr)
            print("Or run rooms without translation: --no-translation", file=sys.stderr)
            raise SystemExit(1) from None
        if settings.download_models:
            print("Every model is in place.")
            return
    ssl_context = None
    note = ""
    if not settings.http:
        if settings.cert is not None and settings.key is not None:
            cert, key = settings.cert, settings.key
        else:
            hosts = ["localhost", "127.0.0.1", *local_addresses(), *(settings.ice_addresses or [])]
            cert, key = self_signed_certificate(settings.data_dir / "tls", hosts)
            note = f" (self-signed certificate {cert}: the browser asks you to accept it once)"
        ssl_context = server_ssl_context(cert, key)
    if settings.access_token:
        note += " (access token required: the page asks for it once)"
    # Without engines, /languages must not promise recognition or speech it cannot give.
    app = create_app(
        settings, languages=untranslated_languages if settings.no_translation else table_languages
    )
    if not settings.no_translation:
        # Imported here so that `--no-translation` and `--help` never load torch.
        import torch

        from signaling.translation import load_engines, mount_translation

        if settings.threads:
            torch.set_num_threads(settings.threads)
        print(f"Loading the translation engines ({settings.engine}) ...", flush=True)
        mount_translation(app, load_engines(
            models, settings.threads, engine=settings.engine, english_from=settings.english_from,
        ))
    logging.getLogger(__name__).debug(
        "froze %d start-up objects out of the garbage collector's walks", freeze_start_up()
    )
    asyncio.run(serve(settings, app, ssl_context, note))
    if not settings.no_translation:
        # Everything is closed by now: sockets, peer connections, and each model's thread
        # joined (see signaling.translation). What is left is the interpreter collecting
        # torch's and transformers' object graphs, 5-20 s on a busy host, past the 5 s a
        # service manager allows for a stop; nothing of ours is lost by skipping it.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
