"""What idle rooms cost: N rooms of one silent participant each, opened from one client.

    .venv/bin/python -m bench.many_rooms            # 500 rooms, 10 s measured (under 1 min)
    .venv/bin/python -m bench.many_rooms --rooms 100 --seconds 5

The server is `app.py --no-translation --http` in its own process. Each room's participant
joins over its own WebSocket and sends no media, as a phone whose page is open but whose
microphone never connected. After the rooms have settled (a silent room's mixer sleeps
after 3 s), for `--seconds` it prints the server's CPU use, `/health` latency (median and
worst of requests every 0.25 s) and mixer ticks run, late and skipped (from /health).
Before rooms slept, 500 of them took 101 % CPU, /health 70 ms, 6,454 late ticks per 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp

from bench.running import run
from bench.soak import free_port, health, server_stats

ROOT = Path(__file__).resolve().parent.parent
SETTLE_SECONDS = 5.0
"""Past the mixer's 3 s of silence before it sleeps, so the window sees the steady state."""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def measure(rooms: int, seconds: float) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "app.py", "--no-translation", "--http", "--host", "127.0.0.1",
        "--port", str(port), "--ice-address", "127.0.0.1", "--log-level", "ERROR",
        "--max-rooms", str(rooms), "--max-sockets-per-address", str(rooms),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    if b"listening" not in await process.stdout.readline():
        raise SystemExit("the server did not start")
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sockets = []
    try:
        idle = server_stats(process.pid)
        for index in range(rooms):
            ws = await session.ws_connect(f"{base}/ws")
            await ws.send_json({"type": "join", "room": f"quiet{index}", "name": f"q{index}",
                                "lang": "eng"})
            joined = await ws.receive_json(timeout=30)
            if joined["type"] != "joined":
                raise SystemExit(f"room {index}: {joined}")
            sockets.append(ws)
        await asyncio.sleep(SETTLE_SECONDS)
        before = (await health(session, base))["mixers"]
        cpu_before, started = cpu_seconds(process.pid), time.monotonic()
        latencies = []
        while time.monotonic() - started < seconds:
            asked = time.perf_counter()
            await health(session, base)
            latencies.append((time.perf_counter() - asked) * 1000)
            await asyncio.sleep(0.25)
        took = time.monotonic() - started
        cpu = (cpu_seconds(process.pid) - cpu_before) / took * 100
        after = (await health(session, base))["mixers"]
        held = server_stats(process.pid)
        per_10s = {key: round((after[key] - before[key]) * 10 / took)
                   for key in ("ticks", "late_ticks", "skipped_ticks")}
        print(f"bench.many_rooms: {rooms} rooms of one silent participant, measured {took:.1f} s "
              f"after {SETTLE_SECONDS:g} s settling")
        print(f"  server CPU {cpu:.1f} %; /health median {statistics.median(latencies):.1f} ms, "
              f"worst {max(latencies):.1f} ms ({len(latencies)} requests)")
        print(f"  mixers ticking {after['ticking']} of {rooms}; per 10 s: ticks "
              f"{per_10s['ticks']}, late {per_10s['late_ticks']}, skipped "
              f"{per_10s['skipped_ticks']}")
        print(f"  RSS {idle['rss_kb'] / 1024:.1f} MB idle -> {held['rss_kb'] / 1024:.1f} MB "
              f"with the rooms, threads {held['threads']}")
    finally:
        for ws in sockets:
            await ws.close()
        await session.close()
        process.terminate()
        await process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rooms", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    args = parser.parse_args()
    run(measure(args.rooms, args.seconds))


if __name__ == "__main__":
    main()
