"""app.py: flags and their environment variables, TLS, and a real start and stop."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import signal
import subprocess
import sys
from ctypes.util import find_library
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from ai.models import TestAssets
from app import FLAGS, build_parser, parse_settings
from signaling import memory
from signaling.session import SessionLimits
from signaling.tls import self_signed_certificate
from tests.fixtures.processes import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_help_documents_every_flag_and_its_variable() -> None:
    text = " ".join(build_parser().format_help().split())
    for flag in FLAGS:
        assert flag.name in text
        assert f"env: {flag.env}" in text
    assert "BABBLEFISH_PORT" in text and "BABBLEFISH_ICE_SERVER" in text


def test_defaults() -> None:
    settings = parse_settings([], {})
    assert (settings.host, settings.port, settings.http) == ("0.0.0.0", 8443, False)
    assert settings.data_dir == Path("data") and settings.cert is None
    assert settings.ice_servers == [] and settings.ice_addresses is None
    assert settings.max_participants == 50
    assert settings.resume_grace == 30.0


def test_resume_grace_from_flag_or_environment() -> None:
    assert parse_settings(["--resume-grace", "0"], {}).resume_grace == 0.0
    assert parse_settings([], {"BABBLEFISH_RESUME_GRACE": "90"}).resume_grace == 90.0


def test_environment_overrides_defaults_and_flags_override_the_environment() -> None:
    env = {
        "BABBLEFISH_PORT": "9000",
        "BABBLEFISH_HTTP": "yes",
        "BABBLEFISH_ICE_SERVER": "stun:stun.example.org:3478, turn:u:p@turn.example.org",
        "BABBLEFISH_ICE_ADDRESS": "127.0.0.1",
        "BABBLEFISH_MAX_PARTICIPANTS": "4",
        "BABBLEFISH_DATA_DIR": "/var/lib/babblefish",
    }
    settings = parse_settings([], env)
    assert settings.port == 9000 and settings.http and settings.max_participants == 4
    assert settings.data_dir == Path("/var/lib/babblefish")
    assert [s.urls for s in settings.ice_servers] == [
        "stun:stun.example.org:3478",
        "turn:turn.example.org",
    ]
    assert settings.ice_servers[1].username == "u"
    assert settings.ice_addresses == ["127.0.0.1"]

    argv = [
        "--port",
        "9443",
        "--ice-server",
        "stun:a.example.org",
        "--ice-server",
        "stun:b.example.org",
    ]
    settings = parse_settings(argv, env)
    assert settings.port == 9443
    assert [s.urls for s in settings.ice_servers] == ["stun:a.example.org", "stun:b.example.org"]
    assert parse_settings([], {"BABBLEFISH_HTTP": "0"}).http is False


def test_access_and_limit_flags_reach_the_server_settings() -> None:
    env = {
        "BABBLEFISH_ACCESS_TOKEN": "from-env",
        "BABBLEFISH_ALLOWED_ORIGIN": "https://a.example, https://b.example:8443, null",
        "BABBLEFISH_JOIN_TIMEOUT": "12.5",
    }
    argv = ["--max-rooms", "7", "--max-sockets-per-address", "3", "--rest-concurrency", "2",
            "--max-upload-bytes", "1000", "--idle-timeout", "4", "--tls-handshake-timeout", "2.5",
            "--memory-trim-interval", "0", "--trusted-proxy", "10.0.0.0/8",
            "--trusted-proxy", "192.0.2.1"]
    settings = parse_settings(argv, env)
    assert settings.access_token == "from-env"
    assert settings.allowed_origins == ["https://a.example", "https://b.example:8443", "null"]
    assert settings.limits.join_timeout == 12.5 and settings.limits.sockets_per_address == 3
    assert settings.limits.outbox == SessionLimits().outbox  # the rest of the group stays
    assert (settings.max_rooms, settings.rest_concurrency) == (7, 2)
    assert (settings.max_upload_bytes, settings.idle_timeout) == (1000, 4.0)
    assert settings.tls_handshake_timeout == 2.5 and settings.memory_trim_interval == 0
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.0.2.1"]
    defaults = parse_settings([], {})
    assert defaults.access_token is None and defaults.allowed_origins == []
    assert defaults.limits == SessionLimits()
    assert defaults.tls_handshake_timeout == 10.0


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--port", "0"], {}),
        ([], {"BABBLEFISH_PORT": "http"}),
        ([], {"BABBLEFISH_HTTP": "maybe"}),
        (["--ice-server", "turn:host"], {}),
        (["--ice-address", "my-host"], {}),
        (["--cert", "a.pem"], {}),
        (["--max-participants", "0"], {}),
        (["--resume-grace", "-1"], {}),
        ([], {"BABBLEFISH_RESUME_GRACE": "nan"}),
        (["--join-timeout", "0"], {}),
        (["--allowed-origin", "evil.example"], {}),
        ([], {"BABBLEFISH_MAX_ROOMS": "-3"}),
    ],
)
def test_bad_settings_exit_with_a_message(
    argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_settings(argv, env)
    assert caught.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_self_signed_certificate_is_made_once_and_reused(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path, ["localhost", "127.0.0.1", "192.0.2.7"])
    first = cert.read_bytes()
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    again, _ = self_signed_certificate(tmp_path, ["localhost", "other.example"])
    assert again == cert and cert.read_bytes() == first
    names = (
        x509.load_pem_x509_certificate(first)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("192.0.2.7"),
    }


async def start_app(
    *args: str, env: dict[str, str] | None = None, start_within: float = 60
) -> tuple[asyncio.subprocess.Process, list[str]]:
    """Starts app.py with `args`; returns it once it listens, with its output until then
    (the announcement last). The caller stops it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "app.py"), *args, cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    startup: list[str] = []
    try:
        async with asyncio.timeout(start_within):
            while not startup or "listening" not in startup[-1]:
                startup.append((await process.stdout.readline()).decode())
                assert startup[-1], "app.py exited before listening:\n" + "".join(startup)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process, startup


