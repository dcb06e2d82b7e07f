"""`keyhold bench signin`: what a burst of bogus sign-ins does to everyone else.

Starts a throwaway server with the production argon2id cost (t=3, 64 MiB, p=4), registers one
member, then sends N wrong sign-ins at once, each from its own loopback address (so that the
throttle does not stop them and password hashing is what they meet). During the burst it
times a real sign-in, and token-authenticated requests (`GET /account`) every 25 ms. Reports
how the burst was answered (401 hashed, 503 turned away by the bounded queue), how long the
real sign-in and the token requests took, next to the same measured with no burst.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console

from keyhold.bench.procs import OwnServer

console = Console()
API = "/api/v1"
PASSWORD = "bench-password-not-secret"  # noqa: S105 - a throwaway account on a throwaway server


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _address(i: int) -> str:
    return f"127.77.{i // 250}.{1 + i % 250}"


async def _timed(request: Any) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    response = await request
    return time.perf_counter() - start, response


async def _measure(url: str, bogus: int) -> dict[str, Any]:
    base = url + API
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        body = {"username": "bench_owner", "password": PASSWORD, "birthdate": "1990-01-01", "region": "us"}
        (await http.post("/accounts", json=body)).raise_for_status()

        async def real_login() -> tuple[float, httpx.Response]:
            return await _timed(
                http.post("/sessions", json={"username": "bench_owner", "password": PASSWORD})
            )

        quiet_login, login = await real_login()
        token = login.json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        quiet_token = [(await _timed(http.get("/account", headers=auth)))[0] for _ in range(20)]

        guessers = [
            httpx.AsyncClient(
                base_url=base, timeout=120, transport=httpx.AsyncHTTPTransport(local_address=_address(i))
            )
            for i in range(bogus)
        ]
        done = asyncio.Event()
        token_samples: list[float] = []

        async def token_requests() -> None:
            while not done.is_set():
                elapsed, response = await _timed(http.get("/account", headers=auth))
                if response.status_code == 200:
                    token_samples.append(elapsed)
                await asyncio.sleep(0.025)

        async def guess(i: int) -> tuple[float, int]:
            elapsed, response = await _timed(
                guessers[i].post("/sessions", json={"username": f"nobody_{i}", "password": "a wrong guess"})
            )
            return elapsed, response.status_code

        async def late_real_login() -> tuple[float, httpx.Response]:
            await asyncio.sleep(0.05)
            return await real_login()

        started = time.perf_counter()
        watcher = asyncio.create_task(token_requests())
        guesses_task = asyncio.gather(*(guess(i) for i in range(bogus)))
        (real_elapsed, real), guesses = await asyncio.gather(late_real_login(), guesses_task)
        burst_s = time.perf_counter() - started
        done.set()
        await watcher
        for client in guessers:
            await client.aclose()
    statuses = Counter(status for _, status in guesses)
    refused = [elapsed for elapsed, status in guesses if status == 503]
    return {
        "bogus_sign_ins": bogus,
        "answers": {str(k): v for k, v in sorted(statuses.items())},
        "burst_ms": _ms(burst_s),
        "refused_503_max_ms": _ms(max(refused)) if refused else None,
        "real_sign_in": {"status": real.status_code, "ms": _ms(real_elapsed), "quiet_ms": _ms(quiet_login)},
        "token_requests": {
            "during_burst": len(token_samples),
            "p50_ms": _ms(statistics.median(token_samples)) if token_samples else None,
            "max_ms": _ms(max(token_samples)) if token_samples else None,
            "quiet_p50_ms": _ms(statistics.median(quiet_token)),
        },
    }


def signin(
    bogus: Annotated[int, typer.Option(help="Wrong sign-ins sent at once.")] = 40,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures here.")] = None,
) -> None:
    """A burst of bogus sign-ins at full argon2id cost: how it is answered, and what it does to a
    real sign-in and to token-authenticated requests meanwhile."""
    # Full production argon2 cost: whatever the caller's environment lowers is dropped.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYHOLD_ARGON2_")}
    with OwnServer(None, env) as server:
        server.start()
        result = asyncio.run(_measure(server.url, bogus))
    output = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    console.print_json(output)
    if json_out is not None:
        json_out.write_text(output + "\n")
