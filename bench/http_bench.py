"""Requests per second of one FastAPI endpoint: open, behind ``require_scope``, behind PyJWT.

    python bench/http_bench.py            # full run, about 70 s
    python bench/http_bench.py --quick    # about 20 s

Every variant is the same async endpoint in its own uvicorn process (one
worker, h11, asyncio loop) on 127.0.0.1; all of them run at once and are
measured in interleaved rounds by the same load tool: an asyncio client in
this process holding keep-alive connections, sending byte-identical requests
(the same ``Authorization: Bearer`` header everywhere, the open endpoint
ignores it) and counting 200 answers. Each row is the median over the rounds.
Needs the ``fastapi`` extra and uvicorn. Keys live in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request  # module level: FastAPI resolves the string annotations here

HOST = "127.0.0.1"
SCOPE = "read:orders"
VARIANT_ENV = "HTTP_BENCH_VARIANT"

# --- the server side: one app per variant, built in the uvicorn process -------


def _pyjwt_dependency() -> Callable[..., Any]:
    """What a careful hand-written dependency does: PyJWT decode and a scope check per request."""
    import jwt
    from fastapi import Header, HTTPException

    jwk = json.loads(Path(os.environ["AGENTSUDO_JWKS"]).read_text())["keys"][0]
    key = jwt.PyJWK.from_dict(jwk).key
    required = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti", "scope"]

    async def claims(authorization: str = Header()) -> dict[str, Any]:
        scheme, _, token = authorization.partition(" ")
        try:
            decoded: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience="agentsudo",
                issuer="agentsudo",
                options={"require": required},
            )
        except jwt.PyJWTError:
            raise HTTPException(401, "invalid token") from None
        if scheme.lower() != "bearer" or SCOPE not in decoded["scope"].split(" "):
            raise HTTPException(403, "insufficient scope")
        return decoded

    return claims


def app_from_env() -> Any:
    """The app for ``$HTTP_BENCH_VARIANT`` (a uvicorn ``--factory``)."""
    from fastapi import Depends, FastAPI

    from agentsudo_tokens import sudo
    from agentsudo_tokens.integrations.fastapi import AgentSudoMiddleware, require_scope

    variant = os.environ[VARIANT_ENV]
    app = FastAPI(openapi_url=None)
    body = {"order_id": "order_1", "total": 50}

    if variant == "open":

        @app.get("/orders")
        async def open_orders() -> dict[str, Any]:
            return body

    elif variant == "empty_dependency":

        async def nothing(request: Request) -> None:
            return None

        @app.get("/orders")
        async def dep_orders(_: None = Depends(nothing)) -> dict[str, Any]:  # noqa: B008
            return body

    elif variant == "pyjwt":
        claims = _pyjwt_dependency()

        @app.get("/orders")
        async def pyjwt_orders(_: dict[str, Any] = Depends(claims)) -> dict[str, Any]:  # noqa: B008
            return body

    elif variant in ("require_scope", "fresh_tokens", "in_thread", "jwks_url"):
        guard = require_scope(SCOPE, in_thread=True if variant == "in_thread" else None)

        @app.get("/orders")
        async def scoped_orders(_: Any = Depends(guard)) -> dict[str, Any]:  # noqa: B008
            return body

    elif variant == "middleware":
        app.add_middleware(AgentSudoMiddleware)

        @sudo(scope=SCOPE)
        def read_order() -> dict[str, Any]:
            return body

        @app.get("/orders")
        async def sudo_orders(_: Any = Depends(require_scope(SCOPE))) -> dict[str, Any]:  # noqa: B008
            return read_order()  # and @sudo checks the caller's session in the handler

    else:
        raise SystemExit(f"unknown variant {variant!r}")
    return app


# --- the load tool --------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    fresh_tokens: bool = False
    jwks_url: bool = False


VARIANTS = (
    Variant("open", "open endpoint (no auth)"),
    Variant("empty_dependency", "an empty async dependency (FastAPI's share)"),
    Variant("require_scope", "require_scope"),
    Variant("middleware", "middleware + require_scope + @sudo"),
    Variant("jwks_url", "require_scope, keys from a JWKS URL", jwks_url=True),
    Variant("in_thread", "require_scope, verified in a thread"),
    Variant("pyjwt", "plain PyJWT decode per request"),
    Variant("fresh_tokens", "require_scope, a new token each request", fresh_tokens=True),
)


@dataclass(frozen=True)
class Plan:
    rounds: int
    seconds: float
    warmup: float
    connections: int
    tokens: int  # distinct tokens for the fresh-token variant


FULL = Plan(rounds=8, seconds=1.0, warmup=0.5, connections=32, tokens=30000)
QUICK = Plan(rounds=3, seconds=0.6, warmup=0.3, connections=32, tokens=8000)


def _request(port: int, token: str) -> bytes:
    return (
        f"GET /orders HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: application/json\r\n\r\n"
    ).encode()


async def _connection(
    port: int, requests: Iterator[bytes], stop_at: float, latencies: list[float]
) -> int:
    """Send requests one after another on one keep-alive connection; count 200 answers."""
    reader, writer = await asyncio.open_connection(HOST, port)
    errors = 0
    clock = time.perf_counter
    try:
        while clock() < stop_at:
            started = clock()
            writer.write(next(requests))
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            if head[9:12] != b"200":
                errors += 1
            latencies.append(clock() - started)
    finally:
        writer.close()
    return errors


@dataclass(frozen=True)
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float


async def _load(port: int, requests: Iterator[bytes], seconds: float, connections: int) -> Sample:
    latencies: list[float] = []
    started = time.perf_counter()
    stop_at = started + seconds
    errors = await asyncio.gather(
        *(_connection(port, requests, stop_at, latencies) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    if sum(errors):
        raise RuntimeError(f"port {port}: {sum(errors)} answers were not 200")
    latencies.sort()
    return Sample(
        len(latencies) / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[int(len(latencies) * 0.99)] * 1000,
    )


def _cycle(items: list[bytes]) -> Iterator[bytes]:
    while True:
        yield from items


# --- processes --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _wait_until_up(port: int, process: subprocess.Popen[bytes], headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    request = urllib.request.Request(f"http://{HOST}:{port}/orders", headers=headers)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(request, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not come up")


@contextmanager
def _server(variant: str, port: int, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    args = [sys.executable, "-m", "uvicorn", "http_bench:app_from_env", "--factory"]
    args += ["--app-dir", str(Path(__file__).resolve().parent), "--host", HOST]
    args += ["--port", str(port), "--http", "h11", "--loop", "asyncio"]
    args += ["--no-access-log", "--log-level", "warning"]
    process = subprocess.Popen(args, env=dict(env, **{VARIANT_ENV: variant}))
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextmanager
def _serving(server: Any) -> Iterator[None]:
    """Run an ``http.server`` in a thread for the duration of the block."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        thread.join(timeout=5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run, about 20 s")
    plan = QUICK if parser.parse_args().quick else FULL

    from agentsudo_tokens import Issuer, KeyDirectory
    from agentsudo_tokens.tokens.jwks_remote import serve_jwks

    with tempfile.TemporaryDirectory(prefix="agentsudo-http-bench-") as work, ExitStack() as stack:
        keys = KeyDirectory.init(Path(work) / "keys")
        issuer = Issuer(keys.signing_key())
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSUDO_")}
        env["AGENTSUDO_JWKS"] = str(keys.jwks_path)
        token = issuer.issue("BenchBot", [SCOPE], ttl=3600).token
        jwks = serve_jwks(keys.public_keys, HOST, 0)
        stack.callback(jwks.server_close)
        stack.enter_context(_serving(jwks))
        url_env = dict(env, AGENTSUDO_JWKS=f"http://{HOST}:{jwks.server_address[1]}/jwks.json")
        ports = {v.key: _free_port() for v in VARIANTS}
        servers = {
            v.key: stack.enter_context(_server(v.key, ports[v.key], url_env if v.jwks_url else env))
            for v in VARIANTS
        }
        for v in VARIANTS:
            _wait_until_up(ports[v.key], servers[v.key], {"Authorization": f"Bearer {token}"})
        fresh = [issuer.issue("BenchBot", [SCOPE], ttl=3600).token for _ in range(plan.tokens)]
        requests = {
            v.key: _cycle(
                [_request(ports[v.key], t) for t in fresh]
                if v.fresh_tokens
                else [_request(ports[v.key], token)]
            )
            for v in VARIANTS
        }
        samples: dict[str, list[Sample]] = {v.key: [] for v in VARIANTS}
        for v in VARIANTS:
            asyncio.run(_load(ports[v.key], requests[v.key], plan.warmup, plan.connections))
        for _ in range(plan.rounds):
            for v in VARIANTS:
                sample = asyncio.run(
                    _load(ports[v.key], requests[v.key], plan.seconds, plan.connections)
                )
                samples[v.key].append(sample)
        _report(plan, samples, fresh_used=plan.tokens)
    return 0