async def serve_once(
    args: list[str], env: dict[str, str], stop: signal.Signals = signal.SIGTERM
) -> tuple[list[str], dict[str, object], int]:
    """Start app.py (rooms only: the engines are tested on their own fixtures), read its
    output up to its announcement (the last line returned), GET /health, stop it with
    `stop`."""
    process, startup = await start_app("--no-translation", *args, env=env)
    assert process.stdout is not None
    try:
        async with asyncio.timeout(60):
            scheme = "http" if "--http" in args else "https"
            url = f"{scheme}://127.0.0.1:{env['BABBLEFISH_PORT']}/health"
            async with aiohttp.ClientSession() as session:
                async with session.get(url, ssl=False) as reply:
                    health = await reply.json()
                async with session.get(url.replace("/health", "/languages"), ssl=False) as reply:
                    health["languages"] = (await reply.json())["languages"]
            process.send_signal(stop)
            await process.stdout.read()
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return startup, health, code


async def test_server_starts_with_tls_reuses_its_certificate_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    env = {"BABBLEFISH_PORT": str(free_port()), "BABBLEFISH_DATA_DIR": str(tmp_path)}
    startup, health, code = await serve_once(["--host", "127.0.0.1"], env)
    line = startup[-1]
    assert f"https://127.0.0.1:{env['BABBLEFISH_PORT']}/" in line and "self-signed" in line
    assert health["status"] == "ok" and health["rooms"] == 0 and health["participants"] == 0
    assert code == 0
    # --no-translation: every language can be listened in, none recognized or spoken.
    languages = health["languages"]
    assert isinstance(languages, list) and languages
    assert all(lang["text_out"] and not lang["speech_in"] and lang["speech_out"] is None
               for lang in languages)
    cert = tmp_path / "tls" / "self-signed.crt"
    first = cert.read_bytes()

    env["BABBLEFISH_PORT"] = str(free_port())
    _, _, code = await serve_once(["--host", "127.0.0.1"], env, signal.SIGINT)
    assert code == 0 and cert.read_bytes() == first


async def test_plain_http_mode(tmp_path: Path) -> None:
    env = {"BABBLEFISH_PORT": str(free_port()), "BABBLEFISH_DATA_DIR": str(tmp_path)}
    startup, health, code = await serve_once(
        ["--http", "--host", "127.0.0.1", "--log-level", "DEBUG"], env
    )
    assert startup[-1].strip().startswith("BabbleFish is listening: open http://127.0.0.1:")
    assert health["status"] == "ok" and code == 0
    assert health["allocator"] == "system"
    assert not (tmp_path / "tls").exists()
    # What start-up made is never garbage: the collector's full walks skip it.
    frozen = [re.search(r"froze (\d+) start-up objects", line) for line in startup]
    assert any(match and int(match[1]) > 10_000 for match in frozen), startup


@pytest.mark.skipif(find_library("jemalloc") is None,
                    reason="libjemalloc is not installed (apt-get install libjemalloc2)")
async def test_allocator_jemalloc_restarts_the_server_on_it(tmp_path: Path) -> None:
    env = {"BABBLEFISH_PORT": str(free_port()), "BABBLEFISH_DATA_DIR": str(tmp_path),
           "BABBLEFISH_ALLOCATOR": "jemalloc"}
    startup, health, code = await serve_once(["--http", "--host", "127.0.0.1"], env)
    assert health["allocator"] == "jemalloc" and code == 0, startup


def test_allocator_jemalloc_that_does_not_load_exits_with_a_message(tmp_path: Path) -> None:
    # As if the restarted server had come back without the library preloaded.
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--no-translation", "--allocator", "jemalloc"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "BABBLEFISH_ALLOCATOR_RESTARTED": "1", "LD_PRELOAD": ""},
    )
    assert result.returncode == 1
    assert "still not running on jemalloc" in result.stderr, result.stderr