def _report(plan: Plan, samples: dict[str, list[Sample]], fresh_used: int) -> None:
    import fastapi
    import jwt
    import uvicorn

    def median(key: str, field: str) -> float:
        return statistics.median(getattr(s, field) for s in samples[key])

    base = median("open", "rps")
    print(
        f"HTTP: one uvicorn worker per variant (h11, asyncio) on {HOST}; load: "
        f"{plan.connections} keep-alive connections from one asyncio client, "
        f"{plan.rounds} interleaved rounds x {plan.seconds:g} s, medians"
    )
    print(f"{'variant':<42} {'req/s':>8} {'vs open':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for v in VARIANTS:
        rps = median(v.key, "rps")
        print(
            f"{v.label:<42} {rps:>8.0f} {rps / base:>7.0%} "
            f"{median(v.key, 'p50_ms'):>7.2f} {median(v.key, 'p99_ms'):>7.2f}"
        )
    print(
        f"notes: same request bytes for every row but the last, which cycles through "
        f"{fresh_used} distinct tokens so every verification misses the cache; PyJWT checks "
        "signature, exp/nbf/iat, iss, aud and the scope claim with an Ed25519 key; "
        f"Python {platform.python_version()}, fastapi {fastapi.__version__}, "
        f"uvicorn {uvicorn.__version__}, PyJWT {jwt.__version__}, {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    sys.exit(main())