def test_allocator_jemalloc_without_the_library_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "find_library", lambda name: None)
    monkeypatch.setattr(memory, "running_allocator", lambda: "system")
    with pytest.raises(memory.AllocatorUnavailable, match="apt-get install libjemalloc2"):
        memory.restart_on("jemalloc", {})
    memory.restart_on("system", {})  # the default restarts nothing


def test_missing_models_exit_with_one_message_naming_each_flag(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--models-dir", str(tmp_path)],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    for flag in ("--seamless-model", "--speaker-model", "--kokoro-model", "--kokoro-voices"):
        assert flag in result.stderr
    assert "facebook/seamless-m4t-v2-large" in result.stderr


def test_missing_cascade_models_name_their_flags_and_not_seamless(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--engine", "cascade", "--models-dir",
         str(tmp_path)],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    for flag in ("--asr-model", "--mt-model", "--speaker-model", "--kokoro-model"):
        assert flag in result.stderr
    assert "Systran/faster-whisper-small" in result.stderr
    assert "facebook/nllb-200-distilled-600M" in result.stderr
    assert "--seamless-model" not in result.stderr


def test_an_unknown_engine_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--engine", "marian"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "one of seamless, cascade" in result.stderr
async def test_sigterm_with_the_engines_loaded_and_speech_in_flight_exits_0(
    tmp_path: Path, tiny_seamless_dir: Path, wespeaker_dir: Path, test_assets: TestAssets
) -> None:
    port = free_port()
    process, startup = await start_app(
        "--http", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path),
        "--seamless-model", str(tiny_seamless_dir), "--speaker-model", str(wespeaker_dir),
        "--kokoro-model", str(test_assets.kokoro_model),
        "--kokoro-voices", str(test_assets.kokoro_voices),
        env={"HF_HUB_OFFLINE": "1"}, start_within=600,  # start-up warms every Kokoro language
    )
    assert process.stdout is not None
    output = "".join(startup).encode()
    try:
        async with asyncio.timeout(600):
            base = f"http://127.0.0.1:{port}"
            text = "Good morning everyone, today we talk about the new project and its parts."
            async with aiohttp.ClientSession() as session:
                requests = [
                    asyncio.create_task(session.post(f"{base}/speak", json=body))
                    for body in (
                        {"text": text, "lang": "eng"},
                        {"text": text, "lang": "spa"},
                    )
                ] + [
                    asyncio.create_task(session.post(f"{base}/translate", json={
                        "text": text, "source_lang": "eng", "target_lang": "spa"}))
                ]
                async with session.get(f"{base}/health") as reply:
                    assert reply.status == 200  # the requests above are in by now
                process.send_signal(signal.SIGTERM)
                replies = await asyncio.gather(*requests, return_exceptions=True)
                for reply in replies:
                    if isinstance(reply, aiohttp.ClientResponse):
                        assert reply.status in (200, 503), reply.status
                        reply.release()
            output += await process.stdout.read()
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text_out = output.decode(errors="replace")
    assert code == 0, text_out[-3000:]
    assert "terminate called" not in text_out and "Traceback" not in text_out, text_out[-3000:]


async def test_connections_that_never_complete_a_request_are_closed(tmp_path: Path) -> None:
    port = free_port()
    env = {"BABBLEFISH_PORT": str(port), "BABBLEFISH_DATA_DIR": str(tmp_path),
           "BABBLEFISH_IDLE_TIMEOUT": "0.5"}
    process, _ = await start_app("--no-translation", "--http", "--host", "127.0.0.1", env=env)
    try:
        async with asyncio.timeout(60):
            silent = await asyncio.open_connection("127.0.0.1", port)
            trickle = await asyncio.open_connection("127.0.0.1", port)
            trickle[1].write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a slowloris never ends it
            for reader, _ in (silent, trickle):
                assert await reader.read() == b""  # the server closed it
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()


async def test_a_connection_that_never_finishes_its_tls_handshake_is_closed(
    tmp_path: Path,
) -> None:
    """asyncio's own deadline is 60 s; the flag's (here half a second) closes it first,
    before the idle timeout (which only starts once the handshake is done) could."""
    port = free_port()
    env = {"BABBLEFISH_PORT": str(port), "BABBLEFISH_DATA_DIR": str(tmp_path),
           "BABBLEFISH_TLS_HANDSHAKE_TIMEOUT": "0.5", "BABBLEFISH_IDLE_TIMEOUT": "600"}
    process, _ = await start_app("--no-translation", "--host", "127.0.0.1", env=env)
    try:
        mute, _ = await asyncio.open_connection("127.0.0.1", port)  # TCP only, no ClientHello
        half, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x16\x03\x01")  # the first bytes of a handshake, never the rest
        async with asyncio.timeout(30):  # far under asyncio's 60 s
            for reader in (mute, half):
                assert await reader.read() == b""  # the server closed it
        async with aiohttp.ClientSession() as session:  # a real client is served as before
            async with session.get(f"https://127.0.0.1:{port}/health", ssl=False) as reply:
                assert reply.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()
